"""Tests for qonic_proxy.config: discovery, defaults, normalisation, errors and secret lookup."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import pytest

from qonic_proxy.config import loader as cfg
from qonic_proxy.config.loader import find_config_file, load_config, parse_config
from qonic_proxy.config.model import Config
from qonic_proxy.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "qonic-proxy.example.toml"
SRC = "/etc/test/config.toml"
SECRET = "s3cr3t-value-never-shown"


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Keep platformdirs and /etc away from the real machine."""
    dirs = {name: tmp_path / "home" / name for name in ("config", "data", "state")}
    monkeypatch.setattr(cfg.platformdirs, "user_config_path", lambda app: dirs["config"] / app)
    monkeypatch.setattr(cfg.platformdirs, "user_data_path", lambda app: dirs["data"] / app)
    monkeypatch.setattr(cfg.platformdirs, "user_state_path", lambda app: dirs["state"] / app)
    monkeypatch.setattr(cfg, "SYSTEM_CONFIG_FILE", tmp_path / "etc" / "qonic-proxy" / "config.toml")
    for var in ("QONIC_PROXY_CONFIG", "QONIC_CLIENT_SECRET", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)
    return dirs


def parse(data: dict, env: dict | None = None, **kw) -> Config:
    return parse_config(data, SRC, env if env is not None else {}, **kw)


def minimal(**sections: dict) -> dict:
    data: dict = {"oauth": {"client_id": "cid"}}
    for name, keys in sections.items():
        data.setdefault(name, {}).update(keys)
    return data


def config_error(data: dict, section: str, key: str, env: dict | None = None, **kw) -> str:
    """Parse, expect ConfigError naming the file and `[section] key`; return the message."""
    with pytest.raises(ConfigError) as info:
        parse(data, env, **kw)
    message = str(info.value)
    assert info.value.exit_code == 78
    assert message.startswith(f"{SRC}: [{section}] {key}: "), message
    assert "; " in message and "\n" not in message
    return message


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


# ---------------------------------------------------------------- discovery


def test_discovery_explicit_wins(tmp_path: Path) -> None:
    explicit = write(tmp_path / "a.toml", "")
    env_file = write(tmp_path / "b.toml", "")
    write(cfg.user_config_file(), "")
    assert find_config_file(str(explicit), {"QONIC_PROXY_CONFIG": str(env_file)}) == explicit


def test_discovery_env_beats_user_file(tmp_path: Path) -> None:
    env_file = write(tmp_path / "b.toml", "")
    write(cfg.user_config_file(), "")
    assert find_config_file(None, {"QONIC_PROXY_CONFIG": str(env_file)}) == env_file


def test_discovery_user_file_beats_system_file() -> None:
    user = write(cfg.user_config_file(), "")
    write(cfg.SYSTEM_CONFIG_FILE, "")
    assert find_config_file(None, {}) == user


def test_discovery_falls_back_to_system_file_then_none() -> None:
    assert find_config_file(None, {}) is None
    system = write(cfg.SYSTEM_CONFIG_FILE, "")
    assert find_config_file(None, {}) == system
    assert find_config_file(None, {"QONIC_PROXY_CONFIG": ""}) == system  # empty = unset


def test_discovery_uses_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = write(tmp_path / "b.toml", "")
    monkeypatch.setenv("QONIC_PROXY_CONFIG", str(env_file))
    assert find_config_file(None) == env_file


def test_discovery_expands_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    target = write(tmp_path / "q.toml", "")
    assert find_config_file("~/q.toml", {}) == target


@pytest.mark.skipif(sys.platform != "linux", reason="XDG_CONFIG_HOME is a Linux convention")
def test_discovery_real_platformdirs_honours_xdg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.undo()  # the real platformdirs this time, pointed away from the real home
    monkeypatch.setattr(cfg, "SYSTEM_CONFIG_FILE", tmp_path / "none.toml")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    target = write(tmp_path / "xdg" / "qonic-proxy" / "config.toml", "")
    assert find_config_file(None, {}) == target


