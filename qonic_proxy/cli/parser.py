"""The argparse parser, built from the command table; `run` is inserted when no verb is named.

The parser never calls `sys.exit` itself: --help, --version and usage errors end in `ParserExit`
with the ExitStatus to return, so the program decides how the process ends. `--config FILE`
may come before the verb too (it is moved behind it); a word that is no verb is refused with the
nearest verb, instead of being taken as an argument of `run`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from qonic_proxy import __version__
from qonic_proxy.cli.arguments import config_option, log_level_option
from qonic_proxy.cli.commands import BY_NAME, COMMANDS, DEFAULT_VERB, Command
from qonic_proxy.errors import ExitStatus, UsageError

DESCRIPTION = ("Log in to Qonic once; then any HTTP client can call the API through this local "
               "proxy without OAuth code.")
EPILOG = ("With no verb, `run` is meant. `qonic-proxy help VERB` (or `qonic-proxy VERB --help`) "
          "shows a verb's options. Exit codes: 0 ok, 1 failure, 2 usage error, 78 configuration "
          "error.")
TOP_LEVEL_OPTIONS = ("-h", "--help", "--version")
CONFIG = "--config"


class ParserExit(Exception):
    """argparse finished early (help or version shown, or a usage error reported)."""

    def __init__(self, status: ExitStatus) -> None:
        super().__init__(status)
        self.status = status


def terminal_columns() -> int:
    """shutil.get_terminal_size's columns: $COLUMNS, else the terminal's, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class Formatter(argparse.HelpFormatter):
    """argparse's help formatter, told the width as argparse finds it, without shutil.

    argparse makes a formatter for every option it adds, and its default one imports shutil for
    the width; shutil imports bz2 and lzma (2 ms of a `token` that shows no help).
    """

    def __init__(self, prog: str, *args: Any, **kwargs: Any) -> None:
        if not args:
            kwargs.setdefault("width", terminal_columns() - 2)
        super().__init__(prog, *args, **kwargs)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises ParserExit instead of exiting (subparsers inherit it)."""

    verb_parsers: dict[str, Parser]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise ParserExit(ExitStatus(status))

    def parse_verb(self, argv: Sequence[str]) -> argparse.Namespace:
        """parse_args, with an unknown option reported by its verb's parser (and a near miss)."""
        args, extra = self.parse_known_args(argv)
        if extra:
            verb = self.verb_parsers.get(args.verb or "", self)
            verb.error(f"unrecognized arguments: {' '.join(extra)}"
                       f"{did_you_mean(extra[0], verb.option_names())}")
        return args

    def option_names(self) -> list[str]:
        return [name for action in self._actions for name in action.option_strings]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    import difflib  # only for a typo

    close = difflib.get_close_matches(word.split("=", 1)[0], list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def build_parser(commands: Sequence[Command] = COMMANDS, only: str | None = None) -> Parser:
    """The parser of every verb, or with `only` of that verb alone (what a run that names its
    verb needs: building the other verbs' parsers is work it would throw away)."""
    if only is not None:
        commands = [command for command in commands if command.name == only]
    parser = Parser(prog="qonic-proxy", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"qonic-proxy {__version__}",
                        help="print the version and exit")
    # prog given: argparse would otherwise build a help formatter and a usage line to find it
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", prog=parser.prog)
    parser.verb_parsers = {}
    for command in commands:
        sub = subparsers.add_parser(command.name, help=command.help,
                                    description=command.help,
                                    epilog=command.epilog)
        if command.handler is not None:
            config_option(sub, shown=command.uses_config)
            log_level_option(sub, command.log_level)
        command.arguments(sub)
        parser.verb_parsers[command.name] = sub
    return parser


def unknown_command(word: str) -> UsageError:
    names = [command.name for command in COMMANDS]
    return UsageError(f"unknown command {word!r}{did_you_mean(word, names)}; the commands are "
                      f"{', '.join(names)} (`qonic-proxy help` explains them)")


def with_default_verb(argv: Sequence[str]) -> list[str]:
    """`argv` with its verb first: `run` unless one is named, a leading `--config FILE` behind it.

    Raises UsageError for a first word that is no verb (`qonic-proxy stauts`).
    """
    rest = list(argv)
    moved: list[str] = []
    while rest and (rest[0] == CONFIG or rest[0].startswith(CONFIG + "=")):
        take = 1 if "=" in rest[0] else 2
        moved, rest = moved + rest[:take], rest[take:]
    if rest and rest[0] in TOP_LEVEL_OPTIONS and not moved:
        return rest
    if rest and rest[0] in BY_NAME:
        return [rest[0], *moved, *rest[1:]]
    if rest and not rest[0].startswith("-"):
        raise unknown_command(rest[0])
    return [DEFAULT_VERB, *moved, *rest]
