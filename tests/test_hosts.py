"""Tests for qonic_proxy.hosts: one spelling of hosts and origins everywhere."""

from __future__ import annotations

import pytest

from qonic_proxy import hosts
from qonic_proxy.hosts import Origin


@pytest.mark.parametrize(("raw", "expected"), [
    ("API.Qonic.COM.", "api.qonic.com"),
    (" api.qonic.com ", "api.qonic.com"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
])
def test_normalise_host(raw: str, expected: str) -> None:
    assert hosts.normalise_host(raw) == expected


def test_an_unencodable_name_matches_nothing() -> None:
    assert hosts.normalise_host("a" * 70 + "ü.example") == hosts.INVALID_HOST
    assert hosts.normalise_host("") != hosts.INVALID_HOST


@pytest.mark.parametrize(("raw", "expected"), [
    ("Localhost", "localhost"),
    ("0:0::1", "::1"),
    ("127.000.0.1", "127.000.0.1"),  # not an IPv4 literal (leading zeros): a name of digits
    ("10.0.0.1", "10.0.0.1"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("under_score.internal", "under_score.internal"),
    ("-bad.example", None),
    ("a..b", None),
    ("", None),
    ("x" * 254, None),
])
def test_canonical_host(raw: str, expected: str | None) -> None:
    assert hosts.canonical_host(raw) == expected


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost", True), ("127.0.0.1", True), ("127.5.6.7", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0", False), ("10.0.0.1", False),  # noqa: S104 - values, not binds
    ("example.com", False),
])
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert hosts.is_loopback_host(host) is loopback


def test_brackets_and_authority() -> None:
    assert hosts.bracket("::1") == "[::1]"
    assert hosts.bracket("[::1]") == "[::1]"
    assert hosts.bracket("127.0.0.1") == "127.0.0.1"
    assert hosts.authority("::1", 443, "https") == "[::1]"
    assert hosts.authority("::1", 8443, "https") == "[::1]:8443"
    assert hosts.authority("api.qonic.com", 80, "http") == "api.qonic.com"
    assert hosts.authority("api.qonic.com", None, "https") == "api.qonic.com"


@pytest.mark.parametrize(("header", "parsed"), [
    ("localhost", ("localhost", None)), ("localhost:8080", ("localhost", 8080)),
    ("LOCALHOST.", ("localhost", None)), ("127.0.0.1", ("127.0.0.1", None)),
    ("127.0.0.1:65535", ("127.0.0.1", 65535)), ("[::1]", ("::1", None)),
    ("[::1]:8080", ("::1", 8080)), ("[0:0::1]", ("::1", None)),
    ("proxy.example:1", ("proxy.example", 1)),
])
def test_parse_host_header_accepts_names_addresses_and_ports(header: str, parsed: object) -> None:
    assert hosts.parse_host_header(header) == parsed


@pytest.mark.parametrize("header", [
    "", "[::1]evil.example", "[::1]:8080evil", "[localhost]", "[127.0.0.1]", "[::1", "::1",
    "::1:8080", "localhost ", " localhost", "local host", "localhost\t", "localhost\r",
    "localhost\x00", "localhost:", "localhost:abc", "localhost:99999", "localhost:8080:1",
    "localhost:+80", "localhost..", "evil.example/x", "user@localhost", "l\u00f6calhost",
    "localhost:8080 ", "[::1]:", "-bad.example",
])
def test_parse_host_header_refuses_malformed_authorities(header: str) -> None:
    assert hosts.parse_host_header(header) is None


def test_connect_host_for_wildcard_listeners() -> None:
    assert hosts.connect_host("0.0.0.0")  # noqa: S104 == "127.0.0.1"
    assert hosts.connect_host("::") == "[::1]"
    assert hosts.connect_host("::1") == "[::1]"
    assert hosts.connect_host("127.0.0.2") == "127.0.0.2"


def test_display_url_drops_user_info_query_and_fragment() -> None:
    shown = hosts.display_url("https://user:pw@[::1]:8443/v1/auth/token?code=abc#frag")
    assert shown == "https://[::1]:8443/v1/auth/token"
    assert hosts.display_url("https://api.qonic.com") == "https://api.qonic.com"


def test_origin_compares_exact_scheme_host_and_port() -> None:
    api = Origin.parse("https://API.qonic.com.")
    assert api == Origin("https", "api.qonic.com", 443)
    assert str(api) == "https://api.qonic.com"
    assert Origin.parse("https://api.qonic.com:8443") != api
    assert Origin.parse("http://api.qonic.com") != api
    assert str(Origin.parse("https://[::1]:9443")) == "https://[::1]:9443"
    assert Origin.parse("https://[::1]:9443").authority == "[::1]:9443"
