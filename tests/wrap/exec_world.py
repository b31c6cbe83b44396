"""The world the `exec`/`ca` end-to-end tests share: a sandbox, another host, a logged-in cache.

The sandbox listens on 127.0.0.2: NO_PROXY names 127.0.0.1 (so that the reverse listener is
reached directly), and a client only goes *through* the forward proxy for another address. A
second HTTPS server on 127.0.0.3, with a CA of its own, stands for "any other host": it must be
tunnelled (its own certificate reaches the client) and must never see an Authorization header.
Every child is started in its own session so a test can always kill what it started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

from qonic_proxy.ports import free_port
from qonic_proxy.sandbox.app import Sandbox
from tests.harness import Bystander

REPO = Path(__file__).resolve().parent.parent.parent
CLIENT_ID = "exec-test-client"
SECRET = "exec-test-secret-" + "x" * 16
TIMEOUT = 60  # seconds any one subprocess may take
SANDBOX_HOST = "127.0.0.2"
OTHER_HOST = "127.0.0.3"

BROWSER = """\
#!{python}
# A scripted browser: follows the authorize URL (auto-consent) into the loopback callback.
import os, ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=os.environ["SANDBOX_CA"])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}),
                                     urllib.request.HTTPSHandler(context=ctx))
with opener.open(sys.argv[-1], timeout=30) as response:
    response.read()
"""




# ----- the world: sandbox, config, a logged-in token cache ------------------------------------
@dataclasses.dataclass
class World:
    tmp: Path
    sandbox: Sandbox
    other: Bystander
    config: Path
    browser: Path
    redirect_uri: str
    access_token: str = ""

    @property
    def api(self) -> str:
        return self.sandbox.url

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.lower().endswith("_proxy") and k not in ("QONIC_PROXY_CONFIG",)}
        env.update(PYTHONPATH=str(REPO), QONIC_CLIENT_SECRET=SECRET,
                   BROWSER=str(self.browser), SANDBOX_CA=str(self.sandbox.ca_file))
        env.update(extra)
        return env

    def write_config(self, name: str, *, port: int | None = None, forward_port: int = 0,
                     ca_dir: str = "ca", cache: str = "state/token.json") -> Path:
        path = self.tmp / name
        path.write_text(textwrap.dedent(f"""\
            [qonic]
            api_url = "{self.api}"
            ca_file = "{self.sandbox.ca_file}"
            [oauth]
            client_id = "{CLIENT_ID}"
            scopes = ["projects:read", "models:read"]
            redirect_uri = "{self.redirect_uri}"
            open_browser = true
            login_timeout = 30
            [proxy]
            port = {port if port is not None else free_port()}
            forward_port = {forward_port}
            ca_dir = "{self.tmp / ca_dir}"
            [token]
            cache_file = "{self.tmp / cache}"
            """))
        return path

    def cli(self, *args: str, config: Path | None = None, timeout: float = TIMEOUT,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        verb, rest = args[0], args[1:]
        argv = [sys.executable, "-m", "qonic_proxy", verb, "--config",
                str(config or self.config), *rest]
        return subprocess.run(argv, env=env or self.env(), capture_output=True, text=True,
                              timeout=timeout, start_new_session=True, check=False)

    def exec(self, *command: str, config: Path | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.cli("exec", "--", *command, config=config, env=env)



def echo_ok(body: str) -> bool:
    """The sandbox's /v1/echo saw a bearer token that it issued and that is still valid."""
    return json.loads(body)["headers"].get("Authorization") == "<valid bearer>"



@contextlib.contextmanager
def running_daemon(world: World, config: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "qonic_proxy", "run", "--config", str(config),
                             "--log-level", "warning"],
                            env=world.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("qonic-proxy ready"), proc.stderr.read() if proc.stderr else ""
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)



def pem_certificates(path: Path) -> list[bytes]:
    return [b"".join(m.split()) for m in re.findall(
        rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", path.read_bytes(), re.S)]

