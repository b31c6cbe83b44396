"""Configuration: TOML file discovery, defaults, validation and client-secret lookup.

The dataclasses below are the contract the rest of the package codes against; `load_config`
turns a file into them or raises ConfigError (exit 78) with one sentence naming file, key and fix.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from qonic_proxy.config.model import (
    APP_NAME,
    CREDENTIAL_NAME,
    ENV_CONFIG,
    ENV_CREDENTIALS,
    ENV_SECRET,
    SYSTEM_CONFIG_FILE,
    Config,
    OAuthSettings,
    ProxySettings,
    QonicSettings,
    TokenSettings,
)
from qonic_proxy.errors import ConfigError
from qonic_proxy.oauth.redirect import RedirectUriError, parse_loopback_redirect

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python < 3.11: pyproject pulls in tomli
    import tomli as tomllib  # type: ignore[no-redef]


# --------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------

EXAMPLE_FILE = "config/qonic-proxy.example.toml"
EXAMPLE_CLIENT_ID = "your-client-id"

DEFAULT_API_URL = "https://api.qonic.com"
AUTHORIZE_PATH = "/v1/auth/authorize"
TOKEN_PATH = "/v1/auth/token"  # noqa: S105 - a URL path
KNOWN_SCOPES = (
    "projects:read",
    "projects:write",
    "models:read",
    "models:write",
    "issues:read",
    "libraries:read",
    "libraries:write",
)
DEFAULT_SCOPES = ("projects:read", "models:read")
DEFAULT_REDIRECT_URI = "http://localhost:8765/callback"
DEFAULT_LOGIN_TIMEOUT = 300.0
DEFAULT_LISTEN_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_ALLOWED_HOSTS = ("localhost", "127.0.0.1", "::1")
DEFAULT_REFRESH_MARGIN = 60.0
LOOPBACK_REDIRECT_HOSTS = ("localhost", "127.0.0.1", "::1")

_KEYS: dict[str, tuple[str, ...]] = {
    "qonic": ("api_url", "authorize_url", "token_url", "ca_file"),
    "oauth": (
        "client_id",
        "client_secret_file",
        "client_secret",
        "scopes",
        "redirect_uri",
        "open_browser",
        "login_timeout",
    ),
    "proxy": ("listen_host", "port", "forward_port", "allowed_hosts", "client_key_file", "ca_dir"),
    "token": ("cache_file", "refresh_margin"),
}

# One DNS label: letters, digits, hyphens inside, underscores tolerated for internal names.
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")

log = logging.getLogger("qonic_proxy.config")


def user_config_file() -> Path:
    """The per-user config location (platformdirs), looked up at call time so tests can move it."""
    return platformdirs.user_config_path(APP_NAME) / "config.toml"


def _missing(path: Path) -> bool:
    """True when nothing is at `path`; a permission error counts as present, so it gets reported."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


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
            raise ConfigError(f"{origin} is empty; name a config file, e.g. {EXAMPLE_FILE}")
        path = Path(raw).expanduser()
        if _missing(path):
            raise ConfigError(
                f"config file {path} does not exist; create it from {EXAMPLE_FILE} "
                f"or fix {'--config' if origin == '--config' else '$' + ENV_CONFIG}"
            )
        if os.path.isdir(path):
            raise ConfigError(f"config file {path} is a directory; point {origin} at a .toml file")
        return path
    for candidate in (user_config_file(), SYSTEM_CONFIG_FILE):
        if not _missing(candidate):
            return candidate
    return None


