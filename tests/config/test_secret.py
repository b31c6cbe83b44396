"""Tests for qonic_proxy.config.secret: the lookup order, empty and unreadable secrets, warnings."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from qonic_proxy.config.loader import load_config, parse_config
from tests.config.support import SECRET, SRC, config_error, minimal, parse, write


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
