"""`token` and `status` outside the daemon: reserve before spending, and the unsaved cache."""

from __future__ import annotations

import errno
import time
from pathlib import Path
from typing import Any

import pytest

from qonic_proxy import files
from qonic_proxy.cli import session
from qonic_proxy.cli.status_format import format_status
from qonic_proxy.config.loader import load_config
from qonic_proxy.config.model import Config
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.oauth import client as oauth_client
from qonic_proxy.oauth.tokenset import TokenSet
from tests.cli.helpers import write_config


def tokens(access: str, refresh: str, expires_in: float, *, life: float = 600) -> TokenSet:
    now = time.time()
    return TokenSet(access_token=access, refresh_token=refresh, expires_at=now + expires_in,
                    scopes=(), token_type="Bearer", obtained_at=now + expires_in - life)


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setattr(session, "daemon_health", lambda cfg: None)
    return load_config(write_config(tmp_path))


@pytest.fixture
def spent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def refresh(cfg: Config, refresh_token: str) -> TokenSet:
        calls.append(refresh_token)
        return tokens("a-new", "r-new", 600)

    monkeypatch.setattr(oauth_client, "refresh_tokens", refresh)  # imported when used
    return calls


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "posix_fallocate", full)


def refusal(cfg: Config) -> str:
    return (f"cannot write the token cache {cfg.token.cache_file} (No space left on device); "
            "not refreshing, because the new refresh token could not be kept; free space or "
            "fix the folder's permissions")


def test_a_due_token_is_refreshed_into_the_reserved_space(cfg: Config, spent: list[str]):
    session.store_for(cfg).save(tokens("a-old", "r-old", 10))
    assert session.current_access_token(cfg) == "a-new"
    assert spent == ["r-old"] and session.store_for(cfg).load().refresh_token == "r-new"
    assert sorted(p.name for p in cfg.token.cache_file.parent.iterdir()) == [
        "token.json", "token.json.lock"]


def test_token_refuses_to_refresh_when_the_reservation_fails(
        cfg: Config, spent: list[str], full_disk: None):
    session.store_for(cfg).save(tokens("a-old", "r-old", -5))  # expired
    with pytest.raises(QonicProxyError) as info:
        session.current_access_token(cfg)
    assert str(info.value) == refusal(cfg) and info.value.exit_code == 1
    assert spent == []  # the refresh token was not spent
    assert session.store_for(cfg).load().refresh_token == "r-old"


def test_a_still_valid_token_is_printed_with_the_warning(
        cfg: Config, spent: list[str], full_disk: None, capsys: pytest.CaptureFixture[str]):
    session.store_for(cfg).save(tokens("a-old", "r-old", 10))  # due, valid 10 s more
    assert session.current_access_token(cfg) == "a-old"
    assert capsys.readouterr().err == f"qonic-proxy: {refusal(cfg)}\n"
    assert spent == []


def test_token_does_not_spend_a_refresh_token_the_daemon_replaced(
        cfg: Config, spent: list[str], monkeypatch: pytest.MonkeyPatch):
    session.store_for(cfg).save(tokens("a-old", "r-old", -5))
    health = {"listeners": {}, "cache": {"path": str(cfg.token.cache_file), "saved": False,
                                         "error": "Read-only file system"}}
    monkeypatch.setattr(session, "daemon_health", lambda cfg: health)
    with pytest.raises(QonicProxyError) as info:
        session.current_access_token(cfg)
    assert "(Read-only file system); not refreshing" in str(info.value)
    assert spent == []


def test_status_shows_the_daemons_unsaved_cache(cfg: Config, monkeypatch: pytest.MonkeyPatch):
    session.store_for(cfg).save(tokens("a", "r", 300))
    cache: dict[str, Any] = {"path": str(cfg.token.cache_file), "saved": False,
                             "error": "No space left on device"}
    monkeypatch.setattr(session, "daemon_health", lambda cfg: {
        "status": "ok", "listeners": {"reverse": "http://127.0.0.1:1"}, "pid": 7,
        "cache": cache})
    report = session.status_report(cfg)
    assert report["cache"] == cache
    assert "  cache:         NOT SAVED (No space left on device)" in format_status(report)


def test_status_without_a_daemon_has_a_saved_cache(cfg: Config):
    report = session.status_report(cfg)
    assert report["cache"] == {"path": str(cfg.token.cache_file), "saved": True, "error": None}
    assert "NOT SAVED" not in format_status(report)
