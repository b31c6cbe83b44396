"""Fixtures: sandboxes started on 127.0.0.1 with their own CA, stopped after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from qonic_proxy.sandbox.app import Sandbox
from qonic_proxy.sandbox.settings import SandboxSettings
from tests.sandbox.helpers import Client


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., Client]]:
    started: list[tuple[Sandbox, requests.Session]] = []

    def factory(**settings) -> Client:
        settings.setdefault("cert_dir", tmp_path / f"certs{len(started)}")
        sb = Sandbox(SandboxSettings(**settings))
        sb.start()
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify; no env proxies
        session.verify = str(sb.ca_file) if sb.ca_file else True
        started.append((sb, session))
        return Client(sb, session)

    yield factory
    for sb, session in started:
        session.close()
        sb.stop()


@pytest.fixture
def client(make_client) -> Client:
    return make_client()
