"""Settings checks and the counters' shape; the scope list matches Qonic's."""

from __future__ import annotations

import pytest

from qonic_proxy.qonic import DEFAULT_REDIRECT_URI, KNOWN_SCOPES
from qonic_proxy.sandbox.oauth_routes import SCOPE_DESCRIPTIONS
from qonic_proxy.sandbox.settings import SandboxSettings, check_settings, new_stats


@pytest.mark.parametrize(
    "settings",
    [
        SandboxSettings(host="0.0.0.0"),  # noqa: S104 (that is the point)
        SandboxSettings(host="example.com"),
        SandboxSettings(token_style="kebab"),  # noqa: S106
        SandboxSettings(error_style="mine"),
    ],
)
def test_check_settings_refuses(settings: SandboxSettings) -> None:
    with pytest.raises(ValueError):
        check_settings(settings)


def test_defaults_are_strict_and_loopback() -> None:
    s = SandboxSettings()
    check_settings(s)
    check_settings(SandboxSettings(host="::1"))
    check_settings(SandboxSettings(host="localhost"))
    assert s.redirect_uris == (DEFAULT_REDIRECT_URI,)
    assert s.issue_refresh_tokens and s.rotate_refresh_tokens and not s.auto_consent
    assert "sandbox-secret" not in repr(s)


def test_stats_start_at_zero_and_are_fresh() -> None:
    a, b = new_stats(), new_stats()
    a["token"]["refresh_token"]["ok"] += 1
    assert b["token"]["refresh_token"] == {"ok": 0, "error": 0}
    assert b["api"] == {"ok": 0, "unauthorized": 0, "forbidden": 0}


def test_every_known_scope_has_a_description() -> None:
    assert tuple(SCOPE_DESCRIPTIONS) == KNOWN_SCOPES
