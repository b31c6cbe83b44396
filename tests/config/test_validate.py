"""Tests for qonic_proxy.config.validate: https URLs, redirect URI, listen and allowed hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from qonic_proxy.config import validate
from qonic_proxy.config.fields import Section
from qonic_proxy.errors import ConfigError
from tests.config.support import SECRET, config_error, minimal, parse


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://api.qonic.com", "https://api.qonic.com"),
        ("HTTPS://API.Qonic.COM/", "https://api.qonic.com"),
        ("https://api.qonic.com:443/", "https://api.qonic.com"),
        ("https://127.0.0.1:8443", "https://127.0.0.1:8443"),
        ("https://[::1]:9443/", "https://[::1]:9443"),
        ("https://[0:0::1]", "https://[::1]"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
    ],
)
def test_api_url_normalised(given: str, expected: str) -> None:
    qonic = parse(minimal(qonic={"api_url": given})).qonic
    assert qonic.api_url == expected
    assert qonic.authorize_url == expected + "/v1/auth/authorize"
    assert qonic.token_url == expected + "/v1/auth/token"


def test_oauth_urls_can_be_overridden_and_are_normalised() -> None:
    qonic = parse(
        minimal(
            qonic={
                "authorize_url": "HTTPS://Auth.Example:443/oauth/authorize",
                "token_url": "https://auth.example:8443/oauth/token",
            }
        )
    ).qonic
    assert qonic.api_url == "https://api.qonic.com"
    assert qonic.authorize_url == "https://auth.example/oauth/authorize"
    assert qonic.token_url == "https://auth.example:8443/oauth/token"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://api.qonic.com", "must use https:// (http:// only for a loopback host)"),
        ("http://127.0.0.2.nip.io:8080", "must use https:// (http:// only for a loopback host)"),
        ("ftp://api.qonic.com", "must use https://"),
        ("https://api.qonic.com/v1", "must be an origin without a path"),
        ("https://api.qonic.com/?x=1", "query or fragment"),
        ("https://api.qonic.com#top", "query or fragment"),
        ("https://", "host name is missing or invalid"),
        ("https://exa_mple..com", "host name is missing or invalid"),
        ("https://api.qonic.com:99999", "not a valid URL"),
        ("https://api.qonic.com:0", "port 0"),
        ("https://api.qonic .com", "spaces"),
        ("", "empty"),
    ],
)
def test_api_url_errors(url: str, fragment: str) -> None:
    message = config_error(minimal(qonic={"api_url": url}), "qonic", "api_url")
    assert fragment in message


def test_api_url_userinfo_is_rejected_without_echoing_it() -> None:
    message = config_error(
        minimal(qonic={"api_url": f"https://me:{SECRET}@api.qonic.com"}), "qonic", "api_url"
    )
    assert "user name or password" in message
    assert SECRET not in message


@pytest.mark.parametrize("key", ["authorize_url", "token_url"])
def test_oauth_urls_must_be_https(key: str) -> None:
    message = config_error(minimal(qonic={key: "http://api.qonic.com/x"}), "qonic", key)
    assert "https" in message


@pytest.mark.parametrize(
    "uri",
    [
        "http://localhost:8765/callback",
        "http://127.0.0.1:1/cb",
        "http://[::1]:8765/callback",
        "http://localhost:8765/",
    ],
)
def test_redirect_uri_valid_kept_verbatim(uri: str) -> None:
    assert parse(minimal(oauth={"redirect_uri": uri})).oauth.redirect_uri == uri


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("https://localhost:8765/callback", "must use http://"),
        ("http://example.com:8765/callback", "localhost, 127.0.0.1 or [::1]"),
        ("http://127.0.0.2:8765/callback", "localhost, 127.0.0.1 or [::1]"),
        ("http://localhost/callback", "explicit port"),
        ("http://localhost:0/callback", "explicit port"),
        ("http://localhost:8765", "needs a path"),
        ("http://localhost:8765/callback#x", "fragment"),
        ("http://localhost:8765/callback?a=b", "query"),
        (f"http://u:{SECRET}@localhost:8765/callback", "user info"),
        ("http://localhost:99999/callback", "not a valid URL"),
    ],
)
def test_redirect_uri_errors(uri: str, fragment: str) -> None:
    message = config_error(minimal(oauth={"redirect_uri": uri}), "oauth", "redirect_uri")
    assert fragment in message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("localhost", "localhost"),
        ("LocalHost", "localhost"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("127.0.0.2", "127.0.0.2"),
    ],
)
def test_listen_host_loopback(given: str, expected: str) -> None:
    assert parse(minimal(proxy={"listen_host": given})).proxy.listen_host == expected


def test_listen_host_invalid() -> None:
    message = config_error(minimal(proxy={"listen_host": "my.host"}), "proxy", "listen_host")
    assert "not an IP address" in message


def test_allowed_hosts_normalised() -> None:
    hosts = ["LOCALHOST:8080", "[::1]:8080", "[::1]", "Example.COM", "127.0.0.1", "bücher.de"]
    proxy = parse(minimal(proxy={"allowed_hosts": hosts})).proxy
    expected = ("localhost", "::1", "example.com", "127.0.0.1", "xn--bcher-kva.de")
    assert proxy.allowed_hosts == expected


@pytest.mark.parametrize("bad", ["*", "a b", "host:port", "[::1", "", "[::1]x"])
def test_allowed_hosts_errors(bad: str) -> None:
    message = config_error(minimal(proxy={"allowed_hosts": [bad]}), "proxy", "allowed_hosts")
    assert "is not a host name or IP address" in message


SEC = Section("v.toml", "proxy", {}, Path("/"))


def test_validators_directly() -> None:
    assert validate.https_url(SEC, "k", "https://A.example:443/x/", origin_only=False) == (
        "https://a.example/x/"
    )
    assert validate.listen_host(SEC, "k", "[::1]") == ("::1", True)
    assert validate.listen_host(SEC, "k", "10.0.0.1") == ("10.0.0.1", False)
    assert validate.allowed_host(SEC, "k", "[::1]:80") == "::1"
    uri = "http://127.0.0.1:9/cb"
    assert validate.redirect_uri(SEC, "k", uri) == uri


@pytest.mark.parametrize("key", ["listen_host", "allowed_hosts", "redirect_uri"])
def test_validators_never_echo_user_info(key: str) -> None:
    check = {"listen_host": validate.listen_host, "allowed_hosts": validate.allowed_host,
             "redirect_uri": validate.redirect_uri}[key]
    with pytest.raises(ConfigError) as info:
        check(SEC, key, f"https://me:{SECRET}@api.qonic.com")
    assert SECRET not in str(info.value)
    assert str(info.value).startswith(f"v.toml: [proxy] {key}: ")


@pytest.mark.parametrize(("url", "expected"), [
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("http://localhost:80", "http://localhost"),
    ("HTTP://[::1]:9000/", "http://[::1]:9000"),
])
def test_http_is_accepted_for_a_loopback_api_url(url: str, expected: str) -> None:
    qonic = parse(minimal(qonic={"api_url": url})).qonic
    assert qonic.api_url == expected
    assert qonic.token_url == expected + "/v1/auth/token"


@pytest.mark.parametrize("key", ["authorize_url", "token_url"])
def test_http_is_accepted_for_loopback_oauth_urls(key: str) -> None:
    url = "http://127.0.0.1:9000/oauth/x"
    assert getattr(parse(minimal(qonic={key: url})).qonic, key) == url


# ----- [qonic] upstream_proxy -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("given", "host", "port", "user", "password", "shown"),
    [
        ("http://proxy.example:3128", "proxy.example", 3128, None, None,
         "http://proxy.example:3128"),
        ("HTTP://Proxy.Example:8080/", "proxy.example", 8080, None, None,
         "http://proxy.example:8080"),
        ("http://alice:p%40ss%3Aw@10.0.0.1:3128", "10.0.0.1", 3128, "alice", "p@ss:w",
         "http://***@10.0.0.1:3128"),
        ("http://bob@[::1]:3128", "::1", 3128, "bob", "", "http://***@[::1]:3128"),
    ],
)
def test_upstream_proxy_is_parsed(given: str, host: str, port: int, user: str | None,
                                  password: str | None, shown: str) -> None:
    via = parse(minimal(qonic={"upstream_proxy": given})).qonic.upstream_proxy
    assert via is not None
    assert (via.host, via.port, via.user, via.password) == (host, port, user, password)
    assert str(via) == shown
    if password:
        assert password not in repr(via) and password not in repr(parse(minimal(
            qonic={"upstream_proxy": given})))


def test_no_upstream_proxy_by_default() -> None:
    assert parse(minimal()).qonic.upstream_proxy is None


def test_upstream_proxy_authorization_is_basic() -> None:
    via = parse(minimal(qonic={"upstream_proxy": "http://u:p@h:1"})).qonic.upstream_proxy
    assert via is not None and via.proxy_authorization() == "Basic dTpw"
    plain = parse(minimal(qonic={"upstream_proxy": "http://h:1"})).qonic.upstream_proxy
    assert plain is not None and plain.proxy_authorization() is None


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("https://u:" + SECRET + "@proxy:3128", "must be an http:// proxy URL"),
        ("socks5://proxy:1080", "must be an http:// proxy URL"),
        ("http://u:" + SECRET + "@proxy", "the port is missing"),
        ("http://proxy:0", "the port is missing"),
        ("http://proxy:99999", "bad port"),
        ("http://:3128", "host name is missing"),
        ("http://proxy:3128/path", "must not have a path"),
        ("http://u:" + SECRET + "@proxy:3128/?q=1", "must not have a path"),
        ("http://:" + SECRET + "@proxy:3128", "user name"),
        ("http://proxy :3128", "spaces"),
        ("", "empty"),
    ],
)
def test_bad_upstream_proxy_is_a_config_error_without_the_password(given: str, why: str) -> None:
    message = config_error(minimal(qonic={"upstream_proxy": given}), "qonic", "upstream_proxy")
    assert why in message
    assert SECRET not in message
    assert "http://host:port" in message


def test_upstream_proxy_must_be_a_string() -> None:
    message = config_error(minimal(qonic={"upstream_proxy": 3128}), "qonic", "upstream_proxy")
    assert "a string" in message
