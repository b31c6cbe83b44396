"""qonic-proxy benchmark: small-request cost, gigabyte streaming, start-up time. One command.

    python bench/run.py            # full run, a few minutes on 2 cores
    python bench/run.py --quick    # smoke run, well under a minute

Everything is local (127.0.0.1) and started here as separate processes: the sandbox (OAuth and
large transfers), a fast HTTPS upstream for small requests, bare mitmproxy configured like the
daemon (baseline b), `python -m qonic_proxy run` (c), the load generator (wrk, else a Python
asyncio client) and the streaming transfer client. Every process is stopped by its pid at the
end, every wait is bounded. Results: a table on stdout and bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness  # noqa: E402
from bench.harness import Processes, Proxy  # noqa: E402

MIB = 1024 * 1024
TARGET_RATIO_B = 0.95
TARGET_RSS_MIB = 120
TARGET_RATIO_DIRECT = 0.50
TARGET_READY_S = 1.5
SMALL_PATH = "/v1/projects/p-1001/models"


# ----- load generation ------------------------------------------------------------------------
def find_wrk(install: bool) -> str | None:
    """wrk if present; installed from Debian when allowed and we are root, else None."""
    found = shutil.which("wrk")
    if found or not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("wrk is missing: installing it with apt-get (Debian package 'wrk')...", flush=True)
    try:
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True,  # noqa: S607
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)
    except (subprocess.SubprocessError, OSError):
        return None
    return shutil.which("wrk")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"unexpected wrk time {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(wrk: str, url: str, conns: int, seconds: float, headers: list[str]) -> dict[str, Any]:
    argv = [wrk, "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency",
            "--timeout", "5s"]
    for header in headers:
        argv += ["-H", header]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=seconds + 30,
                         check=True).stdout  # noqa: S603
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(pct["50"]), "p99_ms": _ms(pct["99"]), "requests": requests,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        # "read" errors count server-side closes, expected with Connection: close
        "connect_errors": int(errors.group(1)) if errors else 0,
        "timeouts": int(errors.group(4)) if errors else 0,
    }


def run_pyload(url: str, conns: int, seconds: float, headers: list[str]) -> dict[str, Any]:
    argv = [sys.executable, str(harness.BENCH / "loadgen.py"), url, "--connections", str(conns),
            "--seconds", str(seconds)]
    for header in headers:
        argv += ["--header", header]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True,
                         env=harness.child_env())  # noqa: S603
    return json.loads(out.stdout)


# ----- small requests -------------------------------------------------------------------------
def small_requests(load: Any, upstream_port: int, proxies: dict[str, Proxy], token: str,
                   seconds: float, reps: int) -> list[dict[str, Any]]:
    """Each scenario: direct once, then the proxies interleaved `reps` times (median kept).

    Besides requests/s, the proxy process's CPU time per request is recorded: on a small shared
    machine it is steadier than throughput, which the load generator and upstream also move.
    """
    auth = f"Authorization: Bearer {token}"
    targets: dict[str, tuple[str, list[str], int | None]] = {
        "a_direct": (f"https://127.0.0.1:{upstream_port}{SMALL_PATH}", [auth], None)}
    for name, proxy in proxies.items():
        headers = [auth] if name.startswith("b_") else []  # bare mitmproxy adds no token
        targets[name] = (f"http://127.0.0.1:{proxy.reverse_port}{SMALL_PATH}", headers,
                         proxy.pid)
    for url, headers, _ in targets.values():  # warm-up: imports, caches, first TLS contexts
        load(url, 8, 1, headers)
    rows = []
    for keep_alive in (True, False):
        for conns in (1, 32):
            row: dict[str, Any] = {"keep_alive": keep_alive, "concurrency": conns}
            extra = [] if keep_alive else ["Connection: close"]
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
            order = ["a_direct"] + [name for name in proxies] * reps  # interleaved: drift
            for name in order:
                url, headers, pid = targets[name]
                cpu = harness.cpu_seconds(pid) if pid else 0.0
                result = load(url, conns, seconds, headers + extra)
                if pid and result["requests"]:
                    result["cpu_us_per_request"] = (
                        (harness.cpu_seconds(pid) - cpu) / result["requests"] * 1e6)
                runs[name].append(result)
            for name, results in runs.items():
                middle = statistics.median_high([r["rps"] for r in results])
                chosen = next(r for r in results if r["rps"] == middle)
                row[name] = {**chosen, "rps_all": [r["rps"] for r in results]}
                if "cpu_us_per_request" in chosen:
                    row[name]["cpu_us_per_request"] = statistics.median(
                        r["cpu_us_per_request"] for r in results)
            b, c = row["b_mitmproxy"], row["c_qonic"]
            row["c_over_b"] = c["rps"] / b["rps"]
            row["c_over_a"] = c["rps"] / row["a_direct"]["rps"]
            row["b_over_a"] = b["rps"] / row["a_direct"]["rps"]
            row["cpu_c_over_b"] = c["cpu_us_per_request"] / b["cpu_us_per_request"]
            if "c2_variant" in row:
                row["c2_over_b"] = row["c2_variant"]["rps"] / b["rps"]
                row["cpu_c2_over_b"] = (row["c2_variant"]["cpu_us_per_request"]
                                        / b["cpu_us_per_request"])
            rows.append(row)
            variant = (f"  c2/b={row['c2_over_b']:.3f}" if "c2_over_b" in row else "")
            print(f"  small {'keep-alive' if keep_alive else 'new-conn  '} c={conns:<2} "
                  f"a={row['a_direct']['rps']:7.0f}  b={b['rps']:5.0f}  c={c['rps']:5.0f} req/s"
                  f"  c/b={row['c_over_b']:.3f}{variant}  cpu/req b={b['cpu_us_per_request']:.0f}"
                  f" c={c['cpu_us_per_request']:.0f} us", flush=True)
    return rows


# ----- large transfers ------------------------------------------------------------------------
def transfer(procs: Processes, op: str, mode: str, size: int, sandbox: harness.SandboxInfo,
             proxy: Proxy | None, token: str | None) -> dict[str, Any]:
    api = sandbox.url.split("//", 1)[1]
    argv = [sys.executable, str(harness.BENCH / "transfer.py"), op, "--mode", mode,
            "--size", str(size), "--api", api, "--api-ca", str(sandbox.ca_file),
            "--timeout", "60"]
    if proxy is not None:
        port = proxy.reverse_port if mode == "reverse" else proxy.forward_port
        argv += ["--proxy-port", str(port), "--proxy-ca", str(proxy.ca_cert)]
    env = harness.child_env({"BENCH_TOKEN": token} if token else None)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False,
                         env=env)  # noqa: S603
    if out.returncode != 0:
        raise RuntimeError(f"{op} via {mode} failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout)


def large_transfers(procs: Processes, sandbox: harness.SandboxInfo, big_config: Path,
                    bare_config: Path, token: str, size: int, with_bare: bool,
                    ) -> list[dict[str, Any]]:
    from qonic_proxy.sandbox.patterns import pattern_sha256

    expected = pattern_sha256(size)
    rows = []
    direct = {op: transfer(procs, op, "direct", size, sandbox, None, token)
              for op in ("download", "upload")}
    for op, result in direct.items():
        rows.append(_transfer_row("a_direct", op, "direct", result, size, expected, None, None))
    kinds = [("c_qonic", big_config)] + ([("b_mitmproxy", bare_config)] if with_bare else [])
    for kind, config in kinds:
        for mode in ("reverse", "forward"):
            for op in ("download", "upload"):
                # a fresh proxy per transfer, so VmHWM is this transfer's peak alone
                if kind == "c_qonic":
                    proxy = harness.start_daemon(procs, config, name=f"qonic-{mode}-{op}")
                else:
                    proxy = harness.start_bare_mitmproxy(procs, config, name=f"bare-{mode}-{op}")
                idle = harness.vm_hwm_kib(proxy.pid)
                result = transfer(procs, op, mode, size, sandbox, proxy,
                                  token if kind == "b_mitmproxy" else None)
                peak = harness.vm_hwm_kib(proxy.pid)
                procs.stop(proxy.started)
                row = _transfer_row(kind, op, mode, result, size, expected, peak, idle)
                row["vs_direct"] = row["mb_per_s"] / next(
                    r["mb_per_s"] for r in rows if r["kind"] == "a_direct" and r["op"] == op)
                rows.append(row)
                print(f"  {size // MIB} MiB {op:8} {kind:11} {mode:7} {row['mb_per_s']:7.1f} MB/s "
                      f"({row['vs_direct']:.0%} of direct)  peak RSS {peak / 1024:5.1f} MiB  "
                      f"sha256 {'ok' if row['sha256_ok'] else 'MISMATCH'}", flush=True)
    return rows


def _transfer_row(kind: str, op: str, mode: str, result: dict[str, Any], size: int,
                  expected: str, peak_kib: int | None, idle_kib: int | None) -> dict[str, Any]:
    return {
        "kind": kind, "op": op, "mode": mode, "bytes": size, "status": result["status"],
        "seconds": result["seconds"], "mb_per_s": size / result["seconds"] / 1e6,
        "sha256_sent": expected, "sha256_arrived": result["sha256"],
        "sha256_ok": result["status"] == 200 and result["sha256"] == expected
        and (result["server_bytes"] in (None, size)) and result["bytes"] == size,
        "peak_rss_mib": None if peak_kib is None else peak_kib / 1024,
        "idle_rss_mib": None if idle_kib is None else idle_kib / 1024,
    }


# ----- start-up -------------------------------------------------------------------------------
def ready_times(procs: Processes, config: Path, starts: int) -> dict[str, Any]:
    """Spawn to ready line, and spawn to /-/health answering 200, with a cached token."""
    ready, healthy = [], []
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for i in range(starts):
        begin = time.monotonic()
        proxy = harness.start_daemon(procs, config, name=f"qonic-start-{i}")
        ready.append(proxy.ready_seconds)
        url = f"http://127.0.0.1:{proxy.reverse_port}/-/health"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with opener.open(url, timeout=2) as response:
                    if response.status == 200:
                        healthy.append(time.monotonic() - begin)
                        break
            except OSError:
                time.sleep(0.01)
        procs.stop(proxy.started)
    return {"ready_s": ready, "median_ready_s": statistics.median(ready),
            "health_200_s": healthy,
            "median_health_200_s": statistics.median(healthy) if healthy else None}


# ----- report ---------------------------------------------------------------------------------
def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []
    if "small" in results:
        targets.append(_small_target(results["small"]))
    if "large" in results:
        targets += _large_targets(results["large"], results["meta"]["transfer_bytes"] // MIB)
    if "ready" in results:
        median = results["ready"]["median_ready_s"]
        targets.append({
            "target": f"ready < {TARGET_READY_S} s with a cached token (median)",
            "measured": f"{median:.2f} s", "pass": median < TARGET_READY_S})
    return targets


def _small_target(small: list[dict[str, Any]]) -> dict[str, Any]:
    worst = min(small, key=lambda r: r["c_over_b"])
    return {
        "target": f"small requests: qonic >= {TARGET_RATIO_B:.0%} of bare mitmproxy (all 4)",
        "measured": f"worst c/b {worst['c_over_b']:.3f} "
                    f"({'keep-alive' if worst['keep_alive'] else 'new-conn'} "
                    f"c={worst['concurrency']})",
        "pass": all(r["c_over_b"] >= TARGET_RATIO_B for r in small)}


def _large_targets(large: list[dict[str, Any]], size_mib: int) -> list[dict[str, Any]]:
    targets = []
    ours = [r for r in large if r["kind"] == "c_qonic"]
    peak = max(r["peak_rss_mib"] for r in ours)
    targets.append({
        "target": f"{size_mib} MiB transfers: peak RSS < {TARGET_RSS_MIB} MiB, identical SHA-256 "
                  "(all 4)",
        "measured": f"max peak {peak:.1f} MiB, sha256 "
                    f"{'identical' if all(r['sha256_ok'] for r in ours) else 'MISMATCH'}",
        "pass": peak < TARGET_RSS_MIB and all(r["sha256_ok"] for r in ours)
        and len(ours) == 4})
    slowest = min(ours, key=lambda r: r["vs_direct"])
    targets.append({
        "target": f"large-transfer throughput >= {TARGET_RATIO_DIRECT:.0%} of direct (all 4)",
        "measured": f"worst {slowest['vs_direct']:.0%} ({slowest['op']} {slowest['mode']})",
        "pass": all(r["vs_direct"] >= TARGET_RATIO_DIRECT for r in ours)})
    return targets


def print_table(results: dict[str, Any]) -> None:
    if "small" in results:
        _print_small(results)
    if "large" in results:
        _print_large(results)
    if "ready" in results:
        _print_ready(results)
    print("\nTargets:")
    for target in results["targets"]:
        print(f"  {'PASS' if target['pass'] else 'FAIL'}  {target['target']}: "
              f"{target['measured']}")


def _print_small(results: dict[str, Any]) -> None:
    print("\nSmall requests (~1 KiB JSON, reverse mode): req/s, p50/p99 ms; proxy CPU us/request")
    print(f"  {'connections':<10} {'c':>2} | {'a direct':>20} | {'b mitmproxy':>26} | "
          f"{'c qonic-proxy':>26} | {'c/b':>5} {'c/a':>5} {'cpu c/b':>7}")
    for row in results["small"]:
        cells = [f"{row[k]['rps']:6.0f} {row[k]['p50_ms']:6.2f}/{row[k]['p99_ms']:6.2f}"
                 for k in ("a_direct", "b_mitmproxy", "c_qonic")]
        cells[1:] = [f"{cell} {row[k]['cpu_us_per_request']:5.0f}"
                     for cell, k in zip(cells[1:], ("b_mitmproxy", "c_qonic"), strict=True)]
        print(f"  {'keep-alive' if row['keep_alive'] else 'new each':<10} "
              f"{row['concurrency']:>2} | {cells[0]:>20} | {cells[1]:>26} | {cells[2]:>26} | "
              f"{row['c_over_b']:5.2f} {row['c_over_a']:5.2f} {row['cpu_c_over_b']:7.2f}")
        if "c2_variant" in row:
            v = row["c2_variant"]
            print(f"  {'':<10} {'':>2}   variant c2 ({results['meta']['variant']}): "
                  f"{v['rps']:6.0f} req/s {v['p50_ms']:.2f}/{v['p99_ms']:.2f} ms "
                  f"{v['cpu_us_per_request']:.0f} us/req, c2/b {row['c2_over_b']:.2f}, "
                  f"cpu c2/b {row['cpu_c2_over_b']:.2f}")


def _print_large(results: dict[str, Any]) -> None:
    size = results["meta"]["transfer_bytes"] // MIB
    print(f"\nLarge transfers ({size} MiB): MB/s, share of direct, proxy peak RSS, SHA-256")
    for row in results["large"]:
        rss = "" if row["peak_rss_mib"] is None else f"{row['peak_rss_mib']:6.1f} MiB"
        share = f"{row['vs_direct']:5.0%}" if "vs_direct" in row else "     "
        print(f"  {row['op']:8} {row['kind']:11} {row['mode']:7} {row['mb_per_s']:7.1f} MB/s "
              f"{share} {rss:>10}  {'sha ok' if row['sha256_ok'] else 'SHA MISMATCH'}")


def _print_ready(results: dict[str, Any]) -> None:
    ready = results["ready"]
    print(f"\nStart-up with a cached token: ready line median {ready['median_ready_s']:.2f} s "
          f"(all: {', '.join(f'{s:.2f}' for s in ready['ready_s'])}); /-/health 200 median "
          f"{ready['median_health_200_s'] or float('nan'):.2f} s")


# ----- main -----------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 s load runs, 64 MiB transfers, 2 starts")
    parser.add_argument("--seconds", type=float, help="duration of each load run")
    parser.add_argument("--reps", type=int, help="interleaved b/c repetitions per scenario")
    parser.add_argument("--size-mib", type=int, help="size of each large transfer")
    parser.add_argument("--starts", type=int, help="start-ups timed")
    parser.add_argument("--with-bare-transfers", action="store_true",
                        help="also push the large transfers through bare mitmproxy")
    parser.add_argument("--parts", default="small,large,ready",
                        help="comma-separated subset of small,large,ready (default: all)")
    parser.add_argument("--variant", metavar="TWEAKS",
                        help="also measure qonic-proxy with these bench/variant.py tweaks (c2)")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    parser.add_argument("--python-load", action="store_true",
                        help="use the Python load generator even when wrk is available")
    parser.add_argument("--out", type=Path,
                        default=harness.BENCH / "results" / "latest.json")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args()
    seconds = args.seconds or (1.0 if args.quick else 4.0)
    reps = args.reps or (1 if args.quick else 3)
    size = (args.size_mib or (64 if args.quick else 1024)) * MIB
    starts = args.starts or (2 if args.quick else 5)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - {"small", "large", "ready"}:
        parser.error("--parts takes a comma-separated subset of small,large,ready")

    wrk = None if args.python_load else find_wrk(install=not args.no_install)
    load = (lambda *a: run_wrk(wrk, *a)) if wrk else run_pyload  # type: ignore[arg-type]
    print(f"load generator: {wrk or 'bench/loadgen.py (Python asyncio; wrk not available)'}")
    import mitmproxy.version

    results: dict[str, Any] = {"meta": {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": args.quick,
        "python": platform.python_version(), "mitmproxy": mitmproxy.version.VERSION,
        "cpus": os.cpu_count(), "platform": platform.platform(),
        "load_generator": "wrk" if wrk else "python-asyncio", "load_seconds": seconds,
        "reps": reps, "transfer_bytes": size, "starts": starts, "variant": args.variant,
    }}
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="qonic-bench-"))
    try:
        with Processes(workdir / "logs") as procs:
            sandbox = harness.start_sandbox(procs, workdir / "tls")
            upstream = procs.start("upstream", [
                sys.executable, str(harness.BENCH / "upstream.py"),
                "--cert", str(sandbox.cert_file), "--key", str(sandbox.key_file)])
            upstream_port = int(upstream.wait_line("upstream ready:", 15).split("=")[1])
            small_cfg = harness.write_config(
                workdir / "small" / "config.toml", api_url=f"https://127.0.0.1:{upstream_port}",
                sandbox=sandbox, workdir=workdir / "small")
            bare_small_cfg = harness.write_config(
                workdir / "bare-small" / "config.toml",
                api_url=f"https://127.0.0.1:{upstream_port}", sandbox=sandbox,
                workdir=workdir / "bare-small")
            big_cfg = harness.write_config(
                workdir / "big" / "config.toml", api_url=sandbox.url, sandbox=sandbox,
                workdir=workdir / "big", forward_port=harness.free_port())
            bare_big_cfg = harness.write_config(
                workdir / "bare-big" / "config.toml", api_url=sandbox.url, sandbox=sandbox,
                workdir=workdir / "bare-big", forward_port=harness.free_port())
            token = harness.scripted_login(small_cfg)
            harness.copy_login(small_cfg, big_cfg)

            qonic = harness.start_daemon(procs, small_cfg, name="qonic-small")
            first_start = qonic.ready_seconds  # includes creating the interception CA
            if "small" in parts:
                print("small requests...", flush=True)
                proxies = {"b_mitmproxy": harness.start_bare_mitmproxy(procs, bare_small_cfg),
                           "c_qonic": qonic}
                if args.variant:
                    variant_cfg = harness.write_config(
                        workdir / "variant" / "config.toml",
                        api_url=f"https://127.0.0.1:{upstream_port}", sandbox=sandbox,
                        workdir=workdir / "variant")
                    harness.copy_login(small_cfg, variant_cfg)
                    proxies["c2_variant"] = harness.start_daemon(
                        procs, variant_cfg, name="qonic-variant", tweaks=args.variant)
                results["small"] = small_requests(load, upstream_port, proxies, token,
                                                  seconds, reps)
                for name, proxy in proxies.items():
                    if name != "c_qonic":
                        procs.stop(proxy.started)
            procs.stop(qonic.started)
            if "large" in parts:
                print("large transfers...", flush=True)
                results["large"] = large_transfers(procs, sandbox, big_cfg, bare_big_cfg,
                                                   token, size, args.with_bare_transfers)
            if "ready" in parts:
                print("start-up...", flush=True)
                results["ready"] = ready_times(procs, small_cfg, starts)
                results["ready"]["first_start_with_ca_creation_s"] = first_start
    finally:
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["meta"]["total_seconds"] = time.monotonic() - began
    results["targets"] = evaluate(results)
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out} ({results['meta']['total_seconds']:.0f} s)")
    return 0 if all(t["pass"] for t in results["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
