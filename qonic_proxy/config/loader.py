"""Finding and reading the config file: discovery order, TOML syntax errors, then the sections.

`find_config_file` picks the file, `load_config` reads it and `parse_config` turns parsed TOML
into the typed Config (config.model), or raises ConfigError (exit 78) with one sentence naming
file, key and fix.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qonic_proxy.config import sections
from qonic_proxy.config.access import access_settings
from qonic_proxy.config.fields import Section, missing, shown
from qonic_proxy.config.model import APP_NAME, ENV_CONFIG, SYSTEM_CONFIG_FILE, Config
from qonic_proxy.config.schema import check_unknown
from qonic_proxy.errors import ConfigError

INIT = "qonic-proxy init"


def user_config_file() -> Path:
    """The per-user config location (platformdirs), looked up at call time so tests can move it."""
    import platformdirs  # only when no file is named: it costs more than the rest of loading

    return platformdirs.user_config_path(APP_NAME) / "config.toml"


def find_config_file(explicit: str | None, env: Mapping[str, str] = os.environ) -> Path | None:
    """Pick the config file: --config, then $QONIC_PROXY_CONFIG, then the user and system files.

    A path the user named must exist (a typo should not silently fall back to another file);
    default locations are only candidates.
    """
    named: list[tuple[str, str]] = []
    if explicit is not None:
        named.append(("--config", explicit))
    elif env.get(ENV_CONFIG):
        named.append((f"${ENV_CONFIG}", env[ENV_CONFIG]))
    for origin, raw in named:
        if not raw:
            raise ConfigError(f"{origin} is empty; name a config file (`{INIT}` writes one)")
        path = Path(raw).expanduser()
        name = shown(path, quote=False)
        if missing(path):
            raise ConfigError(
                f"config file {name} does not exist; create it with `{INIT} --config {name}` "
                f"or fix {'--config' if origin == '--config' else '$' + ENV_CONFIG}"
            )
        if os.path.isdir(path):
            raise ConfigError(f"config file {name} is a directory; point {origin} at a .toml file")
        return path
    for candidate in (user_config_file(), SYSTEM_CONFIG_FILE):
        if not missing(candidate):
            return candidate
    return None


def load_config(path: Path | None, env: Mapping[str, str] = os.environ) -> Config:
    """Read and validate the TOML file at `path` (from find_config_file)."""
    if path is None:
        user_file = user_config_file()
        raise ConfigError(
            f"no config file found (looked at --config, ${ENV_CONFIG}, {user_file} and "
            f"{SYSTEM_CONFIG_FILE}); create {user_file} with `{INIT} --client-id ID` "
            "(ID: your application's client ID from Qonic), or pass --config FILE"
        )
    path = Path(path).expanduser().absolute()
    source = shown(path, quote=False)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{source}: cannot read the config file ({exc.strerror or exc}); "
            "check that it exists and that this user may read it"
        ) from None
    try:
        text = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8")  # BOM allowed; no codec lookup
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{source}: line {line}: the file is not UTF-8 text; save it as UTF-8"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line, column, message = _toml_error_position(exc, text)
        where = f"line {line}, column {column}" if column else f"line {line}"
        raise ConfigError(
            f"{source}: {where}: invalid TOML ({message}); fix the syntax there "
            f"(`{INIT} --config NEW.toml` writes a commented example of the format)"
        ) from None
    return parse_config(data, source, env, path.parent, path=path)


def _toml_error_position(exc: Exception, text: str) -> tuple[int, int | None, str]:
    """Line, column and bare message of a TOML error (3.14 has attributes; older only text)."""
    lineno = getattr(exc, "lineno", None)
    if isinstance(lineno, int):
        return lineno, getattr(exc, "colno", None), str(getattr(exc, "msg", exc))
    message = str(exc)
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", message)
    if found:
        return int(found.group(1)), int(found.group(2)), message[: found.start()]
    found = re.search(r"\s*\(at end of document\)\s*$", message)
    if found:
        return max(1, len(text.splitlines())), None, message[: found.start()]
    return 1, None, message


def parse_config(
    data: Mapping[str, Any],
    source: str,
    env: Mapping[str, str] = os.environ,
    config_dir: Path | None = None,
    *,
    path: Path | None = None,
) -> Config:
    """Validate parsed TOML into a Config.

    `source` names the file in messages; relative paths are taken from `config_dir` (default:
    the directory of `path`, else the working directory); `path` is the file itself, used to
    check its permissions and recorded as Config.path.
    """
    base = config_dir or (path.parent if path is not None else Path.cwd())
    check_unknown(source, data)

    def section(name: str) -> Section:
        return Section(source, name, data.get(name, {}), base)

    return Config(
        path=path,
        qonic=sections.qonic_settings(section("qonic")),
        oauth=sections.oauth_settings(section("oauth"), env, path),
        proxy=sections.proxy_settings(section("proxy")),
        token=sections.token_settings(section("token")),
        access=access_settings(section("access")),
    )
