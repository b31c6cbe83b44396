"""Tests for qonic_proxy.files: the privacy rules every secret-holding file follows."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qonic_proxy import files
from qonic_proxy.files import NotPrivate, UnsafeFile


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_private_dir_is_created_0700_with_parents(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    assert files.ensure_private_dir(folder) is False
    assert mode_of(folder) == 0o700


def test_private_dir_of_ours_is_tightened_and_reported(tmp_path: Path) -> None:
    folder = tmp_path / "loose"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    assert files.ensure_private_dir(folder) is True
    assert mode_of(folder) == 0o700
    assert files.ensure_private_dir(folder) is False  # already private: nothing to say


def test_home_folder_is_never_tightened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    monkeypatch.setenv("HOME", str(home))
    assert files.ensure_private_dir(home) is False
    assert mode_of(home) == 0o755


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to create a folder owned by another uid")
def test_foreign_folder_writable_by_others_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "foreign"
    folder.mkdir()
    os.chown(folder, 65534, 65534)
    folder.chmod(0o777)
    with pytest.raises(NotPrivate) as caught:
        files.ensure_private_dir(folder)
    assert caught.value.uid == 65534 and caught.value.exit_code == 78
    folder.chmod(0o1777)  # sticky, like /tmp: still another account's folder (issue 11)
    with pytest.raises(NotPrivate):
        files.ensure_private_dir(folder)


def test_a_folder_others_can_write_is_refused_not_tightened(tmp_path: Path) -> None:
    """chmod 0777 (or 0770): someone may have planted files already; tightening is too late."""
    for mode in (0o777, 0o770, 0o1777):
        folder = tmp_path / f"open-{mode:o}"
        folder.mkdir()
        folder.chmod(mode)
        with pytest.raises(NotPrivate) as caught:
            files.ensure_private_dir(folder)
        message = str(caught.value)
        assert str(folder) in message and f"chmod 700 {folder}" in message
        assert f"mode {mode:04o}" in message and "\n" not in message
        assert mode_of(folder) == mode  # refused, left as it was


def test_lock_file_others_can_write_is_refused(tmp_path: Path) -> None:
    lock = tmp_path / "t.lock"
    lock.write_text("")
    lock.chmod(0o666)
    with pytest.raises(NotPrivate, match="lock file"), files.exclusive_lock(lock, timeout=1):
        pass


def test_write_atomic_replaces_with_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "secret.json"
    target.write_text("old")
    target.chmod(0o644)
    files.write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert mode_of(target) == 0o600
    files.write_atomic(target, b"public", mode=0o644)
    assert mode_of(target) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.json"]


def test_write_atomic_ignores_the_umask_and_a_planted_temp_name(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        files.write_atomic(tmp_path / "ca.pem", b"cert", mode=0o644)
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "ca.pem") == 0o644
    # a symlink at the old fixed temp name is never followed or overwritten
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "bundle.tmp").symlink_to(victim)
    files.write_atomic(tmp_path / "bundle.pem", b"bundle")
    assert victim.read_text() == "keep"


def test_write_atomic_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "dir-in-the-way"
    target.mkdir()
    (target / "x").write_text("x")
    with pytest.raises(OSError):
        files.write_atomic(target, b"data")  # cannot replace a non-empty folder
    assert (target / "x").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["dir-in-the-way"]


def test_create_exclusive_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "key"
    assert files.create_exclusive(target, b"first") is True
    assert files.create_exclusive(target, b"second") is False
    assert target.read_bytes() == b"first"
    assert mode_of(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key"]


def test_read_private_file_checks_the_open_file(tmp_path: Path) -> None:
    target = tmp_path / "token.json"
    assert files.read_private_file(target, limit=10) is None
    files.write_atomic(target, b"0123456789abcdef")
    assert files.read_private_file(target, limit=4) == b"01234"  # limit + 1: caller sees "too big"
    target.chmod(0o640)
    with pytest.raises(UnsafeFile) as loose:
        files.read_private_file(target, limit=100)
    assert loose.value.reason == UnsafeFile.LOOSE and loose.value.mode == 0o640
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(UnsafeFile) as linked:
        files.read_private_file(link, limit=100)
    assert linked.value.reason == UnsafeFile.SYMLINK
    with pytest.raises(UnsafeFile) as folder:
        files.read_private_file(tmp_path, limit=100)
    assert folder.value.reason == UnsafeFile.NOT_REGULAR


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to create a file owned by another uid")
def test_read_private_file_refuses_a_foreign_owner(tmp_path: Path) -> None:
    target = tmp_path / "key"
    files.write_atomic(target, b"k" * 20)
    os.chown(target, 65534, 65534)
    with pytest.raises(UnsafeFile) as caught:
        files.read_private_file(target, limit=100)
    assert caught.value.reason == UnsafeFile.FOREIGN and caught.value.uid == 65534


def test_exclusive_lock_times_out_while_held_and_is_released(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    with files.exclusive_lock(lock, timeout=1):
        assert mode_of(lock) == 0o600
        errors: list[BaseException] = []

        def contend() -> None:
            try:
                with files.exclusive_lock(lock, timeout=0.2):
                    pass
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        worker = threading.Thread(target=contend)
        worker.start()
        worker.join(5)
        assert len(errors) == 1 and isinstance(errors[0], TimeoutError)
    with files.exclusive_lock(lock, timeout=0.2):
        pass  # free again once the holder left


def test_exclusive_lock_is_released_when_its_holder_dies(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path\n"
         "from qonic_proxy.files import exclusive_lock\n"
         "with exclusive_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)",
         str(lock)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError), files.exclusive_lock(lock, timeout=0.2):
            pass
        holder.kill()
        holder.wait(10)
        started = time.monotonic()
        with files.exclusive_lock(lock, timeout=5):
            assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait(10)


def test_a_reservation_preallocates_a_private_temp_file_and_commits_into_it(
        tmp_path: Path) -> None:
    target = tmp_path / "token.json"
    target.write_bytes(b"old")
    reservation = files.Reservation(target, 4096)
    temp = reservation.temp
    assert temp.parent == tmp_path and temp.name.startswith(".token.json.")
    info = os.stat(temp)
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_size == 4096
    assert info.st_blocks * 512 >= 4096  # really allocated, not a sparse hole
    assert target.read_bytes() == b"old"
    reservation.commit(b"new data")
    assert target.read_bytes() == b"new data" and not temp.exists()
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    reservation.abandon()  # after a commit: nothing to do
    assert target.read_bytes() == b"new data"
    with pytest.raises(ValueError):
        reservation.commit(b"again")


def test_an_abandoned_reservation_leaves_nothing_and_names_are_unique(tmp_path: Path) -> None:
    target = tmp_path / "token.json"
    first, second = files.Reservation(target, 100), files.Reservation(target, 100)
    assert first.temp != second.temp
    first.abandon()
    second.abandon()
    first.abandon()
    assert list(tmp_path.iterdir()) == [] and not target.exists()


def test_a_reservation_falls_back_to_zeros_without_fallocate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(files.os, "posix_fallocate", unsupported)
    reservation = files.Reservation(tmp_path / "t", 1000)
    assert reservation.temp.read_bytes() == bytes(1000)
    reservation.commit(b"{}")
    assert (tmp_path / "t").read_bytes() == b"{}"


def test_a_reservation_that_does_not_fit_fails_at_once_and_cleans_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "posix_fallocate", full)
    with pytest.raises(OSError) as info:
        files.Reservation(tmp_path / "t", 1000)
    assert info.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []


def test_the_lock_on_a_read_only_file_system_still_locks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    lock = tmp_path / "x.lock"
    lock.touch(mode=0o600)
    real_open = os.open
    modes: list[int] = []

    def read_only_fs(path: object, flags: int, *args: int) -> int:
        # what a read-only mount does: no writing, and nothing new can be created
        if flags & (os.O_RDWR | os.O_WRONLY) or (
                flags & os.O_CREAT and not os.path.exists(path)):  # type: ignore[arg-type]
            raise OSError(errno.EROFS, "Read-only file system")
        modes.append(flags)
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(files.os, "open", read_only_fs)
    with files.exclusive_lock(lock, timeout=1):
        pass
    assert modes and not modes[0] & (os.O_RDWR | os.O_WRONLY)
    # a lock file that cannot be made there: the folder that would hold it is locked instead,
    # and it still excludes a second holder
    missing = tmp_path / "missing.lock"
    with files.exclusive_lock(missing, timeout=1):
        assert not missing.exists()
        with pytest.raises(TimeoutError), files.exclusive_lock(missing, timeout=0.2):
            pass


PREDICTABLE = ("{name}.tmp", ".{name}.tmp", "{name}.partial", "{name}~", "upstream-trust.tmp")


def plant(folder: Path, name: str, victim: Path) -> None:
    for pattern in PREDICTABLE:
        link = folder / pattern.format(name=name)
        if not link.is_symlink():
            link.symlink_to(victim)


@pytest.mark.parametrize("writer", ["write_atomic", "create_exclusive", "reservation",
                                    "trust_bundle", "token_cache"])
def test_no_writer_follows_a_symlink_planted_at_a_predictable_name(
        tmp_path: Path, writer: str) -> None:
    from qonic_proxy.tokens.store import TokenStore
    from qonic_proxy.trust import trust_roots, write_bundle
    from tests.tokens.test_store import tokens

    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    name = {"trust_bundle": "upstream-trust.pem", "token_cache": "token.json"}.get(writer, "f")
    target = folder / name
    plant(folder, name, victim)
    if writer == "write_atomic":
        target.symlink_to(victim)  # the final name too: replaced, never written through
        files.write_atomic(target, b"new")
    elif writer == "create_exclusive":
        assert files.create_exclusive(target, b"new") is True
    elif writer == "reservation":
        files.Reservation(target, 64).commit(b"new")
    elif writer == "trust_bundle":
        write_bundle(trust_roots(None), target)
    else:
        TokenStore(target, "k").save(tokens())
    assert victim.read_text() == "keep"
    assert not target.is_symlink() and target.stat().st_size > 0
    leftovers = {p.name for p in folder.iterdir()} - {name}
    assert leftovers == {pattern.format(name=name) for pattern in PREDICTABLE}  # only the links


def test_a_symlink_planted_at_the_lock_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "t.lock").symlink_to(victim)
    with pytest.raises(OSError), files.exclusive_lock(tmp_path / "t.lock", timeout=1):
        pass
    assert victim.read_text() == "keep"


def test_every_file_we_write_goes_through_files_py() -> None:
    """No other module creates a file by itself (open for writing, os.open with O_CREAT,
    write_text, mkstemp): each writer uses write_atomic, create_exclusive or Reservation,
    whose temp files are O_EXCL with unique names. The audit log (append-only, O_NOFOLLOW, a
    name the user chose) is the one exception."""
    import ast

    package = Path(files.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if rel in ("files.py", "access/audit.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in (
                    "O_CREAT", "write_text", "write_bytes", "mkstemp", "NamedTemporaryFile"):
                found.append(f"{rel}:{node.lineno} {node.attr}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id == "open":
                modes = [*node.args[1:2], *(k.value for k in node.keywords if k.arg == "mode")]
                if any(not isinstance(m, ast.Constant) or set(str(m.value)) & set("wax+")
                       for m in modes):
                    found.append(f"{rel}:{node.lineno} open() for writing")
    assert found == []