def load_config(path: Path | None, env: Mapping[str, str] = os.environ) -> Config:
    """Read and validate the TOML file at `path` (from find_config_file)."""
    if path is None:
        user_file = user_config_file()
        raise ConfigError(
            f"no config file found (looked at --config, ${ENV_CONFIG}, {user_file} and "
            f"{SYSTEM_CONFIG_FILE}); create one by copying {EXAMPLE_FILE} to {user_file} "
            "and setting [oauth] client_id, or pass --config FILE"
        )
    path = Path(path).expanduser().absolute()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the config file ({exc.strerror or exc}); "
            "check that it exists and that this user may read it"
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line}: the file is not UTF-8 text; save it as UTF-8"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line, column, message = _toml_error_position(exc, text)
        where = f"line {line}, column {column}" if column else f"line {line}"
        raise ConfigError(
            f"{path}: {where}: invalid TOML ({message}); fix the syntax there "
            f"(see {EXAMPLE_FILE} for the format)"
        ) from None
    return parse_config(data, str(path), env, path.parent, path=path)


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


class _Section:
    """One TOML table plus the file name, so every error names file, section and key alike."""

    def __init__(self, source: str, name: str, table: Mapping[str, Any], base: Path) -> None:
        self.source = source
        self.name = name
        self.table = table
        self.base = base

    def error(self, key: str, what: str, fix: str) -> ConfigError:
        return ConfigError(f"{self.source}: [{self.name}] {key}: {what}; {fix}")

    def has(self, key: str) -> bool:
        return key in self.table

    def _typed(self, key: str, value: Any, expected: str, ok: bool) -> Any:
        if not ok:
            raise self.error(
                key, f"expected {expected}, got {_toml_type(value)}", f"write it as {expected}"
            )
        return value

    def string(self, key: str, default: str | None = None) -> str | None:
        if key not in self.table:
            return default
        value = self.table[key]
        return self._typed(key, value, "a string in quotes", isinstance(value, str))

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        return self._typed(key, value, "true or false", isinstance(value, bool))

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.table.get(key, default)
        ok = isinstance(value, int) and not isinstance(value, bool)
        self._typed(key, value, "an integer", ok)
        if not low <= value <= high:
            raise self.error(
                key, f"{value} is out of range", f"use an integer from {low} to {high}"
            )
        return value

    def seconds(self, key: str, default: float, *, allow_zero: bool) -> float:
        value = self.table.get(key, default)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        self._typed(key, value, "a number of seconds", ok)
        bound = ">= 0" if allow_zero else "> 0"
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise self.error(key, f"{value} is not a valid duration", f"use a number {bound}")
        return float(value)

    def string_list(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        if key not in self.table:
            return default
        value = self.table[key]
        self._typed(key, value, "an array of strings", isinstance(value, list))
        for item in value:
            self._typed(key, item, "an array of strings", isinstance(item, str))
        if not value:
            raise self.error(key, "the list is empty", "list at least one entry or remove the key")
        return tuple(value)

    def path(self, key: str, default: Path | None = None) -> Path | None:
        """A file path: `~` expanded, relative paths taken from the config file's directory."""
        raw = self.string(key)
        if raw is None:
            return default
        if not raw.strip() or "\0" in raw:
            raise self.error(key, "the path is empty or malformed", "give a file path or remove it")
        try:
            path = Path(raw).expanduser()
        except RuntimeError:
            raise self.error(
                key, f"cannot expand ~ in {raw!r} (no home directory)", "use an absolute path"
            ) from None
        return path if path.is_absolute() else self.base / path

    def readable_file(self, key: str, path: Path, what: str) -> bytes:
        """Read a file the config names, turning OS errors into one sentence."""
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise self.error(
                key, f"{path} does not exist", f"create it or fix the path to {what}"
            ) from None
        except IsADirectoryError:
            raise self.error(key, f"{path} is a directory", f"point it at {what}") from None
        except OSError as exc:
            raise self.error(
                key, f"cannot read {path} ({exc.strerror or exc})", "let this user read the file"
            ) from None


def _toml_type(value: Any) -> str:
    """Name a TOML value's type the way the TOML spec does, for error messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def _normalise_host(host: str) -> str | None:
    """Lower-case an IP literal or DNS name, IDNA-encoding non-ASCII names; None if invalid."""
    host = host.strip().lower()
    if not host:
        return None
    if ":" in host:
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            return None
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            return None
    if len(host) > 253 or not all(_LABEL.match(label) for label in host.split(".")):
        return None
    return host


def _url_netloc(host: str, port: int | None, default_port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port in (None, default_port) else f"{shown}:{port}"


def _https_url(section: _Section, key: str, value: str, *, origin_only: bool) -> str:
    """Validate and normalise an https URL; never echo it (it might carry a credential)."""
    if not value or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise section.error(key, "the URL is empty or contains spaces", "write a plain https URL")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise section.error(
            key, "is not a valid URL (bad port or brackets)", "write it as https://host[:port]"
        ) from None
    if parts.scheme.lower() != "https":
        raise section.error(
            key,
            "must use https://",
            "the token and client secret must not cross the network"
            " in clear text, so use the https URL of the server",
        )
    if "@" in parts.netloc:
        raise section.error(
            key, "must not contain a user name or password", "remove the part before '@'"
        )
    if "?" in value or "#" in value:
        raise section.error(key, "must not have a query or fragment", "remove the ?… or #… part")
    host = _normalise_host(parts.hostname or "")
    if host is None:
        raise section.error(key, "the host name is missing or invalid", "write https://host[:port]")
    if port == 0:
        raise section.error(key, "port 0 is not valid", "omit the port or use a real one")
    if origin_only and parts.path not in ("", "/"):
        raise section.error(
            key,
            "must be an origin without a path",
            "write only https://host[:port]; the /v1/... paths are added by the proxy",
        )
    path = "" if origin_only else parts.path
    return f"https://{_url_netloc(host, port, 443)}{path}"


def _redirect_uri(section: _Section, key: str, value: str) -> str:
    """RFC 8252 loopback redirect (the rules of oauth.redirect), kept verbatim."""
    expected = "write it like http://localhost:8765/callback and register the same URI in Qonic"
    try:
        return parse_loopback_redirect(value).uri
    except RedirectUriError as problem:
        raise section.error(key, str(problem), expected) from None


def _listen_host(section: _Section, key: str, value: str) -> tuple[str, bool]:
    """Return the normalised listen address and whether it is loopback."""
    raw = value.strip()
    if raw.startswith("[") and raw.endswith("]"):
        raw = raw[1:-1]
    if raw.lower() == "localhost":
        return "localhost", True
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        raise section.error(
            key,
            f"{value!r} is not an IP address",
            "use an IP address such as 127.0.0.1 or ::1 (or localhost)",
        ) from None
    return str(address), address.is_loopback


def _allowed_host(section: _Section, key: str, value: str) -> str:
    """Store Host-header names as compared later: lower-case, no brackets, no port."""
    raw = value.strip().lower()
    host = raw
    if raw.startswith("["):
        end = raw.find("]")
        rest = raw[end + 1 :] if end > 0 else "x"
        host = raw[1:end] if end > 0 else ""
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            host = ""
    elif raw.count(":") == 1:
        host, _, port = raw.partition(":")
        if not port.isdigit():
            host = ""
    normalised = _normalise_host(host)
    if normalised is None:
        raise section.error(
            key, f"{value!r} is not a host name or IP address", "list names like localhost"
        )
    return normalised


def _check_unknown(source: str, data: Mapping[str, Any]) -> None:
    sections = ", ".join(f"[{name}]" for name in _KEYS)
    for name, table in data.items():
        if name not in _KEYS:
            if isinstance(table, dict):
                hint = _close(name, _KEYS)
                raise ConfigError(
                    f"{source}: [{name}]: unknown section{hint}; the sections are {sections}"
                )
            raise ConfigError(
                f"{source}: {name}: unknown top-level key{_close(name, _all_keys())}; "
                f"every key belongs in one of the sections {sections}"
            )
        if not isinstance(table, dict):
            raise ConfigError(
                f"{source}: [{name}]: expected a table, got {_toml_type(table)}; "
                f"write it as a [{name}] section header followed by its keys"
            )
        for key in table:
            if key not in _KEYS[name]:
                raise ConfigError(
                    f"{source}: [{name}] {key}: unknown key{_close(key, _KEYS[name])}; "
                    f"the keys of [{name}] are {', '.join(_KEYS[name])}"
                )


def _all_keys() -> list[str]:
    return [key for keys in _KEYS.values() for key in keys]


def _close(word: str, choices: Any) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {match[0]}?)" if match else ""


def _strip_newline(secret: str) -> str:
    """Files written by `echo` end in a newline that is not part of the secret; drop one."""
    if secret.endswith("\r\n"):
        return secret[:-2]
    return secret[:-1] if secret.endswith("\n") else secret


def _group_or_other(path: Path, mask: int) -> int | None:
    """The file's permission bits if any in `mask` are set (POSIX only), else None."""
    if os.name != "posix":
        return None
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return None
    return mode if mode & mask else None


def _client_secret(
    oauth: _Section, env: Mapping[str, str], config_path: Path | None
) -> tuple[str | None, str]:
    """Find the client secret in the documented order; return (secret, source name)."""
    key = "client_secret"
    empty_fix = "put the client secret there, or remove it to run as a public client"
    secret_file = oauth.path("client_secret_file")
    plain = oauth.string(key)
    if plain is not None and (config_path is None or _group_or_other(config_path, 0o077)):
        where = str(config_path) if config_path else oauth.source
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
            raise oauth.error(key, f"${ENV_SECRET} is set but empty", f"unset it or {empty_fix}")
        return secret, "env"

    cred_dir = env.get(ENV_CREDENTIALS)
    if cred_dir:
        cred = Path(cred_dir) / CREDENTIAL_NAME
        if not _missing(cred):
            secret = _decode_secret(oauth, key, oauth.readable_file(key, cred, "the credential"))
            if not secret.strip():
                raise oauth.error(key, f"the systemd credential {cred} is empty", empty_fix)
            return secret, "credential"

    if secret_file is not None:
        fkey = "client_secret_file"
        data = oauth.readable_file(fkey, secret_file, "the file holding the client secret")
        secret = _decode_secret(oauth, fkey, data)
        if not secret.strip():
            raise oauth.error(fkey, f"{secret_file} is empty", empty_fix)
        mode = _group_or_other(secret_file, 0o044)
        if mode is not None:
            log.warning(
                "%s: [oauth] client_secret_file: %s can be read by other users (mode %04o); "
                "run chmod 600 on it",
                oauth.source,
                secret_file,
                mode,
            )
        return secret, "file"

    if plain is not None:
        if not plain.strip():
            raise oauth.error(key, "is empty", "remove the key to run as a public client")
        return plain, "config"
    return None, "none"


def _decode_secret(section: _Section, key: str, data: bytes) -> str:
    try:
        return _strip_newline(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise section.error(key, "the secret is not UTF-8 text", "store it as plain text") from None


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
    _check_unknown(source, data)

    def section(name: str) -> _Section:
        return _Section(source, name, data.get(name, {}), base)

    qonic = _qonic_settings(section("qonic"))
    oauth = _oauth_settings(section("oauth"), env, path)
    proxy = _proxy_settings(section("proxy"))
    tok = section("token")
    token = TokenSettings(
        cache_file=tok.path("cache_file") or platformdirs.user_state_path(APP_NAME) / "token.json",
        refresh_margin=tok.seconds("refresh_margin", DEFAULT_REFRESH_MARGIN, allow_zero=True),
    )
    return Config(path=path, qonic=qonic, oauth=oauth, proxy=proxy, token=token)


def _qonic_settings(sec: _Section) -> QonicSettings:
    api_url = _https_url(
        sec, "api_url", sec.string("api_url", DEFAULT_API_URL) or "", origin_only=True
    )
    urls = {}
    for key, suffix in (("authorize_url", AUTHORIZE_PATH), ("token_url", TOKEN_PATH)):
        raw = sec.string(key)
        if raw is None:
            urls[key] = api_url + suffix
        else:
            urls[key] = _https_url(sec, key, raw, origin_only=False)
    ca_file = sec.path("ca_file")
    if ca_file is not None:
        pem = sec.readable_file("ca_file", ca_file, "a PEM file of CA certificates")
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise sec.error(
                "ca_file",
                f"{ca_file} holds no PEM certificate",
                "point it at a PEM bundle (-----BEGIN CERTIFICATE----- blocks)",
            )
    return QonicSettings(api_url=api_url, ca_file=ca_file, **urls)


def _oauth_settings(sec: _Section, env: Mapping[str, str], path: Path | None) -> OAuthSettings:
    client_id = sec.string("client_id")
    if client_id is None:
        raise sec.error(
            "client_id",
            "is missing",
            "set it to your application's client ID from Qonic's developer portal",
        )
    if not client_id.strip() or any(ch.isspace() or ord(ch) < 0x20 for ch in client_id):
        raise sec.error(
            "client_id", "is empty or contains spaces", "copy the client ID from Qonic exactly"
        )
    if client_id == EXAMPLE_CLIENT_ID:
        log.warning(
            "%s: [oauth] client_id is still the example placeholder %r; set it to your "
            "application's client ID, or logins will fail",
            sec.source,
            client_id,
        )
    scopes: list[str] = []
    for scope in sec.string_list("scopes", DEFAULT_SCOPES):
        if scope not in KNOWN_SCOPES:
            raise sec.error(
                "scopes", f"unknown scope {scope!r}", f"choose from {' '.join(KNOWN_SCOPES)}"
            )
        if scope not in scopes:
            scopes.append(scope)
    secret, secret_source = _client_secret(sec, env, path)
    return OAuthSettings(
        client_id=client_id,
        client_secret=secret,
        secret_source=secret_source,
        scopes=tuple(scopes),
        redirect_uri=_redirect_uri(
            sec, "redirect_uri", sec.string("redirect_uri", DEFAULT_REDIRECT_URI) or ""
        ),
        open_browser=sec.boolean("open_browser", True),
        login_timeout=sec.seconds("login_timeout", DEFAULT_LOGIN_TIMEOUT, allow_zero=False),
    )


def _proxy_settings(sec: _Section) -> ProxySettings:
    listen_host, loopback = _listen_host(
        sec, "listen_host", sec.string("listen_host", DEFAULT_LISTEN_HOST) or ""
    )
    port = sec.integer("port", DEFAULT_PORT, 0, 65535)
    forward_port = sec.integer("forward_port", 0, 0, 65535)
    if forward_port and forward_port == port:
        raise sec.error(
            "forward_port",
            f"{forward_port} is the same as [proxy] port",
            "give forward mode its own port, or 0 to turn it off",
        )
    allowed: list[str] = []
    for name in sec.string_list("allowed_hosts", DEFAULT_ALLOWED_HOSTS):
        host = _allowed_host(sec, "allowed_hosts", name)
        if host not in allowed:
            allowed.append(host)
    client_key_file = sec.path("client_key_file")
    if not loopback:
        if client_key_file is None:
            raise sec.error(
                "listen_host",
                f"{listen_host!r} is not a loopback address",
                "set [proxy] client_key_file so other machines must present a key, "
                "or listen on 127.0.0.1",
            )
        log.warning(
            "%s: [proxy] listen_host %s is not a loopback address: other machines can reach the "
            "proxy and must present the client key; add the names they use to allowed_hosts",
            sec.source,
            listen_host,
        )
    ca_dir = sec.path("ca_dir") or platformdirs.user_data_path(APP_NAME) / "ca"
    return ProxySettings(
        listen_host=listen_host,
        port=port,
        forward_port=forward_port,
        allowed_hosts=tuple(allowed),
        client_key_file=client_key_file,
        ca_dir=ca_dir,
    )
