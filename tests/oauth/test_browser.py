"""The browser is started by webbrowser in a child whose environment holds no secret of ours."""

from __future__ import annotations

import json
import shlex
import sys
import threading
import webbrowser
from pathlib import Path

import pytest

from qonic_proxy.oauth import browser, login
from qonic_proxy.oauth.browser import browser_environment, open_without_secrets

KEYED = "http://qonic:k3y-secret@127.0.0.1:8081"


def test_browser_environment_drops_the_secret_and_local_proxy_keys() -> None:
    env = browser_environment({
        "QONIC_CLIENT_SECRET": "s3cret", "HTTPS_PROXY": KEYED, "http_proxy": KEYED,
        "QONIC_API_URL": "http://qonic:k3y@localhost:8080/v1", "ALL": "http://a:b@[::1]/x",
        "CORP_PROXY": "http://me:pw@proxy.corp.example:3128", "PATH": "/usr/bin",
        "DISPLAY": ":0", "NO_PROXY": "localhost"})
    assert env == {"CORP_PROXY": "http://me:pw@proxy.corp.example:3128", "PATH": "/usr/bin",
                   "DISPLAY": ":0", "NO_PROXY": "localhost"}


def recording_browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str) -> Path:
    record = tmp_path / "browser.json"
    script = tmp_path / "browser.py"
    script.write_text("import json, os, sys\n"
                      f"open({str(record)!r}, 'w').write(json.dumps("
                      "{'argv': sys.argv, 'environ': dict(os.environ)}))\n"
                      f"sys.exit({command})\n")
    monkeypatch.setenv("BROWSER", f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} %s")
    monkeypatch.setenv("QONIC_CLIENT_SECRET", "s3cret-in-env")
    monkeypatch.setenv("HTTPS_PROXY", KEYED)
    return record


def test_open_without_secrets_honours_browser_and_hides_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = recording_browser(tmp_path, monkeypatch, "0")
    assert open_without_secrets("http://127.0.0.1:1/-/start/abc") is True
    seen = json.loads(record.read_text())
    assert seen["argv"][1:] == ["http://127.0.0.1:1/-/start/abc"]
    assert "QONIC_CLIENT_SECRET" not in seen["environ"]
    assert "s3cret-in-env" not in json.dumps(seen) and "k3y-secret" not in json.dumps(seen)
    assert seen["environ"]["BROWSER"]  # everything else is passed on


def test_open_without_secrets_says_false_when_the_browser_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recording_browser(tmp_path, monkeypatch, "1")
    assert open_without_secrets("http://127.0.0.1:1/-/start/abc") is False


def test_the_standard_opener_is_run_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[str] = []
    monkeypatch.setattr(login, "open_without_secrets", used.append)
    login.open_browser_in_background(webbrowser.open, "http://127.0.0.1:1/-/start/x")
    for thread in threading.enumerate():
        if thread.name == "qonic-proxy-browser":
            thread.join(5)
    assert used == ["http://127.0.0.1:1/-/start/x"]
    assert browser.SECRET_VARIABLES == ("QONIC_CLIENT_SECRET",)
