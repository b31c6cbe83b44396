"""The systemd units: required directives, `systemd/check-units.sh` (verify + security score)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "systemd"
SYSTEM_UNIT = SYSTEMD / "qonic-proxy.service"
USER_UNIT = SYSTEMD / "qonic-proxy-user.service"
CHECK = SYSTEMD / "check-units.sh"
MAX_EXPOSURE = 1.5

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (apt-get install systemd); CI runs these checks",
)


def directives(path: Path) -> dict[tuple[str, str], list[str]]:
    """(section, key) -> every value assigned, in order (unit files allow repeated keys)."""
    out: dict[tuple[str, str], list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        assert not line.endswith("\\"), f"{path.name}: keep directives on one line: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {line}"
        out.setdefault((section, key.strip()), []).append(value.strip())
    return out


def one(units: dict[tuple[str, str], list[str]], key: str, section: str = "Service") -> str:
    values = units.get((section, key))
    assert values, f"{key}= missing in [{section}]"
    return values[-1]


@pytest.mark.parametrize("path", [SYSTEM_UNIT, USER_UNIT], ids=["system", "user"])
def test_both_units_notify_watchdog_and_do_not_restart_on_config_errors(path: Path) -> None:
    u = directives(path)
    assert one(u, "Type") == "notify"
    assert one(u, "NotifyAccess") == "main"
    assert re.fullmatch(r"[1-9][0-9]*s", one(u, "WatchdogSec"))
    assert one(u, "Restart") == "on-failure"
    assert "78" in one(u, "RestartPreventExitStatus").split()
    assert one(u, "NoNewPrivileges") == "yes"
    assert one(u, "ProtectSystem") == "strict"
    assert one(u, "RestrictAddressFamilies").split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert one(u, "UMask") == "0077"
    # pyOpenSSL's cffi callbacks need W+X memory: see test_memory_deny_write_execute_...
    assert u.get(("Service", "MemoryDenyWriteExecute"), ["no"])[-1] == "no"
    # The proxy must reach api.qonic.com, whose addresses are not ours to pin.
    assert ("Service", "IPAddressDeny") not in u


def test_system_unit_directives() -> None:
    u = directives(SYSTEM_UNIT)
    assert one(u, "ExecStart") == (
        "/opt/qonic-proxy/bin/qonic-proxy run --config /etc/qonic-proxy/config.toml "
        "--log-format json"
    )
    assert one(u, "LoadCredential") == "client_secret:/etc/qonic-proxy/client_secret"
    assert one(u, "StateDirectory") == "qonic-proxy"
    assert one(u, "StateDirectoryMode") == "0700"  # the token cache refuses looser folders
    assert one(u, "CacheDirectory") == "qonic-proxy"
    assert one(u, "ConfigurationDirectory") == "qonic-proxy"
    assert one(u, "DynamicUser") == "yes"
    assert one(u, "User") == "qonic-proxy"  # fixed name: `systemd-run -p User=` can share it
    assert one(u, "CapabilityBoundingSet") == ""
    assert one(u, "ProtectHome") == "yes"
    assert one(u, "PrivateTmp") == "yes"
    assert one(u, "ProtectProc") == "invisible"
    assert u[("Service", "SystemCallFilter")] == ["@system-service", "~@privileged @resources"]
    # platformdirs defaults must land in the state dir: token cache and CA survive restarts.
    env = " ".join(u[("Service", "Environment")]).split()
    assert "XDG_STATE_HOME=%S" in env and "XDG_DATA_HOME=%S" in env
    assert "HOME=%S/qonic-proxy" in env
    assert one(u, "WantedBy", "Install") == "multi-user.target"


def test_user_unit_directives() -> None:
    u = directives(USER_UNIT)
    assert one(u, "ExecStart") == "%h/.local/bin/qonic-proxy run"
    rw = one(u, "ReadWritePaths").split()
    # Exactly where platformdirs puts the token cache and the CA for this user.
    assert rw == ["%h/.local/state/qonic-proxy", "%h/.local/share/qonic-proxy"]
    assert one(u, "ExecStartPre").startswith("+mkdir -p -m 0700 " + " ".join(rw))
    assert one(u, "ProtectHome") == "read-only"
    assert one(u, "WantedBy", "Install") == "default.target"


def _qonic_proxy_executable(tmp_path: Path) -> Path:
    """The installed console script, or a stand-in that runs this checkout's package."""
    for candidate in (Path(sys.executable).parent / "qonic-proxy", shutil.which("qonic-proxy")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    script = tmp_path / "qonic-proxy"
    script.write_text(
        f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m qonic_proxy "$@"\n'
    )
    script.chmod(0o755)
    return script


def _run_check(script: Path, exe: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYSTEMD_")}
    return subprocess.run(
        ["bash", str(script), str(exe)], capture_output=True, text=True, timeout=180, env=env
    )


def _copy_of_systemd_dir(tmp_path: Path) -> Path:
    copy = tmp_path / "systemd"
    shutil.copytree(SYSTEMD, copy)
    return copy


@needs_analyze
def test_check_units_passes_and_reports_the_exposure(tmp_path: Path) -> None:
    result = _run_check(CHECK, _qonic_proxy_executable(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   verify qonic-proxy.service: no output" in result.stdout
    assert "ok   verify qonic-proxy-user.service: no output" in result.stdout
    score = re.search(r"ok   security qonic-proxy.service: exposure ([0-9.]+)", result.stdout)
    assert score, result.stdout
    assert float(score.group(1)) <= MAX_EXPOSURE


@needs_analyze
def test_the_shared_machine_dropin_keeps_the_exposure_within_the_limit(tmp_path: Path) -> None:
    result = _run_check(CHECK, _qonic_proxy_executable(tmp_path))
    assert "ok   verify qonic-proxy.service + shared-machine.conf: no output" in result.stdout
    score = re.search(r"ok   security qonic-proxy.service \+ shared-machine.conf: exposure "
                      r"([0-9.]+)", result.stdout)
    assert score, result.stdout
    assert float(score.group(1)) <= MAX_EXPOSURE


def test_the_shared_machine_dropin_only_opens_what_peer_identity_needs() -> None:
    """PrivateUsers=no and AF_NETLINK (sock_diag), nothing else: every other line of the
    system unit's hardening stays in force under the drop-in."""
    dropin = (ROOT / "systemd" / "shared-machine.conf").read_text()
    settings = [line for line in dropin.splitlines() if line and not line.startswith("#")]
    assert settings == ["[Service]", "PrivateUsers=no", "RestrictAddressFamilies=",
                        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK"]


@needs_analyze
@pytest.mark.parametrize("unit", ["qonic-proxy.service", "qonic-proxy-user.service"])
def test_check_units_fails_on_any_verify_warning(tmp_path: Path, unit: str) -> None:
    copy = _copy_of_systemd_dir(tmp_path)
    path = copy / unit
    path.write_text(path.read_text().replace("WatchdogSec=30s", "WatchdogSec=thirty"))
    result = _run_check(copy / "check-units.sh", _qonic_proxy_executable(tmp_path))
    assert result.returncode != 0
    assert f"FAIL verify {unit}" in result.stdout
    assert "thirty" in result.stdout  # the warning itself is shown, not just "failed"


@needs_analyze
def test_check_units_fails_when_hardening_is_weakened(tmp_path: Path) -> None:
    copy = _copy_of_systemd_dir(tmp_path)
    path = copy / "qonic-proxy.service"
    weakened = [
        line
        for line in path.read_text().splitlines()
        if not line.startswith(("SystemCallFilter=", "PrivateUsers=", "RestrictNamespaces="))
    ]
    path.write_text("\n".join(weakened) + "\n")
    result = _run_check(copy / "check-units.sh", _qonic_proxy_executable(tmp_path))
    assert result.returncode != 0
    assert re.search(r"FAIL security qonic-proxy.service: exposure ([0-9.]+)", result.stdout)
    assert "ok   verify qonic-proxy.service" in result.stdout  # still a valid unit


@needs_analyze
def test_check_units_rejects_a_missing_executable(tmp_path: Path) -> None:
    result = _run_check(CHECK, tmp_path / "nope")
    assert result.returncode != 0
    assert "is not an executable file" in result.stderr


PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def _kernel_has_mdwe() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", f"import ctypes,sys; sys.exit(ctypes.CDLL(None).prctl("
         f"{PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0)"],
        timeout=30,
    )
    return probe.returncode == 0


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_MDWE is Linux-only")
def test_memory_deny_write_execute_would_break_tls() -> None:
    """Why the units leave MemoryDenyWriteExecute= off, checked with the kernel's equivalent.

    PR_SET_MDWE (Linux 6.3+) refuses write+execute mappings like systemd's seccomp filter does.
    If this starts to fail, pyOpenSSL/cffi no longer need W+X memory: switch it on in the units.
    """
    if not _kernel_has_mdwe():
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    code = textwrap.dedent(
        f"""
        import ctypes
        assert ctypes.CDLL(None).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) == 0
        from OpenSSL import SSL
        ctx = SSL.Context(SSL.TLS_METHOD)
        try:
            ctx.set_verify(SSL.VERIFY_PEER, lambda *args: True)  # what mitmproxy does upstream
        except MemoryError as exc:
            print("refused:", exc)
        else:
            print("allowed")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused:"), (
        "cffi callbacks work under W^X now: enable MemoryDenyWriteExecute= in the units"
    )
