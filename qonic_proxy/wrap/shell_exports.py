"""`qonic-proxy env`: the variables `exec` sets, as lines a shell evaluates.

`eval "$(qonic-proxy env)"` (or `--shell fish | source`, or PowerShell's
`qonic-proxy env --shell powershell | Invoke-Expression`) points a whole shell session or CI job
at the running daemon, so commands need no `exec` each. The token is never among them: the
daemon adds it. `--unset` prints the lines that undo it; where we extended a variable of the
user's (PHP_INI_SCAN_DIR, JAVA_TOOL_OPTIONS) it restores the user's part instead.
`env` serves a running daemon only: a private one would stop when `env` returns.

Where a key is needed (the daemon requires the client key, or `--read-only`), the exports carry
a key the daemon mints for the shell that evaluates them: the parent process of `env` (with
`eval "$(qonic-proxy env)"` that is the shell itself: bash, zsh, dash and fish run the command
substitution's only command in place of a subshell). The key is revoked when that shell exits,
and by `env --unset`; it is never the configured client key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from qonic_proxy.cli.arguments import SHELLS
from qonic_proxy.cli.daemon_client import daemon_health
from qonic_proxy.config.model import ENV_CONFIG, Config
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.wrap.ca_files import ca_bundle
from qonic_proxy.wrap.daemon_link import (
    ChildKey,
    key_needed,
    mint_key,
    revoke_key,
    running_endpoints,
)
from qonic_proxy.wrap.environment import CA_VARIABLES, PROXY_VARIABLES, wrapped_environment
from qonic_proxy.wrap.runtimes import JAVA_FIRST_OPTION, JAVA_LAST_OPTION, PHP_INI_DIR

VARIABLES = (*PROXY_VARIABLES, "NO_PROXY", "no_proxy", "NODE_USE_ENV_PROXY", "QONIC_API_URL",
             *CA_VARIABLES, "WGETRC", "PHP_INI_SCAN_DIR", "JAVA_TOOL_OPTIONS", ENV_CONFIG)


def _quote(shell: str, value: str) -> str:
    if shell == "sh":
        return "'" + value.replace("'", "'\\''") + "'"
    if shell == "fish":
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "'" + value.replace("'", "''") + "'"  # PowerShell: '' inside single quotes


def _set_line(shell: str, name: str, value: str) -> str:
    if shell == "sh":
        return f"export {name}={_quote(shell, value)}"
    if shell == "fish":
        return f"set -gx {name} {_quote(shell, value)}"
    return f"$env:{name} = {_quote(shell, value)}"


def _unset_line(shell: str, name: str) -> str:
    if shell == "sh":
        return f"unset {name}"
    if shell == "fish":
        return f"set -e {name}"
    return f"Remove-Item -ErrorAction SilentlyContinue Env:{name}"


def exported_variables(cfg: Config, base: Mapping[str, str], read_only: bool = False,
                       ) -> dict[str, str]:
    """What `exec` would set for a child, for the running daemon; QonicProxyError without one."""
    health = daemon_health(cfg)
    if health is None:
        raise QonicProxyError(
            f"no qonic-proxy daemon answers on port {cfg.proxy.port} for this config; start one "
            "with `qonic-proxy run` (or `systemctl --user start qonic-proxy`), then run "
            "`qonic-proxy env` again")
    endpoints = running_endpoints(cfg, health)
    if endpoints is None:
        raise QonicProxyError(
            "the qonic-proxy daemon on this port has forward mode off or serves another API; "
            "set [proxy] forward_port in its config and restart it, or use `qonic-proxy exec`")
    key = None
    if key_needed(cfg, read_only):
        shell = os.getppid()
        if shell <= 1:
            raise QonicProxyError("`qonic-proxy env` has no parent shell to tie its key to; run "
                                  "it as eval \"$(qonic-proxy env)\" in the shell that uses it")
        key = mint_key(cfg, endpoints.reverse, shell, read_only=read_only).key
    env = wrapped_environment(cfg, base, endpoints, ca_bundle(cfg), key)
    return {name: env[name] for name in VARIABLES if name in env}


def _restored(name: str, value: str | None) -> str | None:
    """The user's own part of a variable we extended, or None when nothing of theirs is left."""
    if value is None:
        return None
    if name == "PHP_INI_SCAN_DIR":
        kept = [d for d in value.split(os.pathsep) if not d.endswith(os.sep + PHP_INI_DIR)]
        return os.pathsep.join(kept) if any(kept) else None
    if name == "JAVA_TOOL_OPTIONS" and value.rstrip().endswith(JAVA_LAST_OPTION):
        start = value.rfind(JAVA_FIRST_OPTION)
        return value[:start].strip() or None if start >= 0 else value
    return None


def _revoke_exported(cfg: Config, base: Mapping[str, str]) -> None:
    """`env --unset`: revoke the minted key our exports gave this shell, if any."""
    from qonic_proxy.access.minted_keys import PREFIX  # the daemon's module: asyncio

    try:
        parts = urlsplit(base.get("QONIC_API_URL", ""))
        key = unquote(parts.password or "")
    except ValueError:
        return
    if key.startswith(PREFIX) and key.count(".") >= 2 and parts.hostname:
        reverse = f"{parts.scheme}://{parts.hostname}:{parts.port}"
        revoke_key(cfg, reverse, ChildKey(key, key.split(".")[1]))


def shell_exports(cfg: Config, shell: str = "sh", unset: bool = False,
                  base: Mapping[str, str] | None = None, read_only: bool = False) -> str:
    """The text `qonic-proxy env [--shell SHELL] [--unset]` prints (without a final newline)."""
    if shell not in SHELLS:
        raise QonicProxyError(f"unknown shell {shell!r}; use one of {', '.join(SHELLS)}")
    base = os.environ if base is None else base
    if unset:
        _revoke_exported(cfg, base)
        lines = []
        for name in VARIABLES:
            own = _restored(name, base.get(name))
            lines.append(_unset_line(shell, name) if own is None else _set_line(shell, name, own))
        return "\n".join(lines)
    return "\n".join(_set_line(shell, name, value)
                     for name, value in exported_variables(cfg, base, read_only).items())
