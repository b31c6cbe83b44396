"""End to end: `login --paste` with a browser on "another machine" (it stops at the callback).

The scripted browser (tests/browser.py with BROWSER_STOP_AT_CALLBACK) goes through the
sandbox's consent and prints the address it would have opened; that address is fed to
`qonic-proxy login --paste` on stdin, locally or into a running daemon's pending login.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import urllib.parse

import pytest

from tests.harness import BROWSER_SCRIPT, DaemonProcess, World, http_request, wait_for

pytestmark = pytest.mark.e2e


class PasteLogin:
    """`qonic-proxy login --paste` as a process: stdin to paste into, stderr read as it comes."""

    def __init__(self, world: World) -> None:
        world.write_config()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qonic_proxy", "login", "--paste", "--no-browser",
             "--config", str(world.config_path)],
            env=world.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def next_line(self, timeout: float = 20) -> str:
        """The next line with something in it (skips the blank lines around the URL)."""
        while True:
            line = self.lines.get(timeout=timeout)
            self.seen.append(line)
            if line.strip() and not line.startswith("("):
                return line

    def authorize_url(self) -> str:
        while not (line := self.next_line()).startswith("  http"):
            pass
        return line.strip()

    def paste(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 40) -> tuple[int, str, str]:
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self.proc.wait(timeout)
        self.pump.join(10)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.proc.returncode, out, "".join(self.seen)


def browse_elsewhere(world: World, url: str, decision: str = "approve") -> str:
    """The address a browser on another machine ends on (it never connects to it)."""
    result = subprocess.run([sys.executable, str(BROWSER_SCRIPT), url], capture_output=True,
                            text=True, timeout=30, stdin=subprocess.DEVNULL,
                            env=world.env(BROWSER_STOP_AT_CALLBACK="1",
                                          BROWSER_DECISION=decision))
    address = result.stdout.strip()
    assert address.startswith("http://127.0.0.1:"), result.stderr
    return address


def exchanges(world: World) -> int:
    return int(world.sandbox.stats()["token"]["authorization_code"]["ok"])


@pytest.fixture
def paste_login(world: World):  # type: ignore[no-untyped-def]
    started: list[PasteLogin] = []

    def start() -> PasteLogin:
        started.append(PasteLogin(world))
        return started[-1]

    yield start
    for login in started:
        if login.proc.poll() is None:
            login.proc.kill()
            login.proc.wait(5)


@pytest.mark.parametrize("form", ["url", "query"])
def test_pasting_the_address_logs_in(world: World, paste_login, form: str) -> None:
    login = paste_login()
    address = browse_elsewhere(world, login.authorize_url())
    login.paste(address if form == "url" else urllib.parse.urlsplit(address).query)
    code, out, err = login.finish()
    assert code == 0, err
    assert "Logged in to Qonic" in out
    assert exchanges(world) == 1 and world.cache_file.exists()


def test_a_tampered_state_gets_one_sentence_then_the_right_address_works(
        world: World, paste_login) -> None:
    login = paste_login()
    address = browse_elsewhere(world, login.authorize_url())
    login.paste(address.replace("state=", "state=x"))
    login.paste("garbage")
    sentence = login.next_line()
    assert sentence.startswith("qonic-proxy: The state does not belong to the login in progress")
    assert login.next_line().startswith("qonic-proxy: That is not the address the browser")
    login.paste(address)
    code, _out, err = login.finish()
    assert code == 0, err
    assert exchanges(world) == 1


def test_an_access_denied_address_is_refused_and_the_login_keeps_waiting(
        world: World, paste_login) -> None:
    login = paste_login()
    url = login.authorize_url()
    denied = browse_elsewhere(world, url, decision="deny")
    assert "error=access_denied" in denied
    login.paste(denied)
    assert "Qonic refused the login (access_denied" in login.next_line()
    login.paste(browse_elsewhere(world, url))
    code, _out, err = login.finish()
    assert code == 0, err


def test_the_same_code_by_paste_and_by_the_callback_is_exchanged_once(
        world: World, paste_login) -> None:
    login = paste_login()
    address = browse_elsewhere(world, login.authorize_url())
    callback = threading.Thread(target=lambda: http_request(address, timeout=20), daemon=True)
    callback.start()
    login.paste(address)
    code, _out, err = login.finish()
    callback.join(20)
    assert code == 0, err
    assert exchanges(world) == 1


def test_no_paste_within_the_login_timeout_fails_in_one_sentence(
        world: World, paste_login) -> None:
    world.config["oauth"]["login_timeout"] = 1
    login = paste_login()
    login.authorize_url()
    code, _out, err = login.finish()
    assert code == 1
    assert err.strip().splitlines()[-1] == ("qonic-proxy: no login completed within 1 s; run "
                                            "`qonic-proxy login` to try again")


def test_pasting_into_the_running_daemons_login_serves_at_once(
        world: World, daemons: list[DaemonProcess], paste_login) -> None:
    world.config["proxy"]["port"] = port = _free()
    daemon = world.daemon(env=world.env(BROWSER_DECISION="ignore"))
    daemons.append(daemon)
    daemon.wait_ready()
    wait_for(lambda: daemon.health()[1]["login_in_progress"], 10, "the daemon's login offer")
    login = paste_login()
    url = login.authorize_url()
    assert url in daemon.stderr_text()  # the daemon's own pending login
    login.paste(browse_elsewhere(world, url).replace("state=", "state=x"))
    assert "The state does not belong" in login.next_line()
    login.paste(browse_elsewhere(world, url))
    code, _out, err = login.finish()
    assert code == 0, err
    assert daemon.health()[0] == 200  # no restart
    status, _headers, _body = http_request(f"http://127.0.0.1:{port}/v1/projects")
    assert status == 200 and exchanges(world) == 1


def test_the_paste_path_refuses_browsers_and_keeps_the_login_on_a_bad_address(
        world: World, daemons: list[DaemonProcess]) -> None:
    world.config["proxy"]["port"] = port = _free()
    daemon = world.daemon(env=world.env(BROWSER_DECISION="ignore"))
    daemons.append(daemon)
    daemon.wait_ready()
    wait_for(lambda: daemon.health()[1]["login_in_progress"], 10, "the daemon's login offer")
    url = f"http://127.0.0.1:{port}/-/login/paste"
    body = json.dumps({"address": "code=x&state=y"}).encode()
    good = {"X-Qonic-Proxy-Paste": "1", "Content-Type": "application/json",
            "X-Qonic-Proxy-Paste-Address": "code=x&state=y"}
    for headers in ({**good, "Origin": f"http://127.0.0.1:{port}"},
                    {"Content-Type": "application/json"},
                    {**good, "Sec-Fetch-Site": "same-origin"}):
        status, _h, _b = http_request(url, method="POST", headers=headers, data=body)
        assert status == 403, headers
    status, _h, answer = http_request(url, method="POST", headers=good, data=body)
    assert status == 400 and "state" in json.loads(answer)["message"]
    assert daemon.health()[1]["login_in_progress"]  # still waiting
    status, _h, _b = http_request(url, method="GET")
    assert status == 405


def _free() -> int:
    from tests.harness import free_port

    return free_port()


def test_with_no_browser_the_health_action_and_401_say_how_to_paste(
        world: World, daemons: list[DaemonProcess]) -> None:
    world.config["proxy"]["port"] = port = _free()
    daemon = world.daemon(env=world.env(BROWSER="", DISPLAY="", WAYLAND_DISPLAY=""))
    daemons.append(daemon)
    daemon.wait_ready()
    wait_for(lambda: daemon.health()[1]["login_in_progress"], 10, "the daemon's login offer")
    action = daemon.health()[1]["action"]
    assert action.startswith("Log in to Qonic: open https://127.0.0.1:")
    assert action.endswith("in any browser, then run `qonic-proxy login --paste` and paste "
                           "the address it ends on.")
    status, _h, body = http_request(f"http://127.0.0.1:{port}/v1/projects")
    assert status == 401 and "qonic-proxy login --paste" in json.loads(body)["message"]
    assert "then run `qonic-proxy login --paste`" in daemon.stderr_text()
