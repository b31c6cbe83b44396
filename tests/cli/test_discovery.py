"""Tests for qonic_proxy.cli.discovery: this config's daemon via the runtime file, no other."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qonic_proxy.access import peer
from qonic_proxy.cli import daemon_client
from qonic_proxy.cli.discovery import with_running_daemon
from qonic_proxy.config.loader import load_config
from qonic_proxy.runtime_file import RuntimeFile, record_for
from tests.cli.fake_daemon import fake_daemon, health_answer
from tests.cli.helpers import write_config


def test_port_zero_finds_the_daemon_through_the_runtime_file(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, port=0), {})
    assert with_running_daemon(cfg).proxy.port == 0
    runtime = RuntimeFile(cfg)
    runtime.claim()
    runtime.write(record_for(cfg, cfg.qonic.api_url, "http://127.0.0.1:4711", 4711, None, 0))
    try:
        assert with_running_daemon(cfg).proxy.port == 4711
    finally:
        runtime.release()


def test_a_daemon_of_another_api_on_our_port_is_ignored(tmp_path: Path) -> None:
    with fake_daemon() as daemon:
        cfg = load_config(write_config(tmp_path, port=daemon.port), {})
        daemon.health = health_answer("https://other.qonic.test", daemon.port, forward_port=None)
        assert with_running_daemon(cfg).proxy.port == 0
        daemon.health = health_answer(cfg.qonic.api_url, daemon.port, forward_port=None)
        assert with_running_daemon(cfg).proxy.port == daemon.port


def test_nothing_answering_keeps_the_configured_port(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path), {})
    assert with_running_daemon(cfg) == cfg


def test_a_port_held_by_another_account_is_no_daemon_of_ours(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    with fake_daemon() as daemon:
        cfg = load_config(write_config(tmp_path, port=daemon.port), {})
        daemon.health = health_answer(cfg.qonic.api_url, daemon.port, forward_port=None)
        monkeypatch.setattr(peer, "listener_uid", lambda sock: 0 if os.getuid() else 1)
        monkeypatch.setattr(daemon_client, "_trusted", lambda holder, expected: False)
        assert with_running_daemon(cfg).proxy.port == 0
        assert "so nothing was sent to it" in capsys.readouterr().err
        assert daemon.requests == []


def test_the_runtime_files_account_is_expected_and_its_api_checked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with fake_daemon() as daemon:
        cfg = load_config(write_config(tmp_path, port=0), {})
        runtime = RuntimeFile(cfg)
        runtime.claim()
        try:
            runtime.write(record_for(cfg, cfg.qonic.api_url, daemon.url, daemon.port, None, 0))
            found = with_running_daemon(cfg)
            assert found.proxy.port == daemon.port
            assert daemon_client.expected_owner(found) == os.getuid()
            assert daemon.requests == []  # the listener is checked on connect alone
            runtime.write(record_for(cfg, "https://other.qonic.test", daemon.url, daemon.port,
                                     None, 0))
            assert with_running_daemon(cfg).proxy.port == 0
            assert "serves https://other.qonic.test, not https://api.qonic.com" in \
                capsys.readouterr().err
        finally:
            runtime.release()