@pytest.mark.parametrize(
    ("explicit", "env", "fix"),
    [
        ("{d}/missing.toml", {}, "fix --config"),
        (None, {"QONIC_PROXY_CONFIG": "{d}/missing.toml"}, "fix $QONIC_PROXY_CONFIG"),
    ],
)
def test_discovery_named_file_must_exist(tmp_path: Path, explicit, env, fix) -> None:
    explicit = explicit and explicit.format(d=tmp_path)
    env = {k: v.format(d=tmp_path) for k, v in env.items()}
    write(cfg.user_config_file(), "")  # must not be used as a silent fallback
    with pytest.raises(ConfigError) as info:
        find_config_file(explicit, env)
    assert info.value.exit_code == 78
    assert str(info.value) == (
        f"config file {tmp_path}/missing.toml does not exist; "
        f"create it from config/qonic-proxy.example.toml or {fix}"
    )


def test_discovery_rejects_directory_and_empty(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        find_config_file(str(tmp_path), {})
    with pytest.raises(ConfigError, match="--config is empty"):
        find_config_file("", {})


# ---------------------------------------------------------------- load_config


def test_load_none_says_where_it_looked() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {})
    message = str(info.value)
    assert info.value.exit_code == 78
    assert str(cfg.user_config_file()) in message
    assert str(cfg.SYSTEM_CONFIG_FILE) in message
    assert "$QONIC_PROXY_CONFIG" in message
    assert "config/qonic-proxy.example.toml" in message


def test_load_reports_toml_syntax_error_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", '[oauth]\nclient_id = "x"\nscopes = [\n"a" "b"]\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    message = str(info.value)
    assert info.value.exit_code == 78
    assert message.startswith(f"{path}: line 4")
    assert "invalid TOML" in message and "Unclosed array" in message


