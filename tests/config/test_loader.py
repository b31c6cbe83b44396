"""Tests for qonic_proxy.config.loader: discovery order, reading the file, TOML errors."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from qonic_proxy.config import loader as cfg
from qonic_proxy.config.loader import find_config_file, load_config
from qonic_proxy.errors import ConfigError
from tests.config.support import EXAMPLE, SECRET, minimal, parse, write


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
        f"create it with `qonic-proxy init --config {tmp_path}/missing.toml` or {fix}"
    )


def test_discovery_rejects_directory_and_empty(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        find_config_file(str(tmp_path), {})
    with pytest.raises(ConfigError, match="--config is empty"):
        find_config_file("", {})


def test_load_none_says_where_it_looked() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {})
    message = str(info.value)
    assert info.value.exit_code == 78
    assert str(cfg.user_config_file()) in message
    assert str(cfg.SYSTEM_CONFIG_FILE) in message
    assert "$QONIC_PROXY_CONFIG" in message
    assert "qonic-proxy init --client-id ID" in message


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
