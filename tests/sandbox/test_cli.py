"""The `qonic-proxy sandbox` verb: the ready line, the secret from the environment, exit codes."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import requests

from qonic_proxy.sandbox.cli import main, parser, settings_from_args
from qonic_proxy.sandbox.faults import TokenFault
from tests.sandbox.helpers import (
    CLIENT_ID,
    REDIRECT,
    REPO,
    SECRET,
    query_of,
    s256,
)


def test_main_in_a_subprocess(tmp_path: Path) -> None:
    env = dict(os.environ, SANDBOX_CLIENT_SECRET="from-env-secret", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from qonic_proxy.sandbox.cli import main; "
         "sys.exit(main(sys.argv[1:]))",
         "--auto-consent", "--cert-dir", str(tmp_path / "certs"), "--token-style", "camel"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        m = re.fullmatch(r"sandbox ready: url=(https://127\.0\.0\.1:\d+) ca_file=(\S+)\n", line)
        assert m, line
        url, ca_file = m.groups()
        assert Path(ca_file) == tmp_path / "certs" / "ca.pem"
        session = requests.Session()
        session.trust_env = False
        session.verify = ca_file
        verifier = secrets.token_urlsafe(48)
        r = session.get(
            url + "/v1/auth/authorize",
            params={
                "client_id": CLIENT_ID,
                "redirect_uri": REDIRECT,
                "response_type": "code",
                "scope": "projects:read",
                "code_challenge": s256(verifier),
                "code_challenge_method": "S256",
            },
            allow_redirects=False,
            timeout=10,
        )
        code = query_of(r.headers["Location"])["code"]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        }
        r = session.post(url + "/v1/auth/token", data=dict(form, client_secret=SECRET), timeout=10)
        assert r.status_code == 401  # the environment's secret wins over the default
        r = session.post(
            url + "/v1/auth/token", data=dict(form, client_secret="from-env-secret"), timeout=10
        )
        assert r.status_code == 200 and "accessToken" in r.json()
        session.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read() == ""  # exactly one line
        assert "from-env-secret" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()


def test_main_refuses_a_public_host(capsys) -> None:
    assert main(["--host", "0.0.0.0"]) == 2  # noqa: S104
    assert "loopback" in capsys.readouterr().err


def test_token_fault_options() -> None:
    args = parser().parse_args(["--token-fault", "429", "--token-fault-seconds", "20",
                                "--token-fault-retry-after", "5"])
    assert settings_from_args(args).token_fault == TokenFault("status", 20, 429, 5)
    args = parser().parse_args(["--token-fault", "hang", "--token-fault-hang", "40"])
    assert settings_from_args(args).token_fault == TokenFault("hang", 30, hang=40)
    assert settings_from_args(parser().parse_args([])).token_fault is None


def test_main_refuses_a_bad_token_fault(capsys) -> None:
    assert main(["--token-fault", "404"]) == 2
    assert "429 or 5xx" in capsys.readouterr().err
