"""--busy-poll on fakes, no root and no timing: a scripted forwarder says how many packets each
drain moves, a fake clock advances a fixed step per reading. The readiness callbacks must keep
polling both directions while packets keep coming, go back to the loop after one window that
found nothing, and with 0 never poll beyond the wakeup. Plus the flag's parsing."""

from __future__ import annotations

import argparse
import socket

import pytest

from dataplane.cli import apply_env, build_parser
from dataplane.daemon import pump
from dataplane.daemon.pump import BUSY_POLL_MAX, Pump

STEP_NS = 1_000          # the fake clock advances 1 us per reading


class FakeClock:
    def __init__(self) -> None:
        self.now = 0
        self.readings = 0

    def __call__(self) -> int:
        self.readings += 1
        self.now += STEP_NS
        return self.now


class ScriptedForwarder:
    """Each drain pops the packets it moves from its direction's script (0 once empty) and
    logs (direction, moved)."""

    def __init__(self, tun: list[int], udp: list[int]) -> None:
        self.script = {"tun": list(tun), "udp": list(udp)}
        self.calls: list[tuple[str, int]] = []

    def _drain(self, which: str) -> int:
        moved = self.script[which].pop(0) if self.script[which] else 0
        self.calls.append((which, moved))
        return moved

    def tun_wait_fd(self, tun_fd: int) -> int:
        return tun_fd                   # plain reads: the loop waits on the TUN itself

    def drain_tun(self, tun_fd: int, sock: socket.socket, budget: int) -> int:
        return self._drain("tun")

    def drain_udp(self, sock: socket.socket, tun_fd: int, budget: int) -> int:
        return self._drain("udp")


class FakeLoop:
    def __init__(self) -> None:
        self.soon: list = []

    def call_soon(self, fn) -> None:
        self.soon.append(fn)


@pytest.fixture
def sock():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        yield s


class Yields:
    """Stands in for sched_yield: logs the point in the forwarder's calls where it came."""

    def __init__(self, fwd: ScriptedForwarder) -> None:
        self.fwd = fwd
        self.at: list[int] = []

    def __call__(self) -> None:
        self.at.append(len(self.fwd.calls))


def make(sock, fwd: ScriptedForwarder, usec: int, clock: FakeClock | None = None) -> Pump:
    path = Pump(fwd, 99, sock, busy_poll_us=usec, clock=clock or FakeClock(),
                yield_cpu=Yields(fwd))
    path._loop = FakeLoop()
    return path


def test_off_never_polls_beyond_the_wakeup(sock):
    fwd = ScriptedForwarder(tun=[5, 5, 5], udp=[5, 5, 5])
    path = make(sock, fwd, 0)
    path._on_tun()
    path._on_udp()
    assert fwd.calls == [("tun", 5), ("udp", 5)]           # one drain per wakeup, no more
    assert path.poll_rounds == path.poll_hits == 0
    assert path._loop.soon == []


def test_polls_both_directions_while_packets_keep_coming_then_one_empty_window(sock):
    # 10 us window; packets on the wire side for 6 rounds, on the TUN for the first 3.
    fwd = ScriptedForwarder(tun=[1, 2, 0, 3], udp=[4, 4, 4, 4, 4, 4])
    clock = FakeClock()
    path = make(sock, fwd, 10, clock)
    path._on_tun()
    calls = fwd.calls
    assert calls[0] == ("tun", 1)                           # the wakeup's own drain
    rounds = [calls[i:i + 2] for i in range(1, len(calls), 2)]
    assert all([c[0] for c in r] == ["tun", "udp"] for r in rounds)   # both directions
    busy = [r for r in rounds if r[0][1] or r[1][1]]
    idle = rounds[len(busy):]
    assert len(busy) == 6 and all(not (r[0][1] or r[1][1]) for r in idle)
    # After the last round that moved packets, it polls one window of quiet and no more:
    # each round reads the clock once (1 us here), so a 10 us window is 10 empty rounds.
    assert len(idle) == 10
    assert path.poll_rounds == 16 and path.poll_hits == 6
    assert path._loop.soon == []                            # back to the loop, to sleep


