"""Every config test runs with platformdirs and /etc pointed into its own temp folder."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest

from qonic_proxy.config import loader


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Keep platformdirs and /etc away from the real machine."""
    dirs = {name: tmp_path / "home" / name for name in ("config", "data", "state")}
    monkeypatch.setattr(platformdirs, "user_config_path", lambda app: dirs["config"] / app)
    monkeypatch.setattr(platformdirs, "user_data_path", lambda app: dirs["data"] / app)
    monkeypatch.setattr(platformdirs, "user_state_path", lambda app: dirs["state"] / app)
    system_file = tmp_path / "etc" / "qonic-proxy" / "config.toml"
    monkeypatch.setattr(loader, "SYSTEM_CONFIG_FILE", system_file)
    for var in ("QONIC_PROXY_CONFIG", "QONIC_CLIENT_SECRET", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)
    return dirs