def test_load_syntax_error_at_end_of_document(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", '[oauth]\nclient_id = "x\n')
    with pytest.raises(ConfigError, match=r": line 2.*invalid TOML"):
        load_config(path, {})


def test_load_syntax_error_does_not_echo_secret(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", f'[oauth]\nclient_secret = "{SECRET}"\nclient_id = \n')
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_load_rejects_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[oauth]\nclient_id = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"line 2: the file is not UTF-8"):
        load_config(path, {})


def test_load_accepts_bom_and_records_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "c.toml").write_bytes(b'\xef\xbb\xbf[oauth]\nclient_id = "cid"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("c.toml"), {})
    assert config.path == tmp_path / "c.toml"
    assert config.oauth.client_id == "cid"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads everything")
def test_load_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", '[oauth]\nclient_id = "x"\n', mode=0o000)
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(path, {})


def test_load_resolves_relative_paths_against_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    write(conf_dir / "secret.txt", SECRET + "\n")
    write(conf_dir / "ca.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    path = write(
        conf_dir / "config.toml",
        '[qonic]\nca_file = "ca.pem"\n'
        '[oauth]\nclient_id = "cid"\nclient_secret_file = "secret.txt"\n'
        '[proxy]\nca_dir = "mitm"\nclient_key_file = "keys/client.key"\n'
        '[token]\ncache_file = "state/token.json"\n',
    )
    monkeypatch.chdir(tmp_path)  # cwd must not matter
    config = load_config(path, {})
    assert config.qonic.ca_file == conf_dir / "ca.pem"
    assert config.oauth.client_secret == SECRET
    assert config.oauth.secret_source == "file"
    assert config.proxy.ca_dir == conf_dir / "mitm"
    assert config.proxy.client_key_file == conf_dir / "keys" / "client.key"
    assert config.token.cache_file == conf_dir / "state" / "token.json"


def test_paths_expand_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = parse(minimal(token={"cache_file": "~/t.json"}), config_dir=Path("/nowhere"))
    assert config.token.cache_file == tmp_path / "t.json"


# ---------------------------------------------------------------- defaults and normalisation


def test_defaults(isolated_dirs: dict[str, Path]) -> None:
    config = parse(minimal())
    assert config.path is None
    assert config.qonic.api_url == "https://api.qonic.com"
    assert config.qonic.authorize_url == "https://api.qonic.com/v1/auth/authorize"
    assert config.qonic.token_url == "https://api.qonic.com/v1/auth/token"
    assert config.qonic.ca_file is None
    oauth = config.oauth
    assert (oauth.client_id, oauth.client_secret, oauth.secret_source) == ("cid", None, "none")
    assert oauth.scopes == ("projects:read", "models:read")
    assert oauth.redirect_uri == "http://localhost:8765/callback"
    assert oauth.open_browser is True
    assert oauth.login_timeout == 300.0
    proxy = config.proxy
    assert (proxy.listen_host, proxy.port, proxy.forward_port) == ("127.0.0.1", 8080, 0)
    assert proxy.allowed_hosts == ("localhost", "127.0.0.1", "::1")
    assert proxy.client_key_file is None
    assert proxy.ca_dir == isolated_dirs["data"] / "qonic-proxy" / "ca"
    assert config.token.cache_file == isolated_dirs["state"] / "qonic-proxy" / "token.json"
    assert config.token.refresh_margin == 60.0


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://api.qonic.com", "https://api.qonic.com"),
        ("HTTPS://API.Qonic.COM/", "https://api.qonic.com"),
        ("https://api.qonic.com:443/", "https://api.qonic.com"),
        ("https://127.0.0.1:8443", "https://127.0.0.1:8443"),
        ("https://[::1]:9443/", "https://[::1]:9443"),
        ("https://[0:0::1]", "https://[::1]"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
    ],
)
def test_api_url_normalised(given: str, expected: str) -> None:
    qonic = parse(minimal(qonic={"api_url": given})).qonic
    assert qonic.api_url == expected
    assert qonic.authorize_url == expected + "/v1/auth/authorize"
    assert qonic.token_url == expected + "/v1/auth/token"


def test_oauth_urls_can_be_overridden_and_are_normalised() -> None:
    qonic = parse(
        minimal(
            qonic={
                "authorize_url": "HTTPS://Auth.Example:443/oauth/authorize",
                "token_url": "https://auth.example:8443/oauth/token",
            }
        )
    ).qonic
    assert qonic.api_url == "https://api.qonic.com"
    assert qonic.authorize_url == "https://auth.example/oauth/authorize"
    assert qonic.token_url == "https://auth.example:8443/oauth/token"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://api.qonic.com", "must use https://"),
        ("ftp://api.qonic.com", "must use https://"),
        ("https://api.qonic.com/v1", "must be an origin without a path"),
        ("https://api.qonic.com/?x=1", "query or fragment"),
        ("https://api.qonic.com#top", "query or fragment"),
        ("https://", "host name is missing or invalid"),
        ("https://exa_mple..com", "host name is missing or invalid"),
        ("https://api.qonic.com:99999", "not a valid URL"),
        ("https://api.qonic.com:0", "port 0"),
        ("https://api.qonic .com", "spaces"),
        ("", "empty"),
    ],
)
def test_api_url_errors(url: str, fragment: str) -> None:
    message = config_error(minimal(qonic={"api_url": url}), "qonic", "api_url")
    assert fragment in message


def test_api_url_userinfo_is_rejected_without_echoing_it() -> None:
    message = config_error(
        minimal(qonic={"api_url": f"https://me:{SECRET}@api.qonic.com"}), "qonic", "api_url"
    )
    assert "user name or password" in message
    assert SECRET not in message


@pytest.mark.parametrize("key", ["authorize_url", "token_url"])
def test_oauth_urls_must_be_https(key: str) -> None:
    message = config_error(minimal(qonic={key: "http://api.qonic.com/x"}), "qonic", key)
    assert "https" in message


