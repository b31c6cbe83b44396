"""The `world` of the wrap tests: one sandbox and one login for the whole package."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qonic_proxy.sandbox.app import Sandbox
from qonic_proxy.sandbox.settings import SandboxSettings
from tests.harness import start_bystander
from tests.wrap.exec_world import (
    BROWSER,
    CLIENT_ID,
    OTHER_HOST,
    SANDBOX_HOST,
    SECRET,
    World,
    free_port,
)


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("exec")
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    sandbox = Sandbox(SandboxSettings(
        host=SANDBOX_HOST, client_id=CLIENT_ID, client_secret=SECRET,
        redirect_uris=(redirect_uri,), auto_consent=True, cert_dir=tmp / "sandbox-tls"))
    sandbox.start()
    other = start_bystander(tmp, OTHER_HOST)
    browser = tmp / "browser.py"
    browser.write_text(BROWSER.format(python=sys.executable))
    browser.chmod(0o700)
    try:
        w = World(tmp, sandbox, other, Path(), browser, redirect_uri)
        w.config = w.write_config("config.toml")
        login = w.cli("login")
        assert login.returncode == 0, login.stderr
        token = w.cli("token")
        assert token.returncode == 0, token.stderr
        w.access_token = token.stdout.strip()
        assert len(w.access_token) >= 20
        yield w
    finally:
        other.stop()
        sandbox.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the shared world start the real daemon and sandbox: mark them e2e."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and "world" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)
