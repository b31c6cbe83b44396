"""The child's environment (end to end and as a function) and the private daemon's config."""

from __future__ import annotations

import re
from pathlib import Path

from qonic_proxy.config.loader import load_config
from qonic_proxy.records import replace
from qonic_proxy.wrap.environment import NO_PROXY, Endpoints, child_environment, private_config
from tests.wrap.exec_world import SECRET, World


def test_child_environment_has_proxy_settings_and_no_secret(world: World) -> None:
    result = world.exec("env")
    assert result.returncode == 0, result.stderr
    assert world.access_token not in result.stdout + result.stderr
    assert SECRET not in result.stdout + result.stderr
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert "QONIC_CLIENT_SECRET" not in env
    forward = env["HTTPS_PROXY"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", forward)
    assert env["HTTP_PROXY"] == env["http_proxy"] == env["https_proxy"] == forward
    assert env["NO_PROXY"] == env["no_proxy"] == NO_PROXY
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", env["QONIC_API_URL"])
    bundle = env["SSL_CERT_FILE"]
    assert env["REQUESTS_CA_BUNDLE"] == env["CURL_CA_BUNDLE"] == env["NODE_EXTRA_CA_CERTS"]
    assert bundle == env["CURL_CA_BUNDLE"] == str(world.tmp / "ca" / "ca-bundle.pem")
    assert env["QONIC_PROXY_CONFIG"] == str(world.config)
    # nothing but the command's own output (no "ready" line or log from the private proxy)
    assert "qonic-proxy ready" not in result.stdout
    assert result.stderr == ""


def test_child_environment_and_private_config(world: World) -> None:
    base = {"PATH": "/bin", "QONIC_CLIENT_SECRET": "s3cret", "HTTPS_PROXY": "http://corp:3128"}
    env = child_environment(base, Endpoints("http://127.0.0.1:1", "http://127.0.0.1:2"), "/b")
    assert "QONIC_CLIENT_SECRET" not in env
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:2"
    assert env["QONIC_API_URL"] == "http://127.0.0.1:1/v1"
    assert env["PATH"] == "/bin"
    assert base["QONIC_CLIENT_SECRET"] == "s3cret"  # the caller's mapping is left alone

    cfg = load_config(world.config)
    exposed = replace(cfg, proxy=replace(
        cfg.proxy, listen_host="0.0.0.0", allowed_hosts=("proxy.example",)))  # noqa: S104
    private = private_config(exposed)
    assert private.proxy.listen_host == "127.0.0.1"
    assert private.proxy.port == 0
    assert private.proxy.forward_port > 0
    assert {"proxy.example", "127.0.0.1", "localhost"} <= set(private.proxy.allowed_hosts)


def test_the_client_key_rides_in_the_urls_user_info() -> None:
    env = child_environment({}, Endpoints("http://127.0.0.1:1", "http://127.0.0.1:2"), "/b",
                            config_file=Path("/etc/q.toml"), client_key="k/y+z")
    assert env["HTTPS_PROXY"] == "http://qonic:k%2Fy%2Bz@127.0.0.1:2"
    assert env["QONIC_API_URL"] == "http://qonic:k%2Fy%2Bz@127.0.0.1:1/v1"
    assert env["QONIC_PROXY_CONFIG"] == "/etc/q.toml"
    assert env["NODE_USE_ENV_PROXY"] == "1"
    assert {env[name] for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                                   "NODE_EXTRA_CA_CERTS")} == {"/b"}
