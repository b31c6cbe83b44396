"""End-to-end, as a new user: the sandbox's own config snippet, pasted into `init`'s file, works.

Only the installed console script is used, with a clean HOME; the login goes through the real
loopback callback with the scripted browser.
"""

from __future__ import annotations

import ssl
import urllib.request
from pathlib import Path

import pytest

from tests.cli.user import RunningSandbox, first_login, new_user, sandboxes_fixture  # noqa: F401
from tests.harness import free_port

pytestmark = pytest.mark.e2e


def test_the_snippet_logs_in_and_cert_dir_keeps_the_ca(tmp_path: Path,
                                                       sandboxes: list[RunningSandbox]) -> None:
    user = new_user(tmp_path)
    port, cert_dir = str(free_port()), str(tmp_path / "sandbox-ca")
    sandbox = first_login(user, sandboxes, "--port", port, "--cert-dir", cert_dir)
    assert "sandbox-client" in sandbox.snippet and "survives restarts" not in sandbox.snippet
    ca_before = Path(sandbox.ca_file).read_bytes()
    sandbox.stop()

    again = RunningSandbox(user, "--port", port, "--cert-dir", cert_dir)
    sandboxes.append(again)
    assert (again.url, Path(again.ca_file).read_bytes()) == (sandbox.url, ca_before)
    context = ssl.create_default_context(cafile=again.ca_file)  # the config's CA still verifies
    with urllib.request.urlopen(again.url + "/v1/auth/scopes", context=context, timeout=10) as r:
        assert r.status == 200


def test_plain_http_sandbox_on_loopback_is_accepted(tmp_path: Path,
                                                    sandboxes: list[RunningSandbox]) -> None:
    user = new_user(tmp_path)
    sandbox = first_login(user, sandboxes, "--plain-http")
    assert sandbox.url.startswith("http://127.0.0.1:") and "ca_file" not in sandbox.snippet