def test_ca_file(tmp_path: Path) -> None:
    pem = write(tmp_path / "ca.pem", "-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n")
    assert parse(minimal(qonic={"ca_file": str(pem)})).qonic.ca_file == pem
    message = config_error(
        minimal(qonic={"ca_file": "nope.pem"}), "qonic", "ca_file", config_dir=tmp_path
    )
    assert f"{tmp_path / 'nope.pem'} does not exist" in message
    junk = write(tmp_path / "junk.pem", "not a certificate")
    assert "no PEM certificate" in config_error(
        minimal(qonic={"ca_file": str(junk)}), "qonic", "ca_file"
    )
    assert "is a directory" in config_error(
        minimal(qonic={"ca_file": str(tmp_path)}), "qonic", "ca_file"
    )


# ---------------------------------------------------------------- [oauth]


def test_client_id_required_and_checked() -> None:
    assert "is missing" in config_error({}, "oauth", "client_id")
    assert "is missing" in config_error({"oauth": {}}, "oauth", "client_id")
    assert "empty" in config_error({"oauth": {"client_id": ""}}, "oauth", "client_id")
    assert "spaces" in config_error({"oauth": {"client_id": "a b"}}, "oauth", "client_id")
    message = config_error({"oauth": {"client_id": 42}}, "oauth", "client_id")
    assert "expected a string in quotes, got an integer" in message


def test_placeholder_client_id_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="qonic_proxy.config"):
        parse({"oauth": {"client_id": "your-client-id"}})
    assert "placeholder" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qonic_proxy.config"):
        parse(minimal())
    assert caplog.text == ""


def test_scopes() -> None:
    every = list(cfg.KNOWN_SCOPES)
    assert parse(minimal(oauth={"scopes": every})).oauth.scopes == tuple(every)
    deduped = parse(minimal(oauth={"scopes": ["models:read", "models:read"]})).oauth.scopes
    assert deduped == ("models:read",)
    message = config_error(minimal(oauth={"scopes": ["models:admin"]}), "oauth", "scopes")
    assert "'models:admin'" in message and "projects:read" in message
    assert "an array of strings" in config_error(
        minimal(oauth={"scopes": "models:read"}), "oauth", "scopes"
    )
    assert "an array of strings" in config_error(
        minimal(oauth={"scopes": ["models:read", 1]}), "oauth", "scopes"
    )
    assert "empty" in config_error(minimal(oauth={"scopes": []}), "oauth", "scopes")


@pytest.mark.parametrize(
    "uri",
    [
        "http://localhost:8765/callback",
        "http://127.0.0.1:1/cb",
        "http://[::1]:8765/callback",
        "http://localhost:8765/",
    ],
)
def test_redirect_uri_valid_kept_verbatim(uri: str) -> None:
    assert parse(minimal(oauth={"redirect_uri": uri})).oauth.redirect_uri == uri


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("https://localhost:8765/callback", "must use http://"),
        ("http://example.com:8765/callback", "localhost, 127.0.0.1 or [::1]"),
        ("http://127.0.0.2:8765/callback", "localhost, 127.0.0.1 or [::1]"),
        ("http://localhost/callback", "explicit port"),
        ("http://localhost:0/callback", "explicit port"),
        ("http://localhost:8765", "needs a path"),
        ("http://localhost:8765/callback#x", "fragment"),
        ("http://localhost:8765/callback?a=b", "query"),
        (f"http://u:{SECRET}@localhost:8765/callback", "user info"),
        ("http://localhost:99999/callback", "not a valid URL"),
    ],
)
def test_redirect_uri_errors(uri: str, fragment: str) -> None:
    message = config_error(minimal(oauth={"redirect_uri": uri}), "oauth", "redirect_uri")
    assert fragment in message
    assert SECRET not in message


