"""Fixtures of the OAuth tests: no proxy variables, a token endpoint, a throwaway TLS CA."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qonic_proxy.sandbox.certs import make_server_tls, server_ssl_context
from tests.oauth.support import FakeEndpoint, LocalTls, fake_endpoint


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start clean: a test that wants proxy variables (to prove they are ignored) sets them."""
    for name in (
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def endpoint() -> Iterator[FakeEndpoint]:
    with fake_endpoint() as ep:
        yield ep


@pytest.fixture(scope="module")
def test_tls(tmp_path_factory: pytest.TempPathFactory) -> LocalTls:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    tls = make_server_tls(tmp_path_factory.mktemp("tls"))
    return LocalTls(ca_file=tls.ca_file, server_context=server_ssl_context(tls))