def test_an_empty_round_yields_the_cpu_and_a_busy_round_does_not(sock):
    # Rounds 1-2 move packets, round 3 finds nothing, round 4 moves again, then quiet.
    fwd = ScriptedForwarder(tun=[1, 1, 1, 0, 1], udp=[0, 0, 0, 0])
    path = make(sock, fwd, 5)
    path._on_tun()
    yields = path._yield_cpu.at
    # The calls are: the wakeup's drain, then (tun, udp) per round; a yield after round k
    # comes when 1 + 2k calls are logged.
    empty = [k for k in range(1, path.poll_rounds + 1)
             if fwd.calls[2 * k - 1][1] == fwd.calls[2 * k][1] == 0]
    assert 3 in empty and 1 not in empty and 4 not in empty
    assert yields == [1 + 2 * k for k in empty]
    assert len(yields) == path.poll_rounds - path.poll_hits


def test_off_never_yields(sock):
    fwd = ScriptedForwarder(tun=[0, 3], udp=[2])
    path = make(sock, fwd, 0)
    path._on_tun()
    path._on_udp()
    path._on_tun()
    assert path._yield_cpu.at == []


def test_a_wakeup_that_found_nothing_does_not_poll(sock):
    fwd = ScriptedForwarder(tun=[0], udp=[7, 7])
    path = make(sock, fwd, 50)
    path._on_tun()                                          # spurious wakeup
    assert fwd.calls == [("tun", 0)] and path.poll_rounds == 0


def test_the_window_is_the_flag_in_microseconds(sock):
    for usec in (1, 25, 200):
        fwd = ScriptedForwarder(tun=[1], udp=[])
        path = make(sock, fwd, usec)
        path._on_tun()
        assert path.poll_rounds == usec and path.poll_hits == 0


def test_a_long_burst_gives_the_loop_a_turn_and_resumes(sock):
    # Packets in every round: after BUSY_POLL_SLICE_NS of polling the callback returns with a
    # continuation scheduled, so the loop runs its timers and the control plane in between.
    slice_rounds = pump.BUSY_POLL_SLICE_NS // STEP_NS
    fwd = ScriptedForwarder(tun=[1] * (3 * slice_rounds), udp=[])
    path = make(sock, fwd, 100)
    path._on_tun()
    assert path._loop.soon == [path._resume_poll]
    assert slice_rounds - 2 <= path.poll_rounds <= slice_rounds
    first = path.poll_rounds
    path._loop.soon.pop()()                                 # the loop runs the continuation
    assert path.poll_rounds > first and path._loop.soon == [path._resume_poll]
    path._loop = None                                       # stopped meanwhile
    before = len(fwd.calls)
    path._resume_poll()
    assert len(fwd.calls) == before                         # a stopped path polls nothing


def test_drain_errors_are_logged_and_polling_goes_on(sock, caplog):
    class Failing(ScriptedForwarder):
        def drain_udp(self, s, fd, budget):
            self.calls.append(("udp", -1))
            raise OSError(5, "Input/output error")
    fwd = Failing(tun=[2, 2], udp=[])
    path = make(sock, fwd, 3)
    path._on_tun()
    assert path.poll_hits == 1 and path.poll_rounds == 4
    assert "receiving datagrams" in caplog.text


def parse(argv: list[str], environ: dict[str, str] | None = None) -> argparse.Namespace:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    apply_env(parser, args, argv, environ or {})
    return args


def test_flag_default_off_and_from_the_environment():
    assert parse(["run"]).busy_poll == 0
    assert parse(["run", "--busy-poll", "50"]).busy_poll == 50
    assert parse(["run"], {"FLANNELD_BUSY_POLL": "200"}).busy_poll == 200
    assert parse(["run", "--busy-poll", str(BUSY_POLL_MAX)]).busy_poll == BUSY_POLL_MAX


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", str(BUSY_POLL_MAX + 1), ""])
def test_bad_values_are_usage_errors_naming_the_flag(value, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(["run", "--busy-poll", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--busy-poll" in err and "microseconds" in err and "Traceback" not in err


def test_so_busy_poll_refusal_is_not_an_error(sock, caplog, monkeypatch):
    caplog.set_level("DEBUG", logger="dataplane.daemon.pump")

    class Refusing:
        def setsockopt(self, *args):
            raise PermissionError(1, "Operation not permitted")
    pump.socket_busy_poll([Refusing(), Refusing()], 50)      # type: ignore[list-item]
    lines = [r for r in caplog.records if "busy-poll" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelname == "DEBUG"
    assert "SO_BUSY_POLL" in lines[0].getMessage()
