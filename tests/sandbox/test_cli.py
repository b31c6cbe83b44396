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


def _snippet(argv: list[str], monkeypatch, env_secret: str | None = None) -> str:
    from qonic_proxy.sandbox.app import Sandbox
    from qonic_proxy.sandbox.cli import config_snippet, parser, settings_from_args

    if env_secret:
        monkeypatch.setenv("SANDBOX_CLIENT_SECRET", env_secret)
    else:
        monkeypatch.delenv("SANDBOX_CLIENT_SECRET", raising=False)
    args = parser().parse_args(argv)
    sandbox = Sandbox(settings_from_args(args))
    sandbox.url, sandbox.ca_file = "https://127.0.0.1:4443", Path("/x/ca.pem")
    return config_snippet(sandbox, args)


def test_the_snippet_is_a_config_that_loads(monkeypatch, tmp_path: Path) -> None:
    import tomllib

    from qonic_proxy.config.loader import parse_config

    text = _snippet(["--port", "4443", "--cert-dir", str(tmp_path)], monkeypatch)
    toml = text.split("\n", 1)[1]
    data = tomllib.loads(toml)
    assert data == {"qonic": {"api_url": "https://127.0.0.1:4443", "ca_file": "/x/ca.pem"},
                    "oauth": {"client_id": "sandbox-client",
                              "redirect_uri": "http://localhost:8765/callback"}}
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    data["qonic"]["ca_file"] = str(tmp_path / "ca.pem")
    assert parse_config(data, "snippet", {}).qonic.api_url == "https://127.0.0.1:4443"
    assert "export QONIC_CLIENT_SECRET=sandbox-secret" in text
    assert "survives restarts" not in text


def test_the_snippet_never_shows_a_secret_it_was_given(monkeypatch) -> None:
    by_env = _snippet([], monkeypatch, env_secret="env-given-secret")
    assert "env-given-secret" not in by_env and "$SANDBOX_CLIENT_SECRET" in by_env
    by_flag = _snippet(["--client-secret", "flag-given-secret"], monkeypatch)
    assert "flag-given-secret" not in by_flag and "--client-secret you gave" in by_flag
    assert "needs no client secret" in _snippet(["--public"], monkeypatch)
    assert "survives restarts" in by_flag  # port 0 and a temporary CA
