"""What wrapping costs: each verb's wall time against `python3 -c pass` (the floor of any Python
CLI) and `python3 -I -S -c pass` (the interpreter alone, no site), the latency `exec` adds to a
command, and each client's call through `qonic-proxy exec` (forward mode, a daemon running)
against the same call direct.

    python bench/wrap_cost.py [--reps N]

The package runs from bytecode as an installed one does: PYTHONDONTWRITEBYTECODE is dropped and
the bytecode goes to a private PYTHONPYCACHEPREFIX, warmed once. The verbs are timed in
interleaved rounds (one of each per round), so a busy machine slows all of them alike; the CPU
time (user + system) of the child is shown too, as it depends less on other load.

Local only: the world of bench/wrap_world.py (the sandbox on 127.0.0.2, a logged-in daemon on
ephemeral loopback ports, both stopped by pid at the end). Prints medians in ms. A direct
client call trusts the system store plus the sandbox's CA, as a direct call to the real API
loads the system store: the bundle exec hands out is that store plus the proxy's CA, and
OpenSSL takes ~20 ms to read either (bench/forward_connect.py shows the split).
Clients measured: curl, wget, Python urllib (the ones whose direct call needs no program of its
own); Go, Java, Ruby and PHP are exercised by tests/wrap/test_runtimes.py, not timed here.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.wrap_world import CLI, PY, wrap_world  # noqa: E402


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
    with wrap_world("qonic-wrap-bench-") as world:
        env, cfg_args = world.env, world.cfg_args
        token = world.cli_output("token")
        cases = {
            "python3 -c pass": [PY, "-c", "pass"],
            "python3 -I -S -c pass": [PY, "-I", "-S", "-c", "pass"],
            "token": [*CLI, "token", *cfg_args],
            "status": [*CLI, "status", *cfg_args],
            "env": [*CLI, "env", *cfg_args],
            "true (direct)": ["true"],
            "exec -- true": [*CLI, "exec", *cfg_args, "--", "true"],
        }
        results = interleaved(cases, env, reps)
        floor, bare = results["python3 -c pass"][0], results["python3 -I -S -c pass"][0]
        print(f"{'command':<24}{'wall ms':>9}{'cpu ms':>8}{'- floor':>9}{'- bare':>8}")
        for label, (wall, cpu) in results.items():
            print(f"{label:<24}{wall:>9.0f}{cpu:>8.0f}{wall - floor:>9.0f}{wall - bare:>8.0f}")
        added = results["exec -- true"][0] - results["true (direct)"][0]
        print(f"exec adds {added:.0f} ms to a command (target: at most 100 ms; token, status "
              "and env: within 100 ms)")
        url = world.sandbox.url + "/v1/echo"
        auth = f"Authorization: Bearer {token}"
        store = str(world.store_and_sandbox())  # a direct call trusts the system store too
        clients = {
            "curl": (["curl", "-sf", "--cacert", store, "-H", auth, url],
                     ["curl", "-sf", url]),
            "wget": (["wget", "-q", "-O-", f"--ca-certificate={store}", f"--header={auth}", url],
                     ["wget", "-q", "-O-", url]),
            "python urllib": ([PY, "-c", "import ssl,sys,urllib.request as u; u.urlopen(u.Request("
                               "sys.argv[1], headers={'Authorization': sys.argv[2]}), context="
                               "ssl.create_default_context(cafile=sys.argv[3])).read()", url,
                               auth.split(": ", 1)[1], store],
                              [PY, "-c", "import sys,urllib.request as u; "
                               "u.urlopen(sys.argv[1]).read()", url]),
        }
        print(f"\n{'client':<16}{'direct ms':>10}{'via exec ms':>13}{'added ms':>10}")
        for name, (direct, wrapped) in clients.items():
            if shutil.which(direct[0]) is None and direct[0] != PY:
                continue
            d = median_ms(direct, env, reps)
            w = median_ms([*CLI, "exec", *cfg_args, "--", *wrapped], env, reps)
            print(f"{name:<16}{d:>10.0f}{w:>13.0f}{w - d:>10.0f}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