def test_open_browser_must_be_bool() -> None:
    assert parse(minimal(oauth={"open_browser": False})).oauth.open_browser is False
    for bad in ("yes", 1):
        message = config_error(minimal(oauth={"open_browser": bad}), "oauth", "open_browser")
        assert "expected true or false" in message


def test_login_timeout() -> None:
    assert parse(minimal(oauth={"login_timeout": 5})).oauth.login_timeout == 5.0
    assert parse(minimal(oauth={"login_timeout": 0.5})).oauth.login_timeout == 0.5
    for bad in (0, -1, float("nan"), float("inf")):
        message = config_error(minimal(oauth={"login_timeout": bad}), "oauth", "login_timeout")
        assert "use a number > 0" in message
    for bad in (True, "300"):
        message = config_error(minimal(oauth={"login_timeout": bad}), "oauth", "login_timeout")
        assert "expected a number of seconds" in message


# ---------------------------------------------------------------- [proxy] and [token]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("localhost", "localhost"),
        ("LocalHost", "localhost"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("127.0.0.2", "127.0.0.2"),
    ],
)
def test_listen_host_loopback(given: str, expected: str) -> None:
    assert parse(minimal(proxy={"listen_host": given})).proxy.listen_host == expected


def test_listen_host_invalid() -> None:
    message = config_error(minimal(proxy={"listen_host": "my.host"}), "proxy", "listen_host")
    assert "not an IP address" in message


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5"])  # noqa: S104
def test_listen_host_non_loopback_needs_client_key(
    host: str, caplog: pytest.LogCaptureFixture
) -> None:
    message = config_error(minimal(proxy={"listen_host": host}), "proxy", "listen_host")
    assert (
        "is not a loopback address; set [proxy] client_key_file so other machines must "
        "present a key, or listen on 127.0.0.1" in message
    )
    with caplog.at_level(logging.WARNING, logger="qonic_proxy.config"):
        config = parse(minimal(proxy={"listen_host": host, "client_key_file": "/k/client.key"}))
    assert config.proxy.client_key_file == Path("/k/client.key")
    assert "not a loopback address" in caplog.text


def test_ports() -> None:
    proxy = parse(minimal(proxy={"port": 0, "forward_port": 0})).proxy
    assert (proxy.port, proxy.forward_port) == (0, 0)
    proxy = parse(minimal(proxy={"port": 9000, "forward_port": 9001})).proxy
    assert (proxy.port, proxy.forward_port) == (9000, 9001)
    assert "out of range" in config_error(minimal(proxy={"port": 70000}), "proxy", "port")
    assert "out of range" in config_error(minimal(proxy={"port": -1}), "proxy", "port")
    assert "expected an integer, got a boolean" in config_error(
        minimal(proxy={"port": True}), "proxy", "port"
    )
    assert "expected an integer, got a string" in config_error(
        minimal(proxy={"port": "8080"}), "proxy", "port"
    )
    assert "expected an integer, got a float" in config_error(
        minimal(proxy={"forward_port": 8081.0}), "proxy", "forward_port"
    )
    message = config_error(minimal(proxy={"forward_port": 8080}), "proxy", "forward_port")
    assert "same as [proxy] port" in message


def test_allowed_hosts_normalised() -> None:
    hosts = ["LOCALHOST:8080", "[::1]:8080", "[::1]", "Example.COM", "127.0.0.1", "bücher.de"]
    proxy = parse(minimal(proxy={"allowed_hosts": hosts})).proxy
    expected = ("localhost", "::1", "example.com", "127.0.0.1", "xn--bcher-kva.de")
    assert proxy.allowed_hosts == expected


@pytest.mark.parametrize("bad", ["*", "a b", "host:port", "[::1", "", "[::1]x"])
def test_allowed_hosts_errors(bad: str) -> None:
    message = config_error(minimal(proxy={"allowed_hosts": [bad]}), "proxy", "allowed_hosts")
    assert "is not a host name or IP address" in message


