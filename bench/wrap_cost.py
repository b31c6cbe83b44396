"""What wrapping costs: each verb's wall time against `python -c pass`, and each client's call
through `qonic-proxy exec` (forward mode, a daemon running) against the same call direct.

    python bench/wrap_cost.py [--reps N]

Local only: the sandbox on 127.0.0.2 (so forward mode proxies it; NO_PROXY names 127.0.0.1),
the daemon on ephemeral loopback ports; both are stopped by pid at the end. Prints medians in ms.
Clients measured: curl, wget, Python urllib (the ones whose direct call needs no program of its
own); Go, Java, Ruby and PHP are exercised by tests/wrap/test_runtimes.py, not timed here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qonic_proxy.sandbox.app import Sandbox  # noqa: E402
from qonic_proxy.sandbox.settings import SandboxSettings  # noqa: E402
from tests.wrap.exec_world import BROWSER, CLIENT_ID, SECRET, free_port  # noqa: E402
from tests.wrap.ns_scenario import stop_daemon  # noqa: E402

PY = sys.executable


def median_ms(argv: list[str], env: dict[str, str], reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60, check=False)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=10)
    reps = parser.parse_args().reps
    tmp = Path(tempfile.mkdtemp(prefix="qonic-wrap-bench-"))
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    sandbox = Sandbox(SandboxSettings(host="127.0.0.2", client_id=CLIENT_ID, client_secret=SECRET,
                                      redirect_uris=(redirect,), auto_consent=True,
                                      cert_dir=tmp / "tls"))
    sandbox.start()
    browser = tmp / "browser.py"
    browser.write_text(BROWSER.format(python=PY))
    browser.chmod(0o700)
    config = tmp / "config.toml"
    config.write_text(f"""[qonic]\napi_url = "{sandbox.url}"\nca_file = "{sandbox.ca_file}"
[oauth]\nclient_id = "{CLIENT_ID}"\nscopes = ["projects:read"]\nredirect_uri = "{redirect}"
[proxy]\nport = {free_port()}\nforward_port = {free_port()}\nca_dir = "{tmp / 'ca'}"
[token]\ncache_file = "{tmp / 'token.json'}"\n""")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(QONIC_CLIENT_SECRET=SECRET, BROWSER=str(browser), SANDBOX_CA=str(sandbox.ca_file),
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    cli = [PY, "-m", "qonic_proxy"]
    subprocess.run([*cli, "login", "--config", str(config)], env=env, check=True, timeout=60,
                   capture_output=True)
    daemon = subprocess.Popen([*cli, "run", "--config", str(config), "--log-level", "warning"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
    try:
        assert daemon.stdout and daemon.stdout.readline().startswith("qonic-proxy ready")
        token = subprocess.run([*cli, "token", "--config", str(config)], env=env, check=True,
                               capture_output=True, text=True).stdout.strip()
        floor = median_ms([PY, "-c", "pass"], env, reps)
        print(f"{'verb':<28}{'median ms':>10}{'minus floor':>13}")
        print(f"{'python -c pass (floor)':<28}{floor:>10.0f}{0:>13.0f}")
        env_call = [PY, "-c", "from qonic_proxy.config.loader import load_config; "
                    "from qonic_proxy.wrap.shell_exports import shell_exports; "
                    f"print(shell_exports(load_config({str(config)!r})))"]
        for label, argv in (("token", [*cli, "token", "--config", str(config)]),
                            ("status", [*cli, "status", "--config", str(config)]),
                            ("env", env_call),
                            ("exec -- true", [*cli, "exec", "--config", str(config), "--",
                                              "true"])):
            ms = median_ms(argv, env, reps)
            print(f"{label:<28}{ms:>10.0f}{ms - floor:>13.0f}")
        url = sandbox.url + "/v1/echo"
        auth = f"Authorization: Bearer {token}"
        clients = {
            "curl": (["curl", "-sf", "--cacert", str(sandbox.ca_file), "-H", auth, url],
                     ["curl", "-sf", url]),
            "wget": (["wget", "-q", "-O-", f"--ca-certificate={sandbox.ca_file}",
                      f"--header={auth}", url], ["wget", "-q", "-O-", url]),
            "python urllib": ([PY, "-c", "import ssl,sys,urllib.request as u; u.urlopen(u.Request("
                               "sys.argv[1], headers={'Authorization': sys.argv[2]}), context="
                               "ssl.create_default_context(cafile=sys.argv[3])).read()", url,
                               auth.split(": ", 1)[1], str(sandbox.ca_file)],
                              [PY, "-c", "import sys,urllib.request as u; "
                               "u.urlopen(sys.argv[1]).read()", url]),
        }
        print(f"\n{'client':<16}{'direct ms':>10}{'via exec ms':>13}{'added ms':>10}")
        for name, (direct, wrapped) in clients.items():
            if shutil.which(direct[0]) is None and direct[0] != PY:
                continue
            d = median_ms(direct, env, reps)
            w = median_ms([*cli, "exec", "--config", str(config), "--", *wrapped], env, reps)
            print(f"{name:<16}{d:>10.0f}{w:>13.0f}{w - d:>10.0f}")
    finally:
        stop_daemon(daemon)
        sandbox.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
