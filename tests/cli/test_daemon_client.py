"""Talking to the running daemon: /-/health, the pending login's URL, the client key."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from qonic_proxy.access import peer
from qonic_proxy.cli import daemon_client
from qonic_proxy.cli.daemon_client import (
    ForeignListener,
    daemon_health,
    daemon_login_url,
    expect_owner,
    fetch_health,
    key_header,
)
from qonic_proxy.config.loader import load_config
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.proxy.client_key import KEY_HEADER
from qonic_proxy.records import replace
from tests.cli.fake_daemon import AUTHORIZE_URL, fake_daemon, health_answer
from tests.cli.helpers import write_config


def test_no_daemon_means_no_health(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path))
    assert daemon_health(cfg) is None
    off = replace(cfg, proxy=replace(cfg.proxy, port=0))
    assert daemon_health(off) is None
    with pytest.raises(QonicProxyError, match="cannot reach the running qonic-proxy"):
        daemon_login_url(cfg)


def test_health_of_a_running_daemon_also_when_it_waits_for_a_login(tmp_path: Path) -> None:
    with fake_daemon() as daemon:
        daemon.health.update(health_answer("https://api.qonic.com", daemon.port,
                                           forward_port=None, logged_in=False))
        cfg = load_config(write_config(tmp_path, port=daemon.port))
        assert daemon_health(cfg) == daemon.health  # answered with 503
        daemon.health["logged_in"] = True
        health = daemon_health(cfg)
        assert health is not None and health["logged_in"] is True


def test_something_else_on_the_port_is_no_daemon(tmp_path: Path) -> None:
    with fake_daemon() as daemon:
        daemon.health.update({"unexpected": True})
        cfg = load_config(write_config(tmp_path, port=daemon.port))
        assert daemon_health(cfg) == {"unexpected": True}  # the caller checks "listeners"
        daemon.health.clear()
        daemon.health.update(logged_in=True)
        assert daemon_health(cfg) == {"logged_in": True}


def test_login_url_is_the_redirect_location(tmp_path: Path) -> None:
    with fake_daemon({"logged_in": False}) as daemon:
        cfg = load_config(write_config(tmp_path, port=daemon.port))
        assert daemon_login_url(cfg) == AUTHORIZE_URL
        daemon.login_status = 404
        with pytest.raises(QonicProxyError, match=r"did not offer a login \(404\)"):
            daemon_login_url(cfg)
        daemon.login_status = 200
        with pytest.raises(QonicProxyError, match="did not offer a login; see its log"):
            daemon_login_url(cfg)


def test_the_client_key_is_presented(tmp_path: Path) -> None:
    key_file = tmp_path / "client.key"
    key_file.write_text("k" * 32 + "\n")
    key_file.chmod(0o600)
    with fake_daemon({"logged_in": True}) as daemon:
        cfg = load_config(write_config(tmp_path, port=daemon.port, client_key_file=key_file))
        assert key_header(cfg) == {KEY_HEADER: "k" * 32}
        daemon_health(cfg)
        path, headers = daemon.requests[-1]
        assert path == "/-/health"
        assert headers[KEY_HEADER] == "k" * 32
    key_file.unlink()
    assert key_header(cfg) == {}  # unreadable: ask without it (the daemon will say 401)


def somebody_else() -> pwd.struct_passwd:
    """An account other than ours (and not root), for a listener the kernel says it holds."""
    for entry in pwd.getpwall():
        if entry.pw_uid not in (os.getuid(), 0):
            return entry
    pytest.skip("needs a second account in the password database")


def test_a_port_held_by_another_account_gets_nothing(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    other = somebody_else()
    key_file = tmp_path / "client.key"
    key_file.write_text("k" * 32 + "\n")
    key_file.chmod(0o600)
    monkeypatch.setattr(peer, "listener_uid", lambda sock: other.pw_uid)
    with fake_daemon({"logged_in": True}) as daemon:
        cfg = load_config(write_config(tmp_path, port=daemon.port, client_key_file=key_file))
        with pytest.raises(ForeignListener) as info:
            fetch_health(cfg)
        assert str(info.value) == (
            f"port {daemon.port} on 127.0.0.1 is held by account {other.pw_name} "
            f"(uid {other.pw_uid}), not by this config's qonic-proxy (which runs as account "
            f"{pwd.getpwuid(os.getuid()).pw_name} (uid {os.getuid()})), so nothing was sent to "
            "it; stop that program, or start qonic-proxy on a free [proxy] port")
        assert info.value.holder == other.pw_uid
        assert daemon_health(cfg) is None and daemon_health(cfg) is None
        with pytest.raises(ForeignListener):
            daemon_login_url(cfg)
        assert daemon.requests == []  # not even the request line, let alone the key
    assert capsys.readouterr().err.count(f"is held by account {other.pw_name}") == 1  # once


@pytest.mark.parametrize("who", ["expected", "root", "service"])
def test_the_daemons_own_account_root_and_the_units_account_are_trusted(
        who: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = somebody_else()
    holder = {"expected": other.pw_uid, "root": 0, "service": other.pw_uid}[who]
    monkeypatch.setattr(peer, "listener_uid", lambda sock: holder)
    if who == "service":
        monkeypatch.setattr(daemon_client, "SERVICE_ACCOUNT", other.pw_name)
    with fake_daemon({"logged_in": True}) as daemon:
        cfg = load_config(write_config(tmp_path, port=daemon.port))
        if who == "expected":
            expect_owner(cfg, other.pw_uid)  # as discovery does from the runtime file
        assert daemon_health(cfg) == {"logged_in": True}


def test_an_unidentified_listener_is_not_trusted(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peer, "listener_uid", lambda sock: None)
    with fake_daemon({"logged_in": True}) as daemon:
        cfg = load_config(write_config(tmp_path, port=daemon.port))
        with pytest.raises(ForeignListener, match="held by an account outside this user "
                                                  "namespace"):
            fetch_health(cfg)
        assert daemon.requests == []


def test_answers_are_read_whole_chunked_or_not_and_no_header_carries_a_line_break(
        tmp_path: Path) -> None:
    with fake_daemon({"logged_in": True}) as daemon:
        cfg = load_config(write_config(tmp_path, port=daemon.port))
        answer = daemon_client.request(cfg, "GET", "/-/login", timeout=5)
        assert (answer.status, answer.headers["location"], answer.body) == (302, AUTHORIZE_URL,
                                                                           b"")
        with pytest.raises(ValueError, match="line break"):
            daemon_client.request(cfg, "POST", "/-/login/paste", timeout=5,
                                  headers={"X-Address": "a\r\nHost: evil.example"})
        assert [path for path, _ in daemon.requests] == ["/-/login"]
    assert daemon_client._unchunked(b"5\r\nhello\r\n6;x=1\r\n world\r\n0\r\n\r\n") == \
        b"hello world"
