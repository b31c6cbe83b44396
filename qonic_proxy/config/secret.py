"""The client secret, found in the documented order; no secret means a public client.

Order: `$QONIC_CLIENT_SECRET`, the systemd credential `client_secret`
(`$CREDENTIALS_DIRECTORY/client_secret`), `[oauth] client_secret_file`, then a plain
`[oauth] client_secret` key (warned about unless the config file is 0600). The secret itself is
never part of a message or a log line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from qonic_proxy.config.fields import Section, missing, shown
from qonic_proxy.config.model import CREDENTIAL_NAME, ENV_CREDENTIALS, ENV_SECRET
from qonic_proxy.logs import logger

log = logger("qonic_proxy.config")

EMPTY_FIX = "put the client secret there, or remove it to run as a public client"


def strip_newline(secret: str) -> str:
    """Files written by `echo` end in a newline that is not part of the secret; drop one."""
    if secret.endswith("\r\n"):
        return secret[:-2]
    return secret[:-1] if secret.endswith("\n") else secret


def group_or_other(path: Path, mask: int) -> int | None:
    """The file's permission bits if any in `mask` are set (POSIX only), else None."""
    if os.name != "posix":
        return None
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return None
    return mode if mode & mask else None


def _file_secret(oauth: Section, key: str, path: Path, what: str, empty: str) -> str:
    """A secret read from a file: UTF-8, one trailing newline dropped, not blank."""
    data = oauth.readable_file(key, path, what)
    try:
        secret = strip_newline(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise oauth.error(key, "the secret is not UTF-8 text", "store it as plain text") from None
    if not secret.strip():
        raise oauth.error(key, empty, EMPTY_FIX)
    return secret


def client_secret(
    oauth: Section, env: Mapping[str, str], config_path: Path | None
) -> tuple[str | None, str]:
    """Find the client secret in the documented order; return (secret, source name)."""
    key = "client_secret"
    secret_file = oauth.path("client_secret_file")
    plain = oauth.string(key)
    if plain is not None and (config_path is None or group_or_other(config_path, 0o077)):
        where = shown(config_path, quote=False) if config_path else oauth.source
        log.warning(
            "%s: [oauth] client_secret is stored in plain text in a file that is not mode 0600; "
            "run chmod 600 on it, or move the secret to client_secret_file, $%s or a systemd "
            "credential",
            where,
            ENV_SECRET,
        )

    if ENV_SECRET in env:
        secret = env[ENV_SECRET]
        if not secret.strip():
            raise oauth.error(key, f"${ENV_SECRET} is set but empty", f"unset it or {EMPTY_FIX}")
        return secret, "env"

    cred_dir = env.get(ENV_CREDENTIALS)
    if cred_dir:
        cred = Path(cred_dir) / CREDENTIAL_NAME
        if not missing(cred):
            empty = f"the systemd credential {shown(cred, quote=False)} is empty"
            return _file_secret(oauth, key, cred, "the credential", empty), "credential"

    if secret_file is not None:
        fkey = "client_secret_file"
        name = shown(secret_file, quote=False)
        secret = _file_secret(
            oauth, fkey, secret_file, "the file holding the client secret", f"{name} is empty"
        )
        mode = group_or_other(secret_file, 0o044)
        if mode is not None:
            log.warning(
                "%s: [oauth] client_secret_file: %s can be read by other users (mode %04o); "
                "run chmod 600 on it",
                oauth.source,
                name,
                mode,
            )
        return secret, "file"

    if plain is not None:
        if not plain.strip():
            raise oauth.error(key, "is empty", "remove the key to run as a public client")
        return plain, "config"
    return None, "none"
