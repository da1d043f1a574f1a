"""The `usermirrorer` command: every subcommand is listed and `--help` works for each."""

from __future__ import annotations

import subprocess
import sys

import pytest

from usermirrorer.cli import COMMANDS, build_parser


def test_help_lists_every_subcommand():
    text = build_parser().format_help()
    for name, _ in COMMANDS:
        assert name in text


@pytest.mark.parametrize("name", [name for name, _ in COMMANDS])
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([name, "--help"])
    assert exit_.value.code == 0
    assert name in capsys.readouterr().out


def test_help_does_not_import_torch():
    # nor the scale-out engines: ray, and the scoring server's web stack
    heavy = ("torch", "ray", "starlette", "uvicorn")
    code = ("import sys; from usermirrorer.cli import build_parser; build_parser(); "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
