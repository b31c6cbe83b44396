"""Tests for qonic_proxy.config.fields: typed readers, their error wording, and `shown`."""

from __future__ import annotations

from pathlib import Path

import pytest

from qonic_proxy.config.fields import Section, may_hold_secret, shown, toml_type
from qonic_proxy.errors import ConfigError
from tests.config.support import config_error, minimal, parse


def test_paths_expand_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = parse(minimal(token={"cache_file": "~/t.json"}), config_dir=Path("/nowhere"))
    assert config.token.cache_file == tmp_path / "t.json"


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


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("my.host", "'my.host'"),
        ("https://user:pw@api.qonic.com", "'https://***@api.qonic.com'"),
        ("https://u:p/w@host/x", "'https://***@host/x'"),  # a '/' in the password
        ("user:pw@host", "'***@host'"),
        ("https://host/p?token=abc#f", "'https://host/p?…'"),
        ("a\nb", "'a\\nb'"),
    ],
)
def test_shown_masks_user_info_and_queries(value: str, expected: str) -> None:
    assert shown(value) == expected
    assert may_hold_secret(value) == ("@" in value)


def test_shown_paths_unquoted_uncut_and_on_one_line(tmp_path: Path) -> None:
    long = tmp_path / ("x" * 200) / "file.pem"
    assert shown(long, quote=False) == str(long)
    assert shown("/a/b\nc", quote=False) == "/a/b\\nc"
    assert shown("/srv/https:/user:pw@host/ca.pem", quote=False) == "***@host/ca.pem"
    assert len(shown("y" * 500)) <= 82


def test_section_readers_name_file_section_and_key(tmp_path: Path) -> None:
    sec = Section("f.toml", "proxy", {"port": "80", "on": True, "p": "rel"}, tmp_path)
    assert sec.has("port") and not sec.has("nope")
    assert sec.boolean("on", False) is True
    assert sec.path("p") == tmp_path / "rel"
    assert sec.string("nope", "d") == "d"
    with pytest.raises(ConfigError) as info:
        sec.integer("port", 1, 0, 65535)
    assert str(info.value) == (
        "f.toml: [proxy] port: expected an integer, got a string; write it as an integer"
    )


@pytest.mark.parametrize(
    ("value", "name"),
    [(True, "a boolean"), (1, "an integer"), (1.5, "a float"), ("s", "a string"),
     ([], "an array"), ({}, "a table"), (None, "a date/time")],
)
def test_toml_type_names(value: object, name: str) -> None:
    assert toml_type(value) == name
