"""What a new forward-mode (HTTPS_PROXY) connection costs, against the direct call and the
reverse listener, in the same run.

    python bench/forward_connect.py [--reps N] [--hold]

The world is bench/wrap_cost.py's: the sandbox on 127.0.0.2 (TLS), a logged-in daemon with both
listeners on ephemeral loopback ports. Three curl calls of `/v1/echo`, each on a new connection,
are timed round-robin `reps` times (after one warm-up each):

- direct: `https://127.0.0.2:PORT/v1/echo` with the token, trusting the sandbox's CA alone;
- direct+store: the same, trusting the system store plus the sandbox's CA: what curl loads
  for a direct call to a public host (its default store), so the fair baseline;
- reverse: `http://127.0.0.1:PORT/v1/echo` (the daemon adds the token);
- forward: the direct URL through `-x http://127.0.0.1:FWD`, trusting `qonic-proxy ca --bundle`
  (what `exec` gives curl);
- forward-ca: the same, trusting the proxy's CA alone: the proxy's own cost, without the
  client's parse of a ~170-certificate bundle (OpenSSL 3.0 takes ~20-30 ms for that).

For each: the median wall time of the curl process and curl's own `time_appconnect` (TCP +
CONNECT + TLS handshake done) and `time_total`, in ms; then the ratios of forward to the
others. `--hold` prints the ports and the daemon's pid and waits for Enter
before timing, so strace or py-spy can be attached. Every process started here is stopped by its
pid at the end.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.wrap_world import wrap_world  # noqa: E402
from qonic_proxy.interception_ca import CA_CERT_FILE  # noqa: E402

TIMINGS = "%{time_connect} %{time_appconnect} %{time_total}"


def curl_once(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall, appconnect and total ms of one curl run (curl's figures are from its start)."""
    start = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    wall = (time.perf_counter() - start) * 1000
    _, appconnect, total = (float(x) * 1000 for x in out.split())
    return wall, appconnect, total


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--hold", action="store_true")
    args = parser.parse_args()
    with wrap_world("qonic-fwd-bench-") as world:
        env, port, fwd = world.env, world.port, world.forward_port
        token = world.cli_output("token")
        bundle = world.cli_output("ca", "--bundle")
        url = world.sandbox.url + "/v1/echo"
        curl = ["curl", "-sf", "-o", "/dev/null", "-w", TIMINGS]
        direct = [*curl, "-H", f"Authorization: Bearer {token}", url]
        via = [*curl, "-x", f"http://127.0.0.1:{fwd}", url]
        cases = {
            "direct": [*direct, "--cacert", str(world.sandbox.ca_file)],
            "direct+store": [*direct, "--cacert", str(world.store_and_sandbox())],
            "reverse": [*curl, f"http://127.0.0.1:{port}/v1/echo"],
            "forward": [*via, "--cacert", bundle],
            "forward-ca": [*via, "--cacert", str(Path(bundle).parent / CA_CERT_FILE)],
        }
        if args.hold:  # the commands are not printed: the direct ones carry the token
            print(f"daemon pid {world.daemon_pid}; reverse {port}, forward {fwd}; sandbox {url}; "
                  f"bundle {bundle}")
            input("Enter to time... ")
        for argv in cases.values():
            curl_once(argv, env)
        runs: dict[str, list[tuple[float, float, float]]] = {label: [] for label in cases}
        for _ in range(args.reps):
            for label, argv in cases.items():
                runs[label].append(curl_once(argv, env))
        med = {label: [statistics.median(r[i] for r in rows) for i in range(3)]
               for label, rows in runs.items()}
        print(f"{'new connection':<16}{'wall ms':>9}{'appconnect':>12}{'total':>8}")
        for label, (wall, appconnect, total) in med.items():
            print(f"{label:<16}{wall:>9.1f}{appconnect:>12.1f}{total:>8.1f}")
        wall = {label: row[0] for label, row in med.items()}
        print(f"forward/direct {wall['forward'] / wall['direct']:.2f}  "
              f"forward/direct+store {wall['forward'] / wall['direct+store']:.2f}  "
              f"forward/reverse {wall['forward'] / wall['reverse']:.2f}  "
              f"forward-ca/direct {wall['forward-ca'] / wall['direct']:.2f}  "
              f"({args.reps} reps, ratios of median wall times)")
        print(f"a new forward connection adds {wall['forward'] - wall['direct+store']:.1f} ms "
              f"to a direct call with the default store, {wall['forward-ca'] - wall['direct']:.1f}"
              " ms with the CA alone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
