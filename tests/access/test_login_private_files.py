"""With a real second local account: folders we keep private, and the cache lock file, that
another account owns are refused with exit 78 and one sentence (issue 11, point 7)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qonic_proxy.files import NotPrivate
from qonic_proxy.tokens.store import TokenStore
from tests.access.accounts import Account
from tests.harness import World

pytestmark = pytest.mark.e2e


def one_sentence(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("qonic-proxy: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("which", ["ca_dir", "state"])
def test_a_private_folder_another_account_owns_is_refused(
        world: World, accounts: list[Account], which: str) -> None:
    other = accounts[0]
    folder = world.ca_dir if which == "ca_dir" else world.cache_file.parent
    folder.mkdir(mode=0o700)
    os.chown(folder, other.uid, other.uid)  # 0700 and nobody else can write: still not ours
    result = world.cli("run", timeout=60)
    assert result.returncode == 78, result.stderr
    sentence = one_sentence(result.stderr)
    assert str(folder) in sentence and f"{other.name} (uid {other.uid})" in sentence
    assert "of your own" in sentence


def test_a_folder_others_can_write_is_refused(world: World) -> None:
    world.ca_dir.mkdir()
    world.ca_dir.chmod(0o777)  # noqa: S103 - the unsafe folder under test
    result = world.cli("run", timeout=60)
    assert result.returncode == 78, result.stderr
    sentence = one_sentence(result.stderr)
    assert f"chmod 700 {world.ca_dir}" in sentence and "mode 0777" in sentence
    assert not (world.ca_dir / "mitmproxy-ca.pem").exists()  # nothing was written there


def test_a_cache_lock_file_another_account_owns_is_refused(
        tmp_path: Path, accounts: list[Account]) -> None:
    other = accounts[0]
    store = TokenStore(tmp_path / "state" / "token.json", "k")
    store.path.parent.mkdir(mode=0o700)
    store.lock_path.touch(mode=0o600)
    os.chown(store.lock_path, other.uid, other.uid)
    with pytest.raises(NotPrivate) as caught, store.refresh_lock(timeout=1):
        pytest.fail("the lock of another account was used")
    assert caught.value.exit_code == 78
    assert f"the lock file {store.lock_path} is owned by another account, {other.name}" \
        in str(caught.value)
