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
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qonic_proxy.interception_ca import CA_CERT_FILE  # noqa: E402
from qonic_proxy.sandbox.app import Sandbox  # noqa: E402
from qonic_proxy.sandbox.settings import SandboxSettings  # noqa: E402
from tests.wrap.exec_world import BROWSER, CLIENT_ID, SECRET, free_port  # noqa: E402
from tests.wrap.ns_scenario import stop_daemon  # noqa: E402

PY = sys.executable
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
    tmp = Path(tempfile.mkdtemp(prefix="qonic-fwd-bench-"))
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    sandbox = Sandbox(SandboxSettings(host="127.0.0.2", client_id=CLIENT_ID, client_secret=SECRET,
                                      redirect_uris=(redirect,), auto_consent=True,
                                      cert_dir=tmp / "tls"))
    sandbox.start()
    browser = tmp / "browser.py"
    browser.write_text(BROWSER.format(python=PY))
    browser.chmod(0o700)
    port, fwd = free_port(), free_port()
    config = tmp / "config.toml"
    config.write_text(f"""[qonic]\napi_url = "{sandbox.url}"\nca_file = "{sandbox.ca_file}"
[oauth]\nclient_id = "{CLIENT_ID}"\nscopes = ["projects:read"]\nredirect_uri = "{redirect}"
[proxy]\nport = {port}\nforward_port = {fwd}\nca_dir = "{tmp / 'ca'}"
[token]\ncache_file = "{tmp / 'token.json'}"\n""")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(QONIC_CLIENT_SECRET=SECRET, BROWSER=str(browser), SANDBOX_CA=str(sandbox.ca_file),
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    cli = [PY, "-m", "qonic_proxy"]
    cfg = ["--config", str(config)]
    subprocess.run([*cli, "login", *cfg], env=env, check=True, timeout=60, capture_output=True)
    daemon = subprocess.Popen([*cli, "run", *cfg, "--log-level", "warning"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert daemon.stdout and daemon.stdout.readline().startswith("qonic-proxy ready")
        token = subprocess.run([*cli, "token", *cfg], env=env, check=True, capture_output=True,
                               text=True).stdout.strip()
        bundle = subprocess.run([*cli, "ca", "--bundle", *cfg], env=env, check=True,
                                capture_output=True, text=True).stdout.strip()
        url = sandbox.url + "/v1/echo"
        store = tmp / "store-and-sandbox.pem"
        paths = ssl.get_default_verify_paths()
        store.write_bytes(Path(paths.cafile or paths.openssl_cafile).read_bytes()
                          + sandbox.ca_file.read_bytes())
        curl = ["curl", "-sf", "-o", "/dev/null", "-w", TIMINGS]
        direct = [*curl, "-H", f"Authorization: Bearer {token}", url]
        via = [*curl, "-x", f"http://127.0.0.1:{fwd}", url]
        cases = {
            "direct": [*direct, "--cacert", str(sandbox.ca_file)],
            "direct+store": [*direct, "--cacert", str(store)],
            "reverse": [*curl, f"http://127.0.0.1:{port}/v1/echo"],
            "forward": [*via, "--cacert", bundle],
            "forward-ca": [*via, "--cacert", str(Path(bundle).parent / CA_CERT_FILE)],
        }
        if args.hold:  # the commands are not printed: the direct ones carry the token
            print(f"daemon pid {daemon.pid}; reverse {port}, forward {fwd}; sandbox {url}; "
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
    finally:
        stop_daemon(daemon)
        sandbox.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
