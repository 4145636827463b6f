"""``cdr-pipeline --help`` and ``--version`` (issue 11 #7): every command's help is
written for users (no references to internal documents, no reStructuredText markup)
and ends with the exit codes that command can return, from one table."""

from __future__ import annotations

import argparse
import importlib.metadata
import re

import pytest

from pipeline.cli import (
    COMMAND_EXIT_CODES,
    EXIT_CODE_MEANINGS,
    EXIT_UNREADABLE_INPUT,
    build_parser,
    main,
)


def _commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                found.append((*prefix, name))
                found += _commands(command, (*prefix, name))
    return found


COMMANDS = _commands(build_parser())


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--help"])
    assert stopped.value.code == 0
    return capsys.readouterr().out


def test_every_command_is_covered() -> None:
    assert ("rate",) in COMMANDS
    assert ("dead-letters", "replay") in COMMANDS
    assert len(COMMANDS) >= 14
    assert set(COMMAND_EXIT_CODES) <= {" ".join(c) for c in COMMANDS}


@pytest.mark.parametrize("command", [(), *COMMANDS], ids=lambda c: " ".join(c) or "top")
def test_help_is_for_users_and_lists_exit_codes(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    text = _help(list(command), capsys)
    for internal in ("spec section", "`", ":class:", ":func:", ":data:", "``"):
        assert internal not in text, f"{internal!r} in the help of {command}"
    assert re.search(r"\bsection [0-9]", text) is None
    codes = text.split("\nexit codes:\n", 1)
    assert len(codes) == 2, f"no exit codes in the help of {command}"
    listed = [int(m) for m in re.findall(r"^  ([0-9]+) ", codes[1], re.MULTILINE)]
    assert listed[:3] == [0, 1, 2]
    assert listed[-1] == 130
    assert set(listed) <= set(EXIT_CODE_MEANINGS)
    assert (EXIT_UNREADABLE_INPUT in listed) == (command in ((), ("rate",)))
    for code in listed:
        first_words = " ".join(EXIT_CODE_MEANINGS[code].split()[:3])
        assert first_words in " ".join(codes[1].split())


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out == f"cdr-pipeline {importlib.metadata.version('cdr-pipeline')}"
