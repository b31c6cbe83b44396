"""`qonic-proxy env`: exports for sh, fish and PowerShell, their undoing, and no daemon = error."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from qonic_proxy.config.loader import load_config
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.wrap.shell_exports import VARIABLES, shell_exports
from tests.cli.fake_daemon import fake_daemon, health_answer
from tests.cli.helpers import write_config


def test_without_a_daemon_it_says_how_to_start_one(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path))
    with pytest.raises(QonicProxyError, match=r"start one with `qonic-proxy run`") as err:
        shell_exports(cfg, base={})
    assert "\n" not in str(err.value)


def test_exports_evaluate_in_sh_and_undo_restores_the_users_parts(tmp_path: Path) -> None:
    with fake_daemon() as daemon:
        cfg = load_config(write_config(tmp_path, port=daemon.port))
        daemon.health.update(health_answer("https://api.qonic.com", daemon.port,
                                           forward_port=daemon.port))
        base = {"HOME": str(tmp_path), "JAVA_TOOL_OPTIONS": "-Xmx64m",
                "PHP_INI_SCAN_DIR": "/etc/php/extra", "QONIC_CLIENT_SECRET": "s3cr3t-value"}
        text = shell_exports(cfg, base=base)
        assert "s3cr3t" not in text
        show = "".join(f'printf "%s=%s\\n" {n} "${n}"\n' for n in VARIABLES)
        shown = subprocess.run(["sh", "-c", f"{text}\n{show}"], capture_output=True, text=True,
                               env=base, check=True).stdout
        values = dict(line.split("=", 1) for line in shown.splitlines())
        assert values["HTTPS_PROXY"] == f"http://127.0.0.1:{daemon.port}"
        assert values["QONIC_API_URL"] == f"http://127.0.0.1:{daemon.port}/v1"
        assert values["SSL_CERT_FILE"] == str(cfg.proxy.ca_dir / "ca-bundle.pem")
        assert values["JAVA_TOOL_OPTIONS"].startswith("-Xmx64m -Dhttp.proxyHost=127.0.0.1 ")
        assert values["PHP_INI_SCAN_DIR"] == f"/etc/php/extra:{cfg.proxy.ca_dir / 'php.d'}"
        assert Path(values["WGETRC"]).is_file()

        undo = shell_exports(cfg, unset=True, base={**base, **values})
        after = subprocess.run(["sh", "-c", f"{undo}\n{show}"], capture_output=True,
                               text=True, env={**base, **values}, check=True).stdout
        restored = dict(line.split("=", 1) for line in after.splitlines())
        assert restored["JAVA_TOOL_OPTIONS"] == "-Xmx64m"
        assert restored["PHP_INI_SCAN_DIR"] == "/etc/php/extra"
        assert restored["HTTPS_PROXY"] == restored["WGETRC"] == ""


def test_fish_and_powershell_quoting(tmp_path: Path) -> None:
    with fake_daemon() as daemon:
        cfg = load_config(write_config(tmp_path, port=daemon.port))
        daemon.health.update(health_answer("https://api.qonic.com", daemon.port,
                                           forward_port=daemon.port))
        base = {"JAVA_TOOL_OPTIONS": "-Dx='a b'\\"}
        fish = shell_exports(cfg, "fish", base=base)
        assert "set -gx JAVA_TOOL_OPTIONS '-Dx=\\'a b\\'\\\\ -Dhttp.proxyHost" in fish
        ps = shell_exports(cfg, "powershell", base=base)
        assert "$env:JAVA_TOOL_OPTIONS = '-Dx=''a b''\\ -Dhttp.proxyHost" in ps
        assert "Remove-Item -ErrorAction SilentlyContinue Env:HTTPS_PROXY" in shell_exports(
            cfg, "powershell", unset=True, base={})
        assert "set -e HTTPS_PROXY" in shell_exports(cfg, "fish", unset=True, base={})
