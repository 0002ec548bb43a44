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
                    "--streams 4 --udp-sizes 64,1422 --latency-rate 2000 --capacity-trials 3 "
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
