"""The `qonic-proxy` program: parse, dispatch to the verb, turn every failure into an ExitStatus.

The verbs are listed once, in `commands`; `parser` builds argparse from that table and `verbs`
holds what each one does. Here only the rules every verb shares: `run` is the default verb,
a user error is one line on stderr with its exit status, a bug is one line too.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Sequence

from qonic_proxy.cli.commands import BY_NAME
from qonic_proxy.cli.environment import Environment
from qonic_proxy.cli.parser import ParserExit, build_parser, with_default_verb
from qonic_proxy.errors import ExitStatus, QonicProxyError, UsageError
from qonic_proxy.logs import configure_later, logger


def parse(argv: Sequence[str], env: Environment) -> argparse.Namespace:
    """Parse with argparse's help, version and usage messages on the Environment's streams."""
    with contextlib.redirect_stdout(env.stdout), contextlib.redirect_stderr(env.stderr):
        verb = argv[0] if argv and argv[0] in BY_NAME else None
        return build_parser(only=verb).parse_verb(argv)


DEBUG_HINT = "run the same command again with --log-level debug to see where"


def run_verb(work: Callable[[], int], env: Environment, debug_hint: str | None = DEBUG_HINT,
             ) -> int:
    """Run one verb; map what it raises to its exit status, always as a single line.

    `debug_hint` tells how to see a bug's traceback, for verbs that take --log-level.
    """
    try:
        return work()
    except QonicProxyError as err:
        env.error(str(err))
        return err.exit_code
    except KeyboardInterrupt:
        env.error("interrupted")
        return ExitStatus.INTERRUPTED
    except Exception as err:  # a bug: still one line, and a way to see more
        logger("qonic_proxy").debug("internal error", exc_info=True)
        hint = f" ({debug_hint})" if debug_hint else ""
        env.error(f"internal error ({type(err).__name__}: {err}); please report it{hint}")
        return ExitStatus.FAILURE


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    env = env or Environment()
    try:
        argv = with_default_verb(sys.argv[1:] if argv is None else argv)
    except UsageError as err:
        env.error(str(err))
        return err.exit_code
    command = BY_NAME.get(argv[0])
    if command is not None and command.raw_handler is not None:
        raw_handler, rest = command.raw_handler, argv[1:]
        return run_verb(lambda: raw_handler(rest, env), env, debug_hint=None)
    try:
        args = parse(argv, env)
    except ParserExit as done:
        return done.status
    command = BY_NAME.get(args.verb or "")
    if command is None or command.handler is None:  # only top-level options were given
        build_parser().print_help(env.stdout)
        return ExitStatus.USAGE
    configure_later(args.log_level, getattr(args, "log_format", "text"))
    handler = command.handler
    return run_verb(lambda: handler(args, env), env)
