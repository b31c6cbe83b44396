"""The `qonic-proxy` command: argument parsing, verb dispatch, errors turned into exit codes."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import webbrowser
from collections.abc import Callable, Sequence
from typing import Any

from qonic_proxy import __version__
from qonic_proxy.config.loader import find_config_file, load_config
from qonic_proxy.config.model import Config
from qonic_proxy.errors import QonicProxyError, UsageError
from qonic_proxy.logs import LEVELS, configure_logging

VERBS = ("run", "login", "logout", "status", "token", "exec", "sandbox", "demo", "ca")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qonic-proxy",
        description="Log in to Qonic once; then any HTTP client can call the API through this "
                    "local proxy without OAuth code.",
    )
    parser.add_argument("--version", action="version", version=f"qonic-proxy {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--config", metavar="FILE",
                         help="config file (default: $QONIC_PROXY_CONFIG, the user config dir's "
                              "config.toml, then /etc/qonic-proxy/config.toml)")
        return sub

    run = verb("run", "run the proxy daemon (the default verb)")
    add_log_options(run)
    login = verb("login", "log in with the browser now and store the token")
    login.add_argument("--no-browser", action="store_true",
                       help="only print the URL to open (headless machines)")
    verb("logout", "delete the cached token")
    status = verb("status", "show whether a usable token exists (exit 0) or not (exit 1)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    verb("token", "print the current access token, refreshing it first if needed")
    exec_ = verb("exec", "run a command with proxy variables pointing at qonic-proxy")
    exec_.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    ca = verb("ca", "print the path of the proxy's CA certificate")
    ca.add_argument("--bundle", action="store_true",
                    help="print a bundle of the public CAs plus the proxy's CA instead")
    # listed for --help only: main() hands `sandbox` and its options to the sandbox's own parser
    verb("sandbox", "run a local Qonic-compatible server (options: `qonic-proxy sandbox --help`)")
    demo = verb("demo", "start the sandbox and the proxy, log in automatically, show it working")
    demo.add_argument("--port", type=int, default=8080, help="reverse listener port (default 8080)")
    demo.add_argument("--forward-port", type=int, default=8081,
                      help="forward listener port (default 8081)")
    demo.add_argument("--once", action="store_true",
                      help="exit after the sample requests instead of serving until Ctrl-C")
    return parser


def add_log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", choices=LEVELS, default="info")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")


def load(args: argparse.Namespace) -> Config:
    return load_config(find_config_file(getattr(args, "config", None)))


# ----- verbs ---------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from qonic_proxy.proxy.daemon import serve

    configure_logging(args.log_level, args.log_format)
    cfg = load(args)
    return asyncio.run(serve(cfg))


def cmd_login(args: argparse.Namespace) -> int:
    from qonic_proxy.cli.session import login_now

    cfg = load(args)
    opener = None if args.no_browser or not cfg.oauth.open_browser else webbrowser.open
    tokens = login_now(cfg, open_browser=opener)
    print(f"Logged in to Qonic; {describe_expiry(tokens.expires_at)}. "
          "A running qonic-proxy picks the new token up by itself.")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from qonic_proxy.tokens.store import TokenStore, cache_key

    cfg = load(args)
    store = TokenStore(cfg.token.cache_file, cache_key(cfg))
    if store.delete():
        print(f"Logged out: deleted {store.path}.")
    else:
        print(f"Already logged out: no token cache at {store.path}.")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from qonic_proxy.cli.session import status_report

    cfg = load(args)
    report = status_report(cfg)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_status(report))
    return 0 if report["logged_in"] else 1


def cmd_token(args: argparse.Namespace) -> int:
    from qonic_proxy.cli.session import current_access_token

    cfg = load(args)
    print(current_access_token(cfg))
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from qonic_proxy.wrap.exec_env import run_command

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("exec needs a command: qonic-proxy exec -- CMD ARGS...")
    configure_logging("warning", "text")
    return run_command(load(args), command)


def cmd_ca(args: argparse.Namespace) -> int:
    from qonic_proxy.wrap.exec_env import ca_bundle, ca_certificate

    cfg = load(args)
    print(ca_bundle(cfg) if args.bundle else ca_certificate(cfg))
    return 0


def run_sandbox(argv: list[str]) -> int:
    from qonic_proxy.sandbox import cli as sandbox

    if "--config" in argv:
        at = argv.index("--config")
        argv = argv[:at] + argv[at + 2:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    return sandbox.main(argv)


def cmd_demo(args: argparse.Namespace) -> int:
    from qonic_proxy.cli.demo import run_demo

    configure_logging("warning", "text")
    return run_demo(port=args.port, forward_port=args.forward_port, once=args.once)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "login": cmd_login, "logout": cmd_logout, "status": cmd_status,
    "token": cmd_token, "exec": cmd_exec, "ca": cmd_ca, "demo": cmd_demo,
}


# ----- output helpers ------------------------------------------------------------------------
def describe_expiry(expires_at: float | None) -> str:
    if expires_at is None:
        return "the token's lifetime is unknown"
    remaining = expires_at - time.time()
    if remaining <= 0:
        return "the token has expired"
    return "token valid until " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(expires_at)) \
        + f" ({int(remaining)} s)"


def format_status(report: dict[str, Any]) -> str:
    lines = [
        "logged in" if report["logged_in"] else "NOT logged in: " + report["action"],
        f"  token cache:   {report['cache_file']}",
    ]
    if report.get("scopes"):
        lines.append(f"  scopes:        {' '.join(report['scopes'])}")
    if report.get("expires_at"):
        lines.append(f"  expiry:        {describe_expiry(report['expires_at'])}")
    lines.append(f"  refresh token: {'yes' if report.get('refresh_token') else 'no'}")
    daemon = report.get("daemon")
    if daemon:
        listeners = daemon.get("listeners") or {}
        lines.append(f"  daemon:        running (pid {daemon.get('pid')}), "
                     f"reverse {listeners.get('reverse')}, "
                     f"forward {listeners.get('forward') or 'off'}")
    else:
        lines.append("  daemon:        not reachable")
    return "\n".join(lines)


# ----- entry point ---------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in VERBS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["run", *argv]  # `run` is the default verb
    if argv[0] == "sandbox":
        # the sandbox has its own parser: hand it everything (argparse's REMAINDER would not
        # take options that come first); it needs no config, so --config is accepted and unused
        return run_sandbox(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    if not logging.getLogger().handlers:
        configure_logging("warning", "text")
    try:
        return COMMANDS[args.verb](args)
    except QonicProxyError as err:
        print(f"qonic-proxy: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("qonic-proxy: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug: still one line, and a way to see more
        logging.getLogger("qonic_proxy").debug("internal error", exc_info=True)
        print(f"qonic-proxy: internal error ({type(err).__name__}: {err}); please report it "
              "(run with --log-level debug for details)", file=sys.stderr)
        return 1
