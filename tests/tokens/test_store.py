"""The token cache file: private modes, atomic replacement, refusal of loose files, the lock."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qonic_proxy.config.model import (
    Config,
    OAuthSettings,
    ProxySettings,
    QonicSettings,
    TokenSettings,
)
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.oauth.tokenset import TokenSet
from qonic_proxy.tokens.store import TokenStore, cache_key

ACCESS = "access-token-for-the-store-test"
REFRESH = "refresh-token-for-the-store-test"


def make_cfg(
    token_url: str = "https://api.qonic.com/v1/auth/token",  # noqa: S107 - a URL
    client_id: str = "client",
    scopes: tuple[str, ...] = ("projects:read", "models:read"),
) -> Config:
    return Config(
        path=None,
        qonic=QonicSettings(
            api_url="https://api.qonic.com",
            authorize_url="https://api.qonic.com/v1/auth/authorize",
            token_url=token_url,
            ca_file=None,
        ),
        oauth=OAuthSettings(
            client_id=client_id,
            client_secret=None,
            secret_source="none",
            scopes=scopes,
            redirect_uri="http://localhost:8765/callback",
            open_browser=False,
            login_timeout=60,
        ),
        proxy=ProxySettings(
            listen_host="127.0.0.1",
            port=8080,
            forward_port=0,
            allowed_hosts=("127.0.0.1",),
            client_key_file=None,
            ca_dir=Path("/nonexistent"),
        ),
        token=TokenSettings(cache_file=Path("/nonexistent"), refresh_margin=60),
    )


def tokens(access: str = ACCESS) -> TokenSet:
    return TokenSet(
        access_token=access,
        refresh_token=REFRESH,
        expires_at=2_000_000_000.0,
        scopes=("projects:read",),
        token_type="Bearer",
        obtained_at=1_700_000_000.0,
    )


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "state" / "qonic-proxy" / "tokens.json", cache_key(make_cfg()))


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- cache_key ---------------------------------------------------------------------------


def test_cache_key_is_a_hash_that_depends_on_endpoint_client_and_scopes() -> None:
    key = cache_key(make_cfg())
    assert len(key) == 64 and int(key, 16) >= 0
    assert "client" not in key and "projects" not in key
    assert cache_key(make_cfg(scopes=("models:read", "projects:read"))) == key  # order-free
    assert cache_key(make_cfg(scopes=("projects:read",))) != key
    assert cache_key(make_cfg(client_id="other")) != key
    assert cache_key(make_cfg(token_url="https://other.example/token")) != key


# -- round trip and file safety ----------------------------------------------------------


def test_missing_file_loads_none(store: TokenStore) -> None:
    assert store.load() is None
    assert store.mtime_ns() is None
    assert store.delete() is False


def test_round_trip_modes_and_format(store: TokenStore) -> None:
    store.save(tokens())
    assert store.load() == tokens()
    assert mode(store.path) == 0o600
    assert mode(store.path.parent) == 0o700
    data = json.loads(store.path.read_text())
    assert data == {"version": 1, "key": store.key, "tokens": tokens().to_json()}
    assert "client" not in store.path.read_text().replace(REFRESH, "").replace(ACCESS, "")


def test_save_under_a_permissive_umask_is_still_private(store: TokenStore) -> None:
    old = os.umask(0)
    try:
        store.save(tokens())
    finally:
        os.umask(old)
    assert mode(store.path) == 0o600 and mode(store.path.parent) == 0o700


def test_save_tightens_an_existing_loose_folder(store: TokenStore) -> None:
    store.path.parent.mkdir(parents=True)
    os.chmod(store.path.parent, 0o755)  # noqa: S103 - the loose folder under test
    store.save(tokens())
    assert mode(store.path.parent) == 0o700


def test_atomic_replace_leaves_no_temp_files(store: TokenStore) -> None:
    store.save(tokens("first-access-token"))
    inode = os.stat(store.path).st_ino
    store.save(tokens("second-access-token"))
    assert os.stat(store.path).st_ino != inode  # replaced by rename, not rewritten in place
    assert store.load() == tokens("second-access-token")
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["tokens.json"]


def test_failed_save_leaves_old_file_and_no_temp(store: TokenStore) -> None:
    store.save(tokens())
    store.path.unlink()
    store.path.mkdir()  # os.replace onto a directory fails
    with pytest.raises(QonicProxyError) as info:
        store.save(tokens("new-access-token"))
    assert "cannot write token cache" in str(info.value)
    assert "new-access-token" not in str(info.value)
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["tokens.json"]


def test_mtime_changes_on_save(store: TokenStore) -> None:
    store.save(tokens())
    first = store.mtime_ns()
    assert first is not None
    os.utime(store.path, ns=(first - 10**9, first - 10**9))  # pretend the save was a second ago
    store.save(tokens("another-access-token"))
    second = store.mtime_ns()
    assert second is not None and second > first - 10**9


def test_delete(store: TokenStore) -> None:
    store.save(tokens())
    assert store.delete() is True
    assert not store.path.exists()
    assert store.load() is None
    assert store.delete() is False


# -- files we will not use ---------------------------------------------------------------


def write_raw(store: TokenStore, content: str) -> None:
    store.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(store.path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)


@pytest.mark.parametrize(
    ("content", "what"),
    [
        ("{not json", "is not valid JSON"),
        ("\xff\xfe garbage", "is not valid JSON"),
        ("[]", "does not have the expected shape"),
        ('{"version": 1, "key": "k"}', "does not have the expected shape"),
        ('{"version": 2, "key": "K", "tokens": {}}', "unknown format version"),
    ],
)
def test_corrupt_file_is_ignored_with_a_warning(
    store: TokenStore, caplog: pytest.LogCaptureFixture, content: str, what: str
) -> None:
    write_raw(store, content.replace('"K"', json.dumps(store.key)))
    with caplog.at_level(logging.WARNING):
        assert store.load() is None
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert what in record.getMessage() and "a new login will replace it" in record.getMessage()


def test_bad_token_shape_is_ignored_without_leaking(
    store: TokenStore, caplog: pytest.LogCaptureFixture
) -> None:
    data = tokens().to_json()
    data["expires_at"] = "tomorrow"
    write_raw(store, json.dumps({"version": 1, "key": store.key, "tokens": data}))
    with caplog.at_level(logging.DEBUG):
        assert store.load() is None
    assert "expires_at" in caplog.text
    assert ACCESS not in caplog.text and REFRESH not in caplog.text


def test_foreign_key_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens.json"
    TokenStore(path, cache_key(make_cfg(client_id="someone-else"))).save(tokens())
    with caplog.at_level(logging.WARNING):
        assert TokenStore(path, cache_key(make_cfg())).load() is None
    assert "belongs to another token endpoint, client or scope set" in caplog.text
    assert ACCESS not in caplog.text


@pytest.mark.parametrize(
    ("loose", "word"), [(0o644, "readable"), (0o640, "readable"), (0o620, "writable")]
)
def test_loose_permissions_are_refused(store: TokenStore, loose: int, word: str) -> None:
    store.save(tokens())
    os.chmod(store.path, loose)
    with pytest.raises(QonicProxyError) as info:
        store.load()
    assert str(info.value) == (
        f"token cache {store.path} is {word} by others (mode {loose:04o}); run "
        f"`chmod 600 {store.path}` or delete it"
    )
    assert info.value.exit_code == 1


def test_symlink_is_refused(store: TokenStore, tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    TokenStore(real, store.key).save(tokens())
    store.path.parent.mkdir(parents=True, mode=0o700)
    store.path.symlink_to(real)
    with pytest.raises(QonicProxyError) as info:
        store.load()
    assert "symbolic link" in str(info.value)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to create a file owned by someone else")
def test_file_of_another_user_is_refused(store: TokenStore) -> None:
    store.save(tokens())
    os.chown(store.path, 65534, 65534)
    with pytest.raises(QonicProxyError) as info:
        store.load()
    assert "belongs to another user" in str(info.value)


# -- the refresh lock --------------------------------------------------------------------


def test_refresh_lock_excludes_a_second_holder_in_this_process(store: TokenStore) -> None:
    """flock is per open file description: a second open in another thread is excluded."""
    holding = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with store.refresh_lock(timeout=5):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert holding.wait(5)
        assert mode(store.lock_path) == 0o600
        started = time.monotonic()
        with pytest.raises(QonicProxyError) as info, store.refresh_lock(timeout=0.2):
            pass
        assert 0.2 <= time.monotonic() - started < 3
        assert str(info.value).startswith("another qonic-proxy process held the token lock")
    finally:
        release.set()
        thread.join(10)
    with store.refresh_lock(timeout=1):  # free again once the holder let go
        pass


def test_refresh_lock_waits_for_a_holder_that_finishes(store: TokenStore) -> None:
    holding = threading.Event()
    order: list[str] = []

    def holder() -> None:
        with store.refresh_lock(timeout=5):
            holding.set()
            time.sleep(0.2)  # hold it for a while: the point is that the other side waits
            order.append("holder done")

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert holding.wait(5)
        with store.refresh_lock(timeout=5):
            order.append("second got it")
    finally:
        thread.join(10)
    assert order == ["holder done", "second got it"]


def test_refresh_lock_across_processes_and_release_on_death(store: TokenStore) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from qonic_proxy.tokens.store import TokenStore\n"
        "store = TokenStore(Path(sys.argv[1]), 'k')\n"
        "with store.refresh_lock(timeout=5):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(store.path)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(QonicProxyError), store.refresh_lock(timeout=0.2):
            pass
        child.kill()  # a dead holder leaves no stale lock: the kernel drops it
        child.wait(10)
        with store.refresh_lock(timeout=5):
            pass
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        if child.stdout is not None:
            child.stdout.close()


def test_tightening_a_loose_folder_is_logged(
    store: TokenStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.path.parent.mkdir(parents=True)
    os.chmod(store.path.parent, 0o750)  # noqa: S103 - the loose folder under test
    with caplog.at_level(logging.WARNING):
        store.save(tokens())
    assert "tightened the permissions of token cache folder" in caplog.text
    assert "from 0750 to 0700" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        store.save(tokens())  # already private: nothing to say
    assert caplog.text == ""


def test_loose_file_is_refused_with_the_chmod_to_run(store: TokenStore) -> None:
    store.save(tokens())
    os.chmod(store.path, 0o640)
    with pytest.raises(QonicProxyError) as info:
        store.load()
    assert "is readable by others (mode 0640)" in str(info.value)
    assert f"`chmod 600 {store.path}`" in str(info.value)
    os.chmod(store.path, 0o620)
    with pytest.raises(QonicProxyError, match=r"is writable by others \(mode 0620\)"):
        store.load()


def test_a_directory_in_place_of_the_file_is_refused(store: TokenStore) -> None:
    store.path.mkdir(parents=True)
    with pytest.raises(QonicProxyError, match="is not a regular file"):
        store.load()


def test_errors_inside_the_lock_pass_through_unchanged(store: TokenStore) -> None:
    """Only taking the lock is worded as a lock problem; the locked work's errors are its own."""
    with pytest.raises(TimeoutError, match="token endpoint"), store.refresh_lock(timeout=1):
        raise TimeoutError("token endpoint timed out")
    with store.refresh_lock(timeout=1):  # and the lock was released
        pass


