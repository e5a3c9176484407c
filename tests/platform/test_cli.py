"""The command table is the CLI: every row is a command with its help and exit codes in
``tunefleet --help``, and a row is all a new command needs."""

from __future__ import annotations

import argparse
import re

import pytest

from support.cli import run_cli
from tunefleet.platform import cli
from tunefleet.platform.cli import COMMAND_TABLE, COMMON_EXITS, Command, arg


def test_help_lists_every_command_with_its_summary_and_exit_codes() -> None:
    shown = run_cli("--help", timeout=120)
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())  # argparse wraps long lines
    for command in COMMAND_TABLE:
        assert f"{command.name} {' '.join(command.summary.split())}" in text, command.name
        if command.exits:
            assert f"{command.name} {' '.join(command.exits.split())}" in text, command.name
    assert COMMON_EXITS in text


def test_a_new_command_is_one_function_and_one_row(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def cmd_echo(args: argparse.Namespace) -> int:
        print(f"{args.word} x{args.times}")
        return 3

    row = Command(
        "echo",
        cmd_echo,
        "print a word",
        args=(arg("word"), arg("--times", type=int, default=1, help="how often")),
        exits="3 always",
    )
    table = (*COMMAND_TABLE, row)
    monkeypatch.setattr(cli, "COMMAND_TABLE", table)
    monkeypatch.setattr(cli, "COMMANDS", cli.index_commands(table))
    assert cli.main(["echo", "hi", "--times", "2"]) == 3
    assert capsys.readouterr().out == "hi x2\n"
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert re.search(r"^  echo +3 always$", capsys.readouterr().out, re.MULTILINE)


def test_a_name_twice_in_the_table_is_refused() -> None:
    with pytest.raises(ValueError, match="'status' is in the table twice"):
        cli.index_commands((*COMMAND_TABLE, Command("status", lambda args: 0, "again")))