def test_token_section() -> None:
    assert parse(minimal(token={"refresh_margin": 0})).token.refresh_margin == 0.0
    assert parse(minimal(token={"refresh_margin": 12.5})).token.refresh_margin == 12.5
    assert "use a number >= 0" in config_error(
        minimal(token={"refresh_margin": -1}), "token", "refresh_margin"
    )
    assert "got an array" in config_error(
        minimal(token={"cache_file": ["x"]}), "token", "cache_file"
    )
    assert "empty" in config_error(minimal(token={"cache_file": " "}), "token", "cache_file")


# ---------------------------------------------------------------- unknown keys and sections


def test_unknown_key_names_file_key_and_suggests() -> None:
    message = config_error(minimal(oauth={"client_ide": "x"}), "oauth", "client_ide")
    assert "unknown key (did you mean client_id?)" in message
    assert "redirect_uri" in message  # lists the valid keys


def test_unknown_section() -> None:
    with pytest.raises(ConfigError) as info:
        parse(minimal(oath={"client_id": "x"}))
    message = str(info.value)
    assert info.value.exit_code == 78
    assert message.startswith(f"{SRC}: [oath]: unknown section (did you mean oauth?)")


def test_top_level_key_and_non_table_section() -> None:
    with pytest.raises(ConfigError, match=r"^/etc/test/config.toml: client_id: unknown top-level"):
        parse({"client_id": "x"})
    with pytest.raises(ConfigError, match=r"\[qonic\]: expected a table, got a string"):
        parse(minimal() | {"qonic": "https://api.qonic.com"})


# ---------------------------------------------------------------- client secret


def secret_setup(tmp_path: Path) -> tuple[dict, dict]:
    """A config and env where every secret source is present, each with a distinct value."""
    creds = tmp_path / "creds"
    write(creds / "client_secret", "from-credential\n", mode=0o400)
    write(tmp_path / "secret.txt", "from-file\n")
    data = minimal(
        oauth={"client_secret_file": str(tmp_path / "secret.txt"), "client_secret": "from-config"}
    )
    env = {"QONIC_CLIENT_SECRET": "from-env", "CREDENTIALS_DIRECTORY": str(creds)}
    return data, env


def test_secret_lookup_order(tmp_path: Path) -> None:
    data, env = secret_setup(tmp_path)
    got = parse(data, env).oauth
    assert (got.client_secret, got.secret_source) == ("from-env", "env")
    del env["QONIC_CLIENT_SECRET"]
    got = parse(data, env).oauth
    assert (got.client_secret, got.secret_source) == ("from-credential", "credential")
    env["CREDENTIALS_DIRECTORY"] = str(tmp_path / "empty-creds")  # no client_secret there
    got = parse(data, env).oauth
    assert (got.client_secret, got.secret_source) == ("from-file", "file")
    del data["oauth"]["client_secret_file"]
    got = parse(data, env).oauth
    assert (got.client_secret, got.secret_source) == ("from-config", "config")
    del data["oauth"]["client_secret"]
    got = parse(data, env).oauth
    assert (got.client_secret, got.secret_source) == (None, "none")


def test_secret_from_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QONIC_CLIENT_SECRET", "from-env")
    assert parse_config(minimal(), SRC).oauth.secret_source == "env"


def test_secret_file_strips_exactly_one_newline(tmp_path: Path) -> None:
    write(tmp_path / "s", "abc\n\n")
    assert (
        parse(minimal(oauth={"client_secret_file": str(tmp_path / "s")})).oauth.client_secret
        == "abc\n"
    )
    write(tmp_path / "s", "abc\r\n")
    assert (
        parse(minimal(oauth={"client_secret_file": str(tmp_path / "s")})).oauth.client_secret
        == "abc"
    )


