"""The command line: every command listed, its help in step with its module, and only the
chosen command's module imported (the daemon stays small)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from dataplane.cli import COMMANDS, main
from tests import netns


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_line_matches_module(name):
    module_name, help_ = COMMANDS[name]
    assert help_ == importlib.import_module(module_name).HELP


def test_running_one_command_imports_no_other():
    code = ("import sys; from dataplane.cli import build_parser; build_parser(['explain']); "
            "print(sorted(m for m in sys.modules if m.startswith(('bench', 'dataplane.lab', "
            "'dataplane.store', 'dataplane.daemon', 'matplotlib', 'pyroute2'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=netns.env(), check=True).stdout
    assert out.strip() == "[]"


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
