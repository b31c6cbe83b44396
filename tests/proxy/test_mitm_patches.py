"""The mitmproxy patches know which mitmproxy versions they were checked against."""

from __future__ import annotations

import logging

import pytest
from mitmproxy import version

from qonic_proxy.proxy import mitm_patches


def test_the_installed_mitmproxy_is_a_known_version(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING):
        assert mitm_patches.check_version(version.VERSION)
    assert not caplog.records


def test_an_unknown_version_gets_one_warning_line_not_a_crash(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(mitm_patches, "_version_checked", False)
    with caplog.at_level(logging.WARNING, logger="qonic_proxy.proxy"):
        assert not mitm_patches.check_version("13.0.0")
        assert not mitm_patches.check_version("13.0.0")
        assert not mitm_patches.check_version("10.4.2")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "13.0.0" in message and "11.0.x" in message and "12.x" in message
    assert "\n" not in message


def test_install_checks_the_version_and_is_idempotent(monkeypatch: pytest.MonkeyPatch):
    seen: list[str] = []
    monkeypatch.setattr(mitm_patches, "check_version", lambda: seen.append("checked") or True)
    mitm_patches.install()
    mitm_patches.install()
    assert seen == ["checked", "checked"]
    from mitmproxy.proxy.layers.http import _http1

    assert _http1.make_error_response is mitm_patches.make_json_error_response
