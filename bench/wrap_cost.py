"""What wrapping costs: each verb's wall time against `python3 -c pass` (the floor of any Python
CLI) and `python3 -I -S -c pass` (the interpreter alone, no site), the latency `exec` adds to a
command, and each client's call through `qonic-proxy exec` (forward mode, a daemon running)
against the same call direct.

    python bench/wrap_cost.py [--reps N]

The package runs from bytecode as an installed one does: PYTHONDONTWRITEBYTECODE is dropped and
the bytecode goes to a private PYTHONPYCACHEPREFIX, warmed once. The verbs are timed in
interleaved rounds (one of each per round), so a busy machine slows all of them alike; the CPU
time (user + system) of the child is shown too, as it depends less on other load.

Local only: the sandbox on 127.0.0.2 (so forward mode proxies it; NO_PROXY names 127.0.0.1),
the daemon on ephemeral loopback ports; both are stopped by pid at the end. Prints medians in ms.
Clients measured: curl, wget, Python urllib (the ones whose direct call needs no program of its
own); Go, Java, Ruby and PHP are exercised by tests/wrap/test_runtimes.py, not timed here.
"""

from __future__ import annotations

import argparse
import os
import resource
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


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) milliseconds of one run of `argv`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # no timeout: with one, Popen.wait polls in steps of up to 50 ms, which would be measured
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    wall = (time.perf_counter() - start) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000
    return wall, cpu


def median_ms(argv: list[str], env: dict[str, str], reps: int) -> float:
    return statistics.median(timed(argv, env)[0] for _ in range(reps))


def interleaved(cases: dict[str, list[str]], env: dict[str, str], reps: int,
                ) -> dict[str, tuple[float, float]]:
    """Median wall and CPU ms of each case, run round-robin `reps` times (after one warm-up)."""
    for argv in cases.values():
        timed(argv, env)
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label in cases}
    for _ in range(reps):
        for label, argv in cases.items():
            runs[label].append(timed(argv, env))
    return {label: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r))
            for label, r in runs.items()}


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
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPYCACHEPREFIX=str(tmp / "pycache"),
               QONIC_CLIENT_SECRET=SECRET, BROWSER=str(browser), SANDBOX_CA=str(sandbox.ca_file),
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
        cfg_args = ["--config", str(config)]
        cases = {
            "python3 -c pass": [PY, "-c", "pass"],
            "python3 -I -S -c pass": [PY, "-I", "-S", "-c", "pass"],
            "token": [*cli, "token", *cfg_args],
            "status": [*cli, "status", *cfg_args],
            "env": [*cli, "env", *cfg_args],
            "true (direct)": ["true"],
            "exec -- true": [*cli, "exec", *cfg_args, "--", "true"],
        }
        results = interleaved(cases, env, reps)
        floor, bare = results["python3 -c pass"][0], results["python3 -I -S -c pass"][0]
        print(f"{'command':<24}{'wall ms':>9}{'cpu ms':>8}{'- floor':>9}{'- bare':>8}")
        for label, (wall, cpu) in results.items():
            print(f"{label:<24}{wall:>9.0f}{cpu:>8.0f}{wall - floor:>9.0f}{wall - bare:>8.0f}")
        added = results["exec -- true"][0] - results["true (direct)"][0]
        print(f"exec adds {added:.0f} ms to a command (target: at most 100 ms; token, status "
              "and env: within 100 ms)")
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
