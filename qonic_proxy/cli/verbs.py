"""What each verb does, given its parsed arguments and the program's Environment.

Heavy modules (the daemon and mitmproxy, the OAuth client, the sandbox) are imported inside the
verb that needs them, so `status` or `token` start fast and never load mitmproxy.
"""

from __future__ import annotations

import argparse
import json
import os

from qonic_proxy.cli.environment import Environment
from qonic_proxy.cli.status_format import describe_expiry, format_status
from qonic_proxy.config.loader import find_config_file, load_config
from qonic_proxy.config.model import Config
from qonic_proxy.errors import ExitStatus, UsageError
from qonic_proxy.logs import configure_logging


def load(args: argparse.Namespace) -> Config:
    return load_config(find_config_file(getattr(args, "config", None)))


def load_with_daemon(args: argparse.Namespace) -> Config:
    """The config, its [proxy] port set to this config's running daemon (see discovery)."""
    from qonic_proxy.cli.discovery import with_running_daemon

    return with_running_daemon(load(args))


def run(args: argparse.Namespace, env: Environment) -> int:
    # before importing mitmproxy: its imports log, and with --log-format json every line on
    # stderr must be JSON
    configure_logging(args.log_level, args.log_format)
    import asyncio

    from qonic_proxy.proxy.daemon import serve

    cfg = load(args)
    return asyncio.run(serve(cfg))


def login(args: argparse.Namespace, env: Environment) -> int:
    from qonic_proxy.cli.session import login_now

    cfg = load_with_daemon(args)
    opener = None if args.no_browser or not cfg.oauth.open_browser else env.open_browser
    tokens = login_now(cfg, open_browser=opener, paste=args.paste)
    if tokens is None:
        env.print("Logged in to Qonic; the running qonic-proxy serves with the new token.")
        return ExitStatus.OK
    env.print(f"Logged in to Qonic; {describe_expiry(tokens.expires_at)}. "
              "A running qonic-proxy picks the new token up by itself.")
    return ExitStatus.OK


def init(args: argparse.Namespace, env: Environment) -> int:
    from qonic_proxy.cli.init import init_config

    env.print(init_config(args.config, args.client_id, args.api_url, force=args.force,
                          environ=dict(os.environ)))
    return ExitStatus.OK


def logout(args: argparse.Namespace, env: Environment) -> int:
    from qonic_proxy.cli.session import store_for

    store = store_for(load(args))
    if store.delete():
        env.print(f"Logged out: deleted {store.path}.")
    else:
        env.print(f"Already logged out: no token cache at {store.path}.")
    return ExitStatus.OK


def status(args: argparse.Namespace, env: Environment) -> int:
    from qonic_proxy.cli.session import status_report

    report = status_report(load_with_daemon(args))
    env.print(json.dumps(report, indent=2) if args.json else format_status(report))
    return ExitStatus.OK if report["logged_in"] else ExitStatus.FAILURE


def token(args: argparse.Namespace, env: Environment) -> int:
    from qonic_proxy.cli.session import current_access_token

    env.print(current_access_token(load(args)))
    return ExitStatus.OK


def env(args: argparse.Namespace, env: Environment) -> int:
    from qonic_proxy.wrap.shell_exports import shell_exports

    env.print(shell_exports(load(args), args.shell, args.unset, read_only=args.read_only))
    return ExitStatus.OK


def exec_(args: argparse.Namespace, env: Environment) -> int:
    """CMD's own exit code (or the shell's 126/127, or 128 + a signal), not an ExitStatus."""
    from qonic_proxy.wrap.command import run_command

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("exec needs a command: qonic-proxy exec -- CMD ARGS...")
    return run_command(load_with_daemon(args), command, read_only=args.read_only)


def ca(args: argparse.Namespace, env: Environment) -> int:
    from qonic_proxy.wrap.ca_files import ca_bundle, ca_certificate

    cfg = load(args)
    env.print(ca_bundle(cfg) if args.bundle else ca_certificate(cfg))
    return ExitStatus.OK


def demo(args: argparse.Namespace, env: Environment) -> int:
    from qonic_proxy.cli.demo import run_demo

    if args.config:
        env.error("note: the demo ignores --config; it runs against its own sandbox with a "
                  "temporary config")
    configure_logging(args.log_level, "text")
    return run_demo(port=args.port, forward_port=args.forward_port, once=args.once)


def sandbox(argv: list[str], env: Environment) -> int:
    """The sandbox parses its own options; it needs no config, so --config is accepted, unused."""
    from qonic_proxy.sandbox import cli as sandbox_cli

    if "--config" in argv:
        at = argv.index("--config")
        argv = argv[:at] + argv[at + 2:]
    argv = [arg for arg in argv if not arg.startswith("--config=")]
    if argv and argv[0] == "--":
        argv = argv[1:]
    return sandbox_cli.main(argv)


def help_(args: argparse.Namespace, env: Environment) -> int:
    """`qonic-proxy help [VERB]`: the list of verbs, or one verb's --help."""
    from qonic_proxy.cli.parser import build_parser, unknown_command
    from qonic_proxy.sandbox import cli as sandbox_cli

    parser = build_parser()
    if args.topic is None:
        parser.print_help(env.stdout)
    elif args.topic == "sandbox":
        sandbox_cli.parser().print_help(env.stdout)
    elif args.topic in parser.verb_parsers:
        parser.verb_parsers[args.topic].print_help(env.stdout)
    else:
        raise unknown_command(args.topic)
    return ExitStatus.OK
