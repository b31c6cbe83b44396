"""The options of each verb: one function per verb, applied to its subparser by `parser`.

`--config` and `--log-level` are added to every parsed verb by the parser, so no verb can
forget them. Every option's help line ends with its default.
"""

from __future__ import annotations

import argparse

from qonic_proxy.logs import LEVELS
from qonic_proxy.qonic import DEFAULT_API_URL

LOG_FORMATS = ("text", "json")
CONFIG_HELP = ("config file (default: $QONIC_PROXY_CONFIG, the user config dir's config.toml, "
               "then /etc/qonic-proxy/config.toml)")
DEMO_PORTS = (8080, 8081)


def config_option(parser: argparse.ArgumentParser, *, shown: bool = True) -> None:
    """`--config FILE`; a verb that ignores it (demo) still accepts it, without offering it."""
    parser.add_argument("--config", metavar="FILE",
                        help=CONFIG_HELP if shown else argparse.SUPPRESS)


def log_level_option(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--log-level", choices=LEVELS, default=default, type=str.lower,
                        metavar="{" + ",".join(LEVELS) + "}",
                        help=f"how much to log on stderr, in any case (default: {default})")


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """For verbs that take nothing but --config and --log-level."""


def run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text", type=str.lower,
                        help="text for people, json for one object per line (default: text)")


def init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--client-id", metavar="ID",
                        help="your application's client ID from Qonic's developer portal "
                             "(default: a placeholder to replace)")
    parser.add_argument("--api-url", metavar="URL",
                        help=f"origin of the Qonic API (default: {DEFAULT_API_URL})")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing config file (default: never overwrite)")


def login_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-browser", action="store_true",
                        help="only print the URL to open, for headless machines (default: open "
                             "a browser unless [oauth] open_browser = false)")
    parser.add_argument("--paste", action="store_true",
                        help="also read the address the browser ended on from stdin, for a "
                             "browser on another machine; finishes a running daemon's login "
                             "(default: wait for the callback only)")


def status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="machine-readable output (default: text)")


READ_ONLY_HELP = ("let the programs send only GET, HEAD and OPTIONS (403 for anything else, "
                  "before it goes upstream) with a key that dies with {what} (default: off)")


def exec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--read-only", action="store_true",
                        help=READ_ONLY_HELP.format(what="exec"))
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ...",
                        help="the command to run and its arguments (required)")


def ca_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", action="store_true",
                        help="print a bundle of the public CAs plus the proxy's CA instead "
                             "(default: the proxy's CA certificate alone)")


def demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=DEMO_PORTS[0],
                        help="reverse listener port; 0 or a busy port picks a free one "
                             f"(default: {DEMO_PORTS[0]})")
    parser.add_argument("--forward-port", type=int, default=DEMO_PORTS[1],
                        help="forward listener port; 0 or a busy port picks a free one "
                             f"(default: {DEMO_PORTS[1]})")
    parser.add_argument("--once", action="store_true",
                        help="exit after the sample requests (default: serve until Ctrl-C)")


def help_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", nargs="?", metavar="VERB",
                        help="the verb to explain (default: the list of verbs)")


SHELLS = ("sh", "fish", "powershell")  # what `env --shell` can print for


def env_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the `env` verb."""
    parser.add_argument("--shell", choices=SHELLS, default="sh",
                        help="the shell to print for (default: sh, for bash, zsh, dash, ...)")
    parser.add_argument("--read-only", action="store_true",
                        help=READ_ONLY_HELP.format(what="the shell that evaluates the exports"))
    parser.add_argument("--unset", action="store_true",
                        help="print the lines that undo a previous `qonic-proxy env` "
                             "(default: print the exports)")
