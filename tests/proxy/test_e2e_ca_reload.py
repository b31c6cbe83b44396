"""End-to-end: a changed `[qonic] ca_file` counts for API connections without a daemon restart."""

from __future__ import annotations

import signal

import pytest

from tests.harness import DaemonProcess, World, http_request, wait_for

pytestmark = pytest.mark.e2e


def _restart_sandbox_with_a_new_ca(world: World) -> None:
    """Same port, same grants (the daemon's token stays valid), a new CA at the same path."""
    sandbox = world.sandbox
    old_ca = sandbox.ca_file.read_bytes()
    sandbox.settings.port = int(sandbox.url.rsplit(":", 1)[1])
    sandbox.stop()
    sandbox.start()
    assert sandbox.ca_file.read_bytes() != old_ca


def test_api_calls_work_again_after_the_ca_changed(world: World, logged_in: DaemonProcess):
    assert http_request(logged_in.reverse_url + "/v1/projects")[0] == 200
    _restart_sandbox_with_a_new_ca(world)
    status, _, body = http_request(logged_in.reverse_url + "/v1/projects")
    assert status == 200, body
    assert "the CA certificates trusted for the API changed" in logged_in.stderr_text()
    status, _, body = http_request(logged_in.reverse_url + "/v1/echo", method="POST",
                                   data=b"{}", headers={"Content-Type": "application/json"})
    assert status == 200, body


def test_sighup_rereads_the_ca(world: World, logged_in: DaemonProcess):
    _restart_sandbox_with_a_new_ca(world)
    logged_in.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "the CA certificates trusted for the API changed" in
             logged_in.stderr_text(), 10, "the daemon to re-read the CA on SIGHUP")
    status, _, body = http_request(logged_in.reverse_url + "/v1/projects")
    assert status == 200, body
    bundles = list(world.ca_dir.glob("upstream-trust-*.pem"))
    assert len(bundles) == 2  # the new one, and the previous one a connection may still read
