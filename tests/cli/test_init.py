"""Tests for qonic_proxy.cli.init: `qonic-proxy init` writes the example, privately, never over."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import platformdirs
import pytest

from qonic_proxy.cli.main import main
from qonic_proxy.config.example import example_text
from qonic_proxy.config.loader import load_config
from qonic_proxy.errors import ExitStatus
from tests.cli.helpers import RecordingEnvironment


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(platformdirs, "user_config_path", lambda app: tmp_path / "cfg" / app)
    monkeypatch.delenv("QONIC_PROXY_CONFIG", raising=False)
    return tmp_path / "cfg" / "qonic-proxy"


def init(*args: str) -> tuple[int, RecordingEnvironment]:
    env = RecordingEnvironment()
    return main(["init", *args], env), env


def test_init_writes_the_example_privately(config_home: Path) -> None:
    status, env = init()
    target = config_home / "config.toml"
    assert status == ExitStatus.OK, env.err
    assert target.read_text() == example_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_home.stat().st_mode) == 0o700
    assert f"Wrote {target}" in env.out
    assert "set [oauth] client_id" in env.out and "qonic-proxy login" in env.out


def test_init_fills_client_id_and_api_url(config_home: Path) -> None:
    status, env = init("--client-id", "my-app", "--api-url", "https://Qonic.Test:8443/")
    assert status == ExitStatus.OK, env.err
    data = tomllib.loads((config_home / "config.toml").read_text())
    assert data["oauth"]["client_id"] == "my-app"
    assert data["qonic"]["api_url"] == "https://qonic.test:8443"
    assert "QONIC_CLIENT_SECRET" in env.out
    assert load_config(config_home / "config.toml", {}).oauth.client_id == "my-app"


def test_init_never_overwrites_without_force(config_home: Path) -> None:
    config_home.mkdir(parents=True)
    (config_home / "config.toml").write_text("# mine\n")
    status, env = init("--client-id", "x")
    assert status == ExitStatus.FAILURE
    assert (config_home / "config.toml").read_text() == "# mine\n"
    assert "already exists" in env.err and "--force" in env.err
    status, env = init("--client-id", "x", "--force")
    assert status == ExitStatus.OK, env.err
    assert 'client_id = "x"' in (config_home / "config.toml").read_text()


def test_init_with_config_writes_there(tmp_path: Path, config_home: Path) -> None:
    target = tmp_path / "elsewhere" / "qp.toml"
    status, env = init("--config", str(target))
    assert status == ExitStatus.OK, env.err
    assert target.read_text() == example_text()
    assert not (config_home / "config.toml").exists()


@pytest.mark.parametrize(("args", "words"), [
    (("--api-url", "ftp://qonic.test"), "--api-url must use https://"),
    (("--api-url", "https://qonic.test/v1"), "--api-url must be an origin without a path"),
    (("--client-id", "two words"), "--client-id is empty or contains spaces"),
])
def test_init_checks_values_before_writing(config_home: Path, args: tuple[str, ...],
                                           words: str) -> None:
    status, env = init(*args)
    assert status == ExitStatus.USAGE
    assert words in env.err
    assert env.err.count("\n") == 1
    assert not (config_home / "config.toml").exists()


def test_init_notes_a_config_variable_that_wins(config_home: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QONIC_PROXY_CONFIG", str(tmp_path / "other.toml"))
    status, env = init()
    assert status == ExitStatus.OK
    assert "$QONIC_PROXY_CONFIG is set" in env.out
