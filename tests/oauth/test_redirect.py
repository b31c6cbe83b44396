"""Tests for qonic_proxy.oauth.redirect: the loopback redirect-URI rules (RFC 8252)."""

from __future__ import annotations

import pytest

from qonic_proxy.oauth.redirect import RedirectUriError, parse_loopback_redirect


def test_localhost_listens_on_both_loopbacks_and_is_kept_verbatim() -> None:
    redirect = parse_loopback_redirect("http://LOCALHOST:8765/callback")
    assert redirect.uri == "http://LOCALHOST:8765/callback"  # compared byte for byte by Qonic
    assert (redirect.host, redirect.port, redirect.path) == ("localhost", 8765, "/callback")
    assert redirect.listen_hosts == ("127.0.0.1",)
    assert redirect.optional_listen_hosts == ("::1",)


@pytest.mark.parametrize(("uri", "host"), [
    ("http://127.0.0.1:9000/cb", "127.0.0.1"), ("http://[::1]:9000/cb", "::1"),
])
def test_ip_literals_listen_only_there(uri: str, host: str) -> None:
    redirect = parse_loopback_redirect(uri)
    assert redirect.listen_hosts == (host,) and redirect.optional_listen_hosts == ()


@pytest.mark.parametrize(("uri", "why"), [
    ("https://localhost:8765/callback", "must use http://"),
    ("http://example.com:8765/callback", "must be on localhost"),
    ("http://localhost/callback", "needs an explicit port"),
    ("http://localhost:0/callback", "needs an explicit port"),
    ("http://localhost:8765", "needs a path"),
    ("http://localhost:99999/cb", "is not a valid URL"),
    ("http://localhost:8765/a b", "spaces or control characters"),
    ("http://localhost:8765/cb?x=1", "user info, a query or a fragment"),
])
def test_refusals_say_what_is_wrong(uri: str, why: str) -> None:
    with pytest.raises(RedirectUriError, match=why):
        parse_loopback_redirect(uri)


@pytest.mark.parametrize("uri", [
    "https://user:pw@localhost:8765/callback",  # fails the scheme too: never quoted
    "http://user:pw@example.com/callback",
    "ftp://localhost:1/cb?token=pw@x",
])
def test_a_uri_with_user_info_or_a_query_is_never_quoted(uri: str) -> None:
    with pytest.raises(RedirectUriError) as caught:
        parse_loopback_redirect(uri)
    assert "pw" not in str(caught.value)
