"""The argparse parser, built from the command table; `run` is inserted when no verb is named.

The parser never calls `sys.exit` itself: --help, --version and usage errors end in `ParserExit`
with the ExitStatus to return, so the program decides how the process ends.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from qonic_proxy import __version__
from qonic_proxy.cli.arguments import config_option
from qonic_proxy.cli.commands import BY_NAME, COMMANDS, DEFAULT_VERB, Command
from qonic_proxy.errors import ExitStatus

DESCRIPTION = ("Log in to Qonic once; then any HTTP client can call the API through this local "
               "proxy without OAuth code.")
TOP_LEVEL_OPTIONS = ("-h", "--help", "--version")


class ParserExit(Exception):
    """argparse finished early (help or version shown, or a usage error reported)."""

    def __init__(self, status: ExitStatus) -> None:
        super().__init__(status)
        self.status = status


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises ParserExit instead of exiting (subparsers inherit it)."""

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise ParserExit(ExitStatus(status))


def build_parser(commands: Sequence[Command] = COMMANDS) -> Parser:
    parser = Parser(prog="qonic-proxy", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"qonic-proxy {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for command in commands:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        config_option(sub)
        command.arguments(sub)
    return parser


def with_default_verb(argv: Sequence[str]) -> list[str]:
    """`argv` with `run` in front unless it names a verb or a top-level option."""
    if argv and (argv[0] in BY_NAME or argv[0] in TOP_LEVEL_OPTIONS):
        return list(argv)
    return [DEFAULT_VERB, *argv]
