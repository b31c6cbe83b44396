"""End-to-end, as a new user: a clean HOME and only the installed `qonic-proxy` console script."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.cli.user import User, new_user

pytestmark = pytest.mark.e2e


@pytest.fixture
def user(tmp_path: Path) -> User:
    return new_user(tmp_path)


def test_no_config_points_at_init_and_init_writes_one(user: User) -> None:
    first = user.run("status")
    assert first.returncode == 78
    assert "qonic-proxy init --client-id ID" in first.stderr
    assert "Traceback" not in first.stderr

    made = user.run("init", "--client-id", "my-app")
    assert made.returncode == 0, made.stderr
    assert f"Wrote {user.config_file}" in made.stdout and "qonic-proxy login" in made.stdout
    assert stat.S_IMODE(user.config_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(user.config_file.parent.stat().st_mode) == 0o700

    again = user.run("init")
    assert again.returncode == 1 and "--force" in again.stderr

    found = user.run("status", "--json")
    assert found.returncode == 1, found.stderr  # the config is found; no login yet
    assert '"logged_in": false' in found.stdout


def test_the_cli_edges_a_new_user_hits(user: User) -> None:
    typo = user.run("stauts")
    assert typo.returncode == 2
    assert "unknown command 'stauts' (did you mean status?)" in typo.stderr
    assert "init, run, login" in typo.stderr

    assert user.run("help").returncode == 0
    explained = user.run("help", "exec")
    assert explained.returncode == 0 and "QONIC_API_URL" in explained.stdout

    config = user.home / "qp.toml"
    assert user.run("init", "--config", str(config), "--client-id", "c").returncode == 0
    before = user.run("--config", str(config), "status", "--log-level", "DEBUG")
    after = user.run("status", "--config", str(config))
    assert before.returncode == after.returncode == 1, before.stderr
    assert before.stdout == after.stdout and "NOT logged in" in after.stdout

    wrong = user.run("status", "--jsn", "--config", str(config))
    assert wrong.returncode == 2 and "(did you mean --json?)" in wrong.stderr
    assert "usage: qonic-proxy status" in wrong.stderr
    assert "--config" not in user.run("demo", "--help").stdout
