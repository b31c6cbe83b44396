"""Each runtime, unchanged, through `qonic-proxy exec` in forward mode against api.qonic.com.

Go, Ruby and Java never proxy names that resolve to loopback, so the whole scenario runs in
private mount and network namespaces (tests/wrap/ns_scenario.py) with the product's true default
api_url; nothing leaves them. Each client runs in a clean environment (`env -i PATH HOME`),
GETs the sandbox's /v1/echo (it must carry our valid bearer) and a second HTTPS host (it must
get no Authorization header and the client must accept that host's own certificate, which the
proxy's name-constrained CA could not have signed). The daemon trusts that test "public" CA only
through the system bundle bind-mounted in the namespace: the system-trust rule.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.wrap.exec_world import REPO
from tests.wrap.ns_scenario import node_program

PROBES = Path(__file__).parent / "probes"
CLIENTS = ("curl", "wget", "urllib", "requests", "httpx", "java", "java-urlconnection", "go",
           "ruby", "php", "node")
MISSING = {"wget": "wget", "go": "golang-go", "ruby": "ruby", "php": "php-cli php-curl",
           "java": "default-jdk-headless", "node": "nodejs"}


def _node_major() -> int:
    node = node_program()
    if shutil.which(node) is None:
        return 0
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    match = re.match(r"v(\d+)", out.stdout)
    return int(match.group(1)) if match else 0


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if os.geteuid() != 0:
        pytest.skip("needs root for private mount and network namespaces (CI runs as root)")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare (util-linux) and ip (iproute2)")
    work = tmp_path_factory.mktemp("runtimes")
    if shutil.which("go"):  # built before entering: the namespace has no network
        subprocess.run(["go", "build", "-o", str(work / "fetch-go"), str(PROBES / "fetch.go")],
                       check=True, timeout=300, capture_output=True,
                       env={**os.environ, "GO111MODULE": "off"})
    if shutil.which("javac"):
        subprocess.run(["javac", "-d", str(work / "java"), str(PROBES / "Fetch.java")],
                       check=True, timeout=120, capture_output=True)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(["unshare", "--mount", "--net", sys.executable, "-m",
                           "tests.wrap.ns_scenario", str(work)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads((work / "results.json").read_text())
    return result


def _responses(lines: list[str]) -> list[tuple[int, str]]:
    """(status, body) per URL; curl and wget print bare bodies (status 200 when they exit 0)."""
    decoder = json.JSONDecoder()
    out: list[tuple[int, str]] = []
    for line in lines:
        head, _, rest = line.partition(" ")
        if head.isdigit():
            out.append((int(head), rest))
            continue
        while line.strip():  # wget -O - runs bodies together
            line = line.strip()
            _, end = decoder.raw_decode(line)
            out.append((200, line[:end]))
            line = line[end:]
    return out


def _client(scenario: dict[str, Any], name: str) -> tuple[list[tuple[int, str]], str]:
    runtime = name.split("-")[0]
    if runtime == "httpx" and "httpx" not in scenario["clients"]:
        pytest.skip("httpx is not installed in this venv (pip install httpx)")
    if runtime not in scenario["clients"]:
        pytest.skip(f"{runtime} is not installed (apt-get install {MISSING[runtime]})")
    entry = scenario["clients"][runtime]
    assert entry["code"] == 0, entry["stderr"]
    responses = _responses(entry["lines"])
    if runtime == "java":  # HttpClient first, then HttpsURLConnection
        responses = responses[2:] if name == "java-urlconnection" else responses[:2]
    return responses, entry["stderr"]


def _assert_api_ok(status: int, body: str, stderr: str) -> None:
    assert status == 200, f"{body} / {stderr}"
    assert json.loads(body)["headers"].get("Authorization") == "<valid bearer>"


@pytest.mark.parametrize("name", CLIENTS)
def test_runtime_works_through_exec_in_forward_mode(scenario: dict[str, Any], name: str) -> None:
    if name == "node" and _node_major() < 22:
        pytest.skip(f"Node {_node_major()} ignores proxy variables (Node >= 22 honours them "
                    "with NODE_USE_ENV_PROXY=1); reverse mode is checked below")
    responses, stderr = _client(scenario, name)
    assert len(responses) >= 2, stderr
    _assert_api_ok(*responses[0], stderr)
    assert responses[1] == (200, '{"recorded": true}'), stderr
    runtime = name.split("-")[0]
    recorded = [r for r in scenario["recorded"] if r["path"] == f"/record/{runtime}"]
    assert recorded, "the other host saw no request"
    assert all("authorization" not in r["headers"] for r in recorded)
    assert all("proxy-authorization" not in r["headers"] for r in recorded)


def test_node_reaches_the_api_in_reverse_mode(scenario: dict[str, Any]) -> None:
    responses, stderr = _client(scenario, "node")
    _assert_api_ok(*responses[2], stderr)  # QONIC_API_URL: works on every Node version


def test_wget_keeps_the_users_own_wgetrc(scenario: dict[str, Any]) -> None:
    _client(scenario, "wget")
    recorded = [r for r in scenario["recorded"] if r["path"] == "/record/wget"]
    assert recorded and recorded[0]["headers"].get("user-agent") == "users-own-wgetrc"


def test_no_token_reached_the_other_host(scenario: dict[str, Any]) -> None:
    assert scenario["recorded"]
    for request in scenario["recorded"]:
        assert "authorization" not in request["headers"], request["path"]
