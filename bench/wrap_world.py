"""The world of the wrapping benches: the sandbox on 127.0.0.2 (TLS, so forward mode proxies
it; NO_PROXY names 127.0.0.1) and a logged-in daemon with both listeners on ephemeral loopback
ports. Both are stopped by pid at the end, and the temporary folder removed.

The package runs from bytecode as an installed one does: PYTHONDONTWRITEBYTECODE is dropped and
the bytecode goes to a private PYTHONPYCACHEPREFIX.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from qonic_proxy.records import record
from qonic_proxy.sandbox.app import Sandbox
from qonic_proxy.sandbox.settings import SandboxSettings
from tests.wrap.exec_world import BROWSER, CLIENT_ID, SECRET, free_port
from tests.wrap.ns_scenario import stop_daemon

PY = sys.executable
CLI = [PY, "-m", "qonic_proxy"]


@record
class WrapWorld:
    tmp: Path
    sandbox: Sandbox
    config: Path
    env: dict[str, str]
    port: int  # reverse listener
    forward_port: int
    daemon_pid: int

    @property
    def cfg_args(self) -> list[str]:
        return ["--config", str(self.config)]

    def cli_output(self, *args: str) -> str:
        return subprocess.run([*CLI, *args, *self.cfg_args], env=self.env, check=True,
                              capture_output=True, text=True, timeout=60).stdout.strip()

    def store_and_sandbox(self) -> Path:
        """The system store plus the sandbox's CA: what a direct call to the real API trusts
        (curl, wget and Python load the system store), so the fair baseline for a call that
        gets `qonic-proxy ca --bundle` through exec."""
        store = self.tmp / "store-and-sandbox.pem"
        paths = ssl.get_default_verify_paths()
        store.write_bytes(Path(paths.cafile or paths.openssl_cafile).read_bytes()
                          + self.sandbox.ca_file.read_bytes())
        return store


@contextlib.contextmanager
def wrap_world(prefix: str) -> Iterator[WrapWorld]:
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    sandbox = Sandbox(SandboxSettings(host="127.0.0.2", client_id=CLIENT_ID, client_secret=SECRET,
                                      redirect_uris=(redirect,), auto_consent=True,
                                      cert_dir=tmp / "tls"))
    sandbox.start()
    daemon = None
    try:
        browser = tmp / "browser.py"
        browser.write_text(BROWSER.format(python=PY))
        browser.chmod(0o700)
        port, forward_port = free_port(), free_port()
        config = tmp / "config.toml"
        config.write_text(f"""[qonic]\napi_url = "{sandbox.url}"\nca_file = "{sandbox.ca_file}"
[oauth]\nclient_id = "{CLIENT_ID}"\nscopes = ["projects:read"]\nredirect_uri = "{redirect}"
[proxy]\nport = {port}\nforward_port = {forward_port}\nca_dir = "{tmp / 'ca'}"
[token]\ncache_file = "{tmp / 'token.json'}"\n""")
        env = {k: v for k, v in os.environ.items()
               if not k.lower().endswith("_proxy") and k != "PYTHONDONTWRITEBYTECODE"}
        env.update(PYTHONPYCACHEPREFIX=str(tmp / "pycache"), QONIC_CLIENT_SECRET=SECRET,
                   BROWSER=str(browser), SANDBOX_CA=str(sandbox.ca_file),
                   PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        subprocess.run([*CLI, "login", "--config", str(config)], env=env, check=True, timeout=60,
                       capture_output=True)
        daemon = subprocess.Popen([*CLI, "run", "--config", str(config), "--log-level",
                                   "warning"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        assert daemon.stdout and daemon.stdout.readline().startswith("qonic-proxy ready")
        yield WrapWorld(tmp, sandbox, config, env, port, forward_port, daemon.pid)
    finally:
        if daemon is not None:
            stop_daemon(daemon)
        sandbox.stop()
        shutil.rmtree(tmp, ignore_errors=True)
