"""`qonic-proxy init`: write the commented example config where the other verbs will find it.

The file goes to `--config FILE` or the user config path, 0600 (it may later hold a client
secret) in a 0700 folder, and is never replaced without `--force`. The values given on the
command line are checked by the same rules as the config file, before anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from qonic_proxy.config.example import filled_example
from qonic_proxy.config.fields import Section, shown
from qonic_proxy.config.loader import user_config_file
from qonic_proxy.config.model import ENV_CONFIG
from qonic_proxy.config.sections import check_client_id
from qonic_proxy.config.validate import https_url
from qonic_proxy.errors import ConfigError, QonicProxyError, UsageError
from qonic_proxy.files import create_exclusive, ensure_private_dir, write_atomic


def _flag_error(flag: str, err: ConfigError) -> UsageError:
    """The config rule's sentence, naming the flag instead of the file and key."""
    return UsageError(f"{flag} {str(err).split(': ', 2)[-1]}")


def checked_values(client_id: str | None, api_url: str | None) -> tuple[str | None, str | None]:
    """The flags' values as the config would read them, or a UsageError naming the flag."""
    try:
        if client_id is not None:
            check_client_id(Section("--client-id", "oauth", {}, Path.cwd()), client_id)
    except ConfigError as err:
        raise _flag_error("--client-id", err) from None
    try:
        if api_url is not None:
            api_url = https_url(Section("--api-url", "qonic", {}, Path.cwd()), "api_url", api_url,
                                origin_only=True)
    except ConfigError as err:
        raise _flag_error("--api-url", err) from None
    return client_id, api_url


def target_path(explicit: str | None) -> Path:
    return Path(explicit).expanduser().absolute() if explicit else user_config_file()


def write_config(path: Path, text: str, *, force: bool, default_place: bool) -> None:
    name = shown(path, quote=False)
    if os.path.isdir(path):
        raise UsageError(f"{name} is a directory; name a .toml file with --config FILE")
    try:
        if default_place:
            ensure_private_dir(path.parent)
        else:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if force:
            write_atomic(path, text.encode("utf-8"))
        elif not create_exclusive(path, text.encode("utf-8")):
            raise QonicProxyError(
                f"{name} already exists; edit it, or pass --force to replace it with the example")
    except OSError as exc:
        raise QonicProxyError(
            f"cannot write {name} ({exc.strerror or exc}); check the folder's permissions "
            "or choose another file with --config FILE") from None


def next_step(path: Path, client_id: str | None, environ: dict[str, str]) -> str:
    name = shown(path, quote=False)
    lines = [f"Wrote {name} (mode 0600)."]
    if client_id is None:
        lines.append(f"Next: set [oauth] client_id in {name} to your application's client ID "
                     "from Qonic's developer portal (or run `qonic-proxy init --client-id ID "
                     "--force`), then run `qonic-proxy login`.")
    else:
        lines.append("Next: if your application has a client secret, put it in "
                     "$QONIC_CLIENT_SECRET or in a 0600 file named by [oauth] "
                     "client_secret_file; then run `qonic-proxy login`.")
    named = environ.get(ENV_CONFIG)
    if named and Path(named).expanduser().absolute() != path:
        lines.append(f"Note: ${ENV_CONFIG} is set and names another file, which the other verbs "
                     f"read first; unset it or pass --config {name}.")
    return "\n".join(lines)


def init_config(explicit: str | None, client_id: str | None, api_url: str | None, *,
                force: bool, environ: dict[str, str]) -> str:
    """Write the config and return what to tell the user."""
    client_id, api_url = checked_values(client_id, api_url)
    path = target_path(explicit)
    write_config(path, filled_example(client_id, api_url), force=force,
                 default_place=explicit is None)
    return next_step(path, client_id, environ)
