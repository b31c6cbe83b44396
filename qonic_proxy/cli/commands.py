"""The one table of verbs: it drives the parser, the help and the dispatch.

Adding a verb means adding one `Command` here (its options in `arguments`, its work in `verbs`);
nothing else lists the verbs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from qonic_proxy.cli import arguments, verbs
from qonic_proxy.cli.environment import Environment
from qonic_proxy.records import record
from qonic_proxy.wrap.environment import CA_VARIABLES, PROXY_VARIABLES

Handler = Callable[[argparse.Namespace, Environment], int]
RawHandler = Callable[[list[str], Environment], int]


@record
class Command:
    """One verb: its name, its help line, its options, and what runs it.

    A verb with `raw_handler` has a parser of its own: it is handed its argv untouched (argparse's
    REMAINDER would not take options that come first) and is listed in --help only. A parsed verb
    gets --config (offered in its help unless `uses_config` is False) and --log-level.
    """

    name: str
    help: str
    handler: Handler | None = None
    arguments: Callable[[argparse.ArgumentParser], None] = arguments.no_arguments
    raw_handler: RawHandler | None = None
    epilog: str | None = None  # more for the verb's own --help
    uses_config: bool = True
    log_level: str = "warning"

    def __post_init__(self) -> None:
        if (self.handler is None) == (self.raw_handler is None):
            raise ValueError(f"verb {self.name!r} needs exactly one of handler, raw_handler")


DEFAULT_VERB = "run"

EXEC_DESCRIPTION = (
    "Run CMD with the variables that point plain HTTP clients at qonic-proxy: "
    f"{', '.join(PROXY_VARIABLES)} (the forward listener), NO_PROXY and no_proxy "
    "(loopback), QONIC_API_URL (the reverse listener, ending in /v1), "
    f"{', '.join(CA_VARIABLES)} (a CA bundle that also trusts the proxy's CA), "
    "NODE_USE_ENV_PROXY=1 and $QONIC_PROXY_CONFIG. It uses the daemon running for this config, "
    "or starts a private one (loopback, free ports) for CMD's lifetime. The token is never put "
    "in the environment or argv, nor the configured client key: where CMD needs a key (the "
    "daemon requires one, or --read-only), the daemon mints one that dies with exec. Signals "
    "are forwarded; the exit status is CMD's."
)

COMMANDS: tuple[Command, ...] = (
    Command("init", "write the commented example config to the user config path",
            verbs.init, arguments.init_arguments),
    Command("run", "run the proxy daemon (the default verb)", verbs.run, arguments.run_arguments,
            log_level="info"),
    Command("login", "log in with the browser now and store the token", verbs.login,
            arguments.login_arguments),
    Command("logout", "delete the cached token", verbs.logout),
    Command("status", "show whether a usable token exists (exit 0) or not (exit 1)",
            verbs.status, arguments.status_arguments),
    Command("token", "print the current access token, refreshing it first if needed",
            verbs.token),
    Command("exec", "run a command with proxy variables pointing at qonic-proxy", verbs.exec_,
            arguments.exec_arguments, epilog=EXEC_DESCRIPTION),
    Command("env", "print the exports that exec sets, for eval \"$(qonic-proxy env)\"",
            verbs.env, arguments.env_arguments),
    Command("ca", "print the path of the proxy's CA certificate", verbs.ca,
            arguments.ca_arguments),
    Command("sandbox", "run a local Qonic-compatible server (options: `qonic-proxy sandbox "
            "--help`)", raw_handler=verbs.sandbox),
    Command("demo", "start the sandbox and the proxy, log in automatically, show it working",
            verbs.demo, arguments.demo_arguments, uses_config=False,
            epilog="The demo needs no config: it makes its own in a temporary folder, removed "
                   "at the end."),
    Command("help", "explain the verbs, or one verb's options (`qonic-proxy help VERB`)",
            verbs.help_, arguments.help_arguments, uses_config=False),
)

BY_NAME: dict[str, Command] = {command.name: command for command in COMMANDS}
