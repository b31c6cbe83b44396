"""The options of each verb: one function per verb, applied to its subparser by `parser`.

`--config` is added to every verb by the parser, so no verb can forget it.
"""

from __future__ import annotations

import argparse

from qonic_proxy.logs import LEVELS

LOG_FORMATS = ("text", "json")
CONFIG_HELP = ("config file (default: $QONIC_PROXY_CONFIG, the user config dir's config.toml, "
               "then /etc/qonic-proxy/config.toml)")


def config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help=CONFIG_HELP)


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """For verbs that take nothing but --config."""


def run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", choices=LEVELS, default="info")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text")


def login_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-browser", action="store_true",
                        help="only print the URL to open (headless machines)")


def status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def exec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")


def ca_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", action="store_true",
                        help="print a bundle of the public CAs plus the proxy's CA instead")


def demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8080,
                        help="reverse listener port (default 8080)")
    parser.add_argument("--forward-port", type=int, default=8081,
                        help="forward listener port (default 8081)")
    parser.add_argument("--once", action="store_true",
                        help="exit after the sample requests instead of serving until Ctrl-C")


def init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--client-id", metavar="ID",
                        help="your application's client ID from Qonic's developer portal "
                             "(default: a placeholder to replace)")
    parser.add_argument("--api-url", metavar="URL",
                        help="origin of the Qonic API (default: https://api.qonic.com)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing config file (default: never overwrite)")
