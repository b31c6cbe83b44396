"""Regression guard: large bodies stream through qonic-proxy instead of being buffered.

Users move IFC models of several GB. If someone turns `stream_large_bodies` off (or mitmproxy's
default changes under us), every transfer is held in memory and the first big model exhausts the
machine. No timing here: the guard is the proxy process's peak RSS (VmHWM) staying far below the
body size, plus byte-identical data, in both directions and both listener modes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy.utils import human

from bench import harness
from bench.transfer import Route, download, upload
from qonic_proxy.proxy.assembly import STREAM_THRESHOLD
from qonic_proxy.sandbox.patterns import pattern_sha256

MIB = 1024 * 1024
SIZE = 256 * MIB
CEILING_MIB = 200  # idle is ~75-80 MiB; a buffered 256 MiB body cannot fit under this

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(),
                                reason="reads VmHWM from Linux /proc")


def test_daemon_streams_bodies_above_a_small_threshold() -> None:
    threshold = human.parse_size(STREAM_THRESHOLD)
    assert threshold is not None, "stream_large_bodies must be set: bodies would be buffered"
    assert 0 < threshold <= 16 * MIB


@pytest.fixture
def proxied(tmp_path: Path):  # noqa: ANN201 - yields a tuple
    with harness.Processes(tmp_path / "logs") as procs:
        sandbox = harness.start_sandbox(procs, tmp_path / "tls")
        config = harness.write_config(
            tmp_path / "proxy" / "config.toml", api_url=sandbox.url, sandbox=sandbox,
            workdir=tmp_path / "proxy", forward_port=harness.free_port())
        harness.scripted_login(config)
        proxy = harness.start_daemon(procs, config)
        yield sandbox, proxy


@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_256_mib_each_way_in_constant_memory(proxied, mode: str) -> None:  # noqa: ANN001
    sandbox, proxy = proxied
    host, port = sandbox.url.split("//", 1)[1].rsplit(":", 1)
    route = Route(mode, host, int(port), api_ca=sandbox.ca_file,
                  proxy_port=proxy.reverse_port if mode == "reverse" else proxy.forward_port,
                  proxy_ca=proxy.ca_cert, timeout=30)
    expected = pattern_sha256(SIZE)

    got = download(route, SIZE)
    assert (got.status, got.bytes) == (200, SIZE)
    assert got.sha256 == expected
    after_download = harness.vm_hwm_kib(proxy.pid) / 1024
    assert after_download < CEILING_MIB, f"proxy peaked at {after_download:.0f} MiB downloading"

    sent = upload(route, SIZE)
    assert (sent.status, sent.server_bytes) == (200, SIZE)
    assert sent.sha256 == expected
    after_upload = harness.vm_hwm_kib(proxy.pid) / 1024
    assert after_upload < CEILING_MIB, f"proxy peaked at {after_upload:.0f} MiB uploading"
