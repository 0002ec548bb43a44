"""`dataplane bench` arguments: choosing dataplanes, quick settings, user errors."""

from __future__ import annotations

import argparse

import pytest

from bench import command, ladder
from dataplane.errors import CommandError


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    command.configure(p)
    return p.parse_args(list(argv))


def test_help_line_and_ladder_order():
    assert "\n" not in command.HELP
    names = [dp.name for dp in ladder.LADDER]
    assert names[:2] == ["host-gw", "kernel-vxlan"]
    assert {"udp/c", "vxlan/c", "udp/python", "vxlan/python"} <= set(names)
    assert ladder.BY_NAME["vxlan/python"].fastpath == "python"
    assert [dp.overhead for dp in ladder.LADDER[:4]] == [0, 50, 28, 50]


def test_select_keeps_ladder_order_and_adds_the_baseline():
    assert [dp.name for dp in ladder.select(["udp/c", "host-gw"])] == [
        "host-gw", "kernel-vxlan", "udp/c"]
    with pytest.raises(KeyError):
        ladder.select(["nope"])


def test_unknown_dataplane_is_a_user_error():
    with pytest.raises(CommandError, match="unknown dataplane 'nope'"):
        command.choose(parse("--dataplanes", "nope"))


def test_quick_settings_and_sizes():
    dps = ladder.select(["host-gw"])
    s = command.settings_from(parse("--quick"), dps)
    assert s.duration == 1 and s.udp_payloads == (64, 1422)     # 1500 - 50 (VXLAN) - 28
    s = command.settings_from(parse("--duration", "3", "--udp-sizes", "64,200"), dps)
    assert s.duration == 3 and s.udp_payloads == (64, 200)
    with pytest.raises(CommandError, match="at most 1422"):
        command.settings_from(parse("--udp-sizes", "64,1472"), dps)


@pytest.mark.parametrize("argv", [["--duration", "0.5"], ["--rounds", "0"],
                                  ["--udp-sizes", "8"], ["--streams", "x"]])
def test_bad_numbers_are_rejected(argv, capsys):
    with pytest.raises(SystemExit):
        parse(*argv)


def test_command_line_spells_out_the_run():
    args = parse("--quick", "--no-pin")
    dps = ladder.select(["host-gw"])
    s = command.settings_from(args, dps)
    line = command.command_line(args, 1, s, dps)
    assert line == ("dataplane bench --dataplanes host-gw,kernel-vxlan --rounds 1 --duration 1 "
                    "--streams 4 --udp-sizes 64,1422 --latency-rate 2000 --capacity-trials 2 "
                    "--quick --no-pin")
    # and it parses back to the same settings
    again = parse(*line.split()[2:])
    assert command.settings_from(again, dps) == s


def test_the_command_module_stays_light():
    """cli.py imports every command module, so every `dataplane run` daemon imports this
    one: matplotlib (40 MB of RSS) must wait until plots are drawn."""
    import subprocess
    import sys

    code = ("import sys, bench.command; "
            "print(sorted(m for m in ('matplotlib', 'numpy', 'bench.plots') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_rungs_daemon_flags_parse():
    # What the lab starts for each daemon rung, through the daemon's own parser: a flag the
    # daemon renamed or dropped fails here, without root (the quick run takes one rung a kind).
    from dataplane.cli import apply_env, build_parser

    rungs = [dp for dp in ladder.LADDER if dp.runs_daemon]
    assert {"udp/c", "vxlan/c+offload/read", "vxlan/c+offload+busypoll"} <= {
        dp.name for dp in rungs}
    for dp in rungs:
        argv = ["run", "--store-dir", "/nonexistent", "--public-ip", "10.99.0.1", "--subnet",
                "10.244.1.0/24", "--fastpath", dp.fastpath, *dp.daemon_args]
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        apply_env(parser, args, argv, {})
        assert args.fastpath == dp.fastpath, dp.name
    with pytest.raises(SystemExit):                     # and the check can fail
        build_parser(["run"]).parse_args(["run", "--no-such-flag"])


def test_the_default_selection_leaves_out_what_cannot_run_with_the_reason(monkeypatch):
    from bench import topology

    monkeypatch.setattr(topology, "available",
                        lambda dp: "fastd not installed" if dp.name == "fastd" else None)
    chosen, skipped = command.choose(parse())
    assert "fastd" not in [dp.name for dp in chosen]
    assert skipped == [{"name": "fastd", "reason": "fastd not installed"}]
    with pytest.raises(CommandError, match="fastd cannot run in this build: fastd not"):
        command.choose(parse("--dataplanes", "fastd"))
