"""Tests for qonic_proxy.config.sections: defaults and the rules that span a section's keys."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from qonic_proxy import qonic
from tests.config.support import config_error, minimal, parse, write


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
    every = list(qonic.KNOWN_SCOPES)
    assert parse(minimal(oauth={"scopes": every})).oauth.scopes == tuple(every)
    deduped = parse(minimal(oauth={"scopes": ["models:read", "models:read"]})).oauth.scopes
    assert deduped == ("models:read",)
    message = config_error(minimal(oauth={"scopes": ["models:raed"]}), "oauth", "scopes")
    assert "'models:raed' (did you mean models:read?)" in message and "projects:read" in message
    assert "an array of strings" in config_error(
        minimal(oauth={"scopes": "models:read"}), "oauth", "scopes"
    )
    assert "an array of strings" in config_error(
        minimal(oauth={"scopes": ["models:read", 1]}), "oauth", "scopes"
    )
    assert "empty" in config_error(minimal(oauth={"scopes": []}), "oauth", "scopes")


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


@pytest.mark.parametrize(("scope", "near"), [
    ("project:read", "projects:read"), ("Projects:Read", "projects:read"),
    ("models:raed", "models:read"), ("libraries:wrte", "libraries:write"),
])
def test_a_near_miss_of_a_known_scope_is_an_error(scope: str, near: str) -> None:
    message = config_error(minimal(oauth={"scopes": [scope]}), "oauth", "scopes")
    assert f"(did you mean {near}?)" in message


def test_an_unknown_well_formed_scope_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", "qonic_proxy.config"):
        scopes = parse(minimal(oauth={"scopes": ["projects:read", "models:admin"]})).oauth.scopes
    assert scopes == ("projects:read", "models:admin")
    assert "'models:admin' is not a scope qonic-proxy knows" in caplog.text


@pytest.mark.parametrize("scope", ["a b c", "things:", ":stuff", "a:b\n", "Widgets:Read"])
def test_a_malformed_scope_is_an_error(scope: str) -> None:
    assert "not a well-formed scope" in config_error(
        minimal(oauth={"scopes": [scope]}), "oauth", "scopes")