def test_empty_secrets_are_errors(tmp_path: Path) -> None:
    message = config_error(minimal(), "oauth", "client_secret", {"QONIC_CLIENT_SECRET": ""})
    assert "$QONIC_CLIENT_SECRET is set but empty" in message
    write(tmp_path / "c" / "client_secret", "\n")
    message = config_error(
        minimal(), "oauth", "client_secret", {"CREDENTIALS_DIRECTORY": str(tmp_path / "c")}
    )
    assert "systemd credential" in message and "is empty" in message
    write(tmp_path / "s", "\n")
    config_error(
        minimal(oauth={"client_secret_file": str(tmp_path / "s")}), "oauth", "client_secret_file"
    )
    config_error(minimal(oauth={"client_secret": ""}), "oauth", "client_secret")


def test_secret_file_must_exist(tmp_path: Path) -> None:
    message = config_error(
        minimal(oauth={"client_secret_file": "gone"}),
        "oauth",
        "client_secret_file",
        config_dir=tmp_path,
    )
    assert f"{tmp_path / 'gone'} does not exist" in message
    # The file is only needed when no earlier source supplies the secret.
    env = {"QONIC_CLIENT_SECRET": "x"}
    assert parse(minimal(oauth={"client_secret_file": "gone"}), env).oauth.secret_source == "env"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads everything")
def test_unreadable_secret_file(tmp_path: Path) -> None:
    write(tmp_path / "s", SECRET, mode=0o000)
    message = config_error(
        minimal(oauth={"client_secret_file": str(tmp_path / "s")}), "oauth", "client_secret_file"
    )
    assert "cannot read" in message


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_secret_file_permission_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = minimal(oauth={"client_secret_file": str(tmp_path / "s")})
    write(tmp_path / "s", SECRET, mode=0o600)
    with caplog.at_level(logging.WARNING, logger="qonic_proxy.config"):
        parse(data)
    assert caplog.records == []
    write(tmp_path / "s", SECRET, mode=0o644)
    with caplog.at_level(logging.WARNING, logger="qonic_proxy.config"):
        parse(data)
    assert "can be read by other users (mode 0644)" in caplog.text
    assert SECRET not in caplog.text


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_plain_secret_warning_unless_0600(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "c.toml", f'[oauth]\nclient_id = "cid"\nclient_secret = "{SECRET}"\n')
    with caplog.at_level(logging.WARNING, logger="qonic_proxy.config"):
        config = load_config(path, {})
    assert config.oauth.client_secret == SECRET and config.oauth.secret_source == "config"
    assert caplog.records == []
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="qonic_proxy.config"):
        load_config(path, {})
    assert [r.name for r in caplog.records] == ["qonic_proxy.config"]
    assert "client_secret is stored in plain text" in caplog.text
    assert str(path) in caplog.text
    assert SECRET not in caplog.text


def test_secret_never_in_messages_or_repr(tmp_path: Path) -> None:
    config = parse(minimal(), {"QONIC_CLIENT_SECRET": SECRET})
    assert SECRET not in repr(config)
    assert SECRET not in repr(config.oauth)
    message = config_error(minimal(oauth={"client_secret": 12345}), "oauth", "client_secret")
    assert "12345" not in message


# ---------------------------------------------------------------- example file


def test_example_file_loads_as_shipped() -> None:
    config = load_config(EXAMPLE, {})
    assert config.path == EXAMPLE
    assert config.oauth.client_id == "your-client-id"


def test_example_file_matches_defaults_once_filled(tmp_path: Path) -> None:
    copy = tmp_path / "config.toml"
    shutil.copy(EXAMPLE, copy)
    copy.write_text(copy.read_text().replace('"your-client-id"', '"cid"'))
    loaded = load_config(copy, {})
    defaults = parse(minimal())
    assert loaded.qonic == defaults.qonic
    assert loaded.oauth == defaults.oauth
    assert loaded.proxy == defaults.proxy
    assert loaded.token == defaults.token


def test_example_file_mentions_every_key() -> None:
    text = EXAMPLE.read_text()
    for section, keys in cfg._KEYS.items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"{key} =" in text, key