def test_a_foreign_writable_folder_is_refused(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    os.chmod(folder, 0o777)  # noqa: S103 - the unsafe folder under test
    real_getuid = os.getuid
    monkeypatch.setattr(os, "getuid", lambda: real_getuid() + 1)  # as if someone else's folder
    with pytest.raises(QonicProxyError, match="is owned by another account") as caught:
        TokenStore(folder / "t.json", "k").save(tokens())
    assert caught.value.exit_code == 78


def test_a_save_into_a_reservation_replaces_the_cache(store: TokenStore) -> None:
    store.save(tokens("before"))
    reservation = store.reserve()
    assert reservation.temp.parent == store.path.parent
    assert store.load().access_token == "before"
    store.save(tokens("after"), reservation)
    assert store.load().access_token == "after"
    assert mode(store.path) == 0o600
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["tokens.json"]


def test_a_failed_reservation_says_why_in_a_cache_write_error(
        store: TokenStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from qonic_proxy import files
    from qonic_proxy.tokens.store import CacheWriteError

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "posix_fallocate", full)
    with pytest.raises(CacheWriteError) as info:
        store.reserve()
    assert info.value.reason == "No space left on device" and info.value.path == store.path
    assert str(info.value) == (f"cannot write token cache {store.path} (No space left on "
                               "device); check [token] cache_file and the permissions of its "
                               "folder")
    assert [p.name for p in store.path.parent.iterdir()] == []
