"""Running the wrapped command: finding the program, forwarding signals, passing its exit code on.

With this config's daemon running, logged in and forward mode on (the common case), CMD runs
under a plain `os.posix_spawn` with signal handlers: no event loop, which would cost more to
import than the rest of `exec`. Otherwise (a login to wait for, or a private daemon to start)
the same steps run under asyncio.

Exit codes follow the shell's: CMD's own code, 127 when it is not found, 126 when it cannot be
executed, 128 + N when signal N ended it (or ended us while we waited for the login).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Protocol

from qonic_proxy.cli.daemon_client import daemon_health
from qonic_proxy.config.model import Config
from qonic_proxy.errors import QonicProxyError
from qonic_proxy.logs import settle as settle_logging
from qonic_proxy.wrap.ca_files import ca_bundle
from qonic_proxy.wrap.daemon_link import (
    key_needed,
    mint_key,
    proxy_for,
    revoke_key,
    running_endpoints,
)
from qonic_proxy.wrap.environment import Endpoints, wrapped_environment

if TYPE_CHECKING:
    import asyncio

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
NOT_FOUND = 127
NOT_EXECUTABLE = 126
SIGNAL_BASE = 128


class CommandError(Exception):
    """CMD cannot be run; `exit_code` is the shell's code for why."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def resolve_program(program: str, path: str | None) -> str:
    """The file to execute, or CommandError (127 missing, 126 not executable)."""
    if "/" in program:
        if not os.path.exists(program):
            raise CommandError(f"{program}: no such file", NOT_FOUND)
        if os.path.isdir(program) or not os.access(program, os.X_OK):
            raise CommandError(f"{program}: permission denied (not an executable file)",
                               NOT_EXECUTABLE)
        return program
    # shutil.which's rule, without shutil (its bz2 and lzma imports cost 2 ms): an empty PATH
    # names no folder (not the current one)
    for folder in path.split(os.pathsep) if path else ():
        candidate = os.path.join(folder, program)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    raise CommandError(f"{program}: command not found", NOT_FOUND)


def exit_code(returncode: int) -> int:
    """A child's return code as a shell reports it (killed by signal N: 128 + N)."""
    return SIGNAL_BASE - returncode if returncode < 0 else returncode


def run_command(cfg: Config, command: list[str], read_only: bool = False) -> int:
    """Run CMD against the proxy (running daemon, or a private one); return CMD's exit code.

    `read_only`: CMD may only send GET, HEAD and OPTIONS (its key says so; a private proxy
    limits its own account, too).
    """
    if not command:
        raise QonicProxyError("exec needs a command: qonic-proxy exec -- CMD ARGS...")
    try:
        executable = resolve_program(command[0], os.environ.get("PATH", os.defpath))
    except CommandError as err:  # before any login: a typo should not cost one
        print(f"qonic-proxy: {err}", file=sys.stderr)
        return err.exit_code
    health = daemon_health(cfg)
    endpoints = running_endpoints(cfg, health) if health is not None else None
    if endpoints is not None and health is not None and health.get("logged_in"):
        return _run_plain(cfg, command, executable, endpoints, read_only)
    import asyncio  # a login to wait for, or a private daemon (mitmproxy) to run

    settle_logging()
    return asyncio.run(_run(cfg, command, executable, read_only))


class Child(Protocol):
    """What the relay needs of CMD: a SpawnedChild or an asyncio Process."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...


class SignalRelay:
    """Before CMD runs, a signal aborts (`aborted`, then `on_abort`); afterwards it is
    forwarded to CMD."""

    def __init__(self, on_abort: Callable[[int], None] | None = None) -> None:
        self.child: Child | None = None
        self.aborted: int | None = None
        self.on_abort = on_abort

    def __call__(self, signum: int) -> None:
        child = self.child
        if child is None:
            if self.aborted is None:
                self.aborted = signum
                if self.on_abort is not None:
                    self.on_abort(signum)
            return
        if child.returncode is not None:
            return
        if signum == signal.SIGINT and _terminal_already_delivered(child.pid):
            return  # Ctrl-C reached CMD directly; a second SIGINT means "hurry" to many tools
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)


class SpawnedChild:
    """CMD started with `os.posix_spawn`: what `subprocess.Popen` would give, without importing
    subprocess (3 ms of every `exec`: it brings threading, selectors and locale).

    As Popen's `restore_signals`, SIGPIPE and SIGXFSZ are reset to their default in CMD (Python
    ignores them). File descriptors the caller handed us reach CMD as they would through a
    shell's `exec` (`qonic-proxy exec -- cmd 3<file`); our own are close-on-exec.
    """

    def __init__(self, executable: str, argv: list[str], env: dict[str, str]) -> None:
        self.returncode: int | None = None
        self.ended = False  # CMD has exited; its pid may be reaped (and reused) any moment
        self.pid = os.posix_spawn(executable, argv, env,
                                  setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))

    def send_signal(self, sig: int) -> None:
        if not self.ended:  # until then the pid is CMD's, a zombie at worst
            os.kill(self.pid, sig)

    def wait(self) -> int:
        """CMD's status as Popen reports it: the exit code, or minus the signal that ended it.

        The exit is first seen without reaping (WNOWAIT), so a signal forwarded while we wait
        never reaches a process that has taken over CMD's pid after it was reaped.
        """
        # both calls are retried after our signal handlers (PEP 475)
        os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        self.ended = True
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _terminal_already_delivered(child_pid: int) -> bool:
    """True when a SIGINT most likely came from the terminal to our whole (foreground) group."""
    try:
        if os.getpgid(child_pid) != os.getpgrp():
            return False
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False  # no controlling terminal: the signal was sent to us alone
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def _run_plain(cfg: Config, command: list[str], executable: str, endpoints: Endpoints,
               read_only: bool) -> int:
    """`_run` for a running daemon that is logged in: the same steps, without an event loop."""
    relay = SignalRelay()

    def handler(signum: int, frame: FrameType | None) -> None:
        relay(signum)

    previous = {signum: signal.signal(signum, handler) for signum in FORWARDED_SIGNALS}
    try:
        bundle = ca_bundle(cfg)
        if relay.aborted is not None:
            return SIGNAL_BASE + relay.aborted
        key = None
        if key_needed(cfg, read_only):  # tied to us: revoked when we end, SIGKILL too
            key = mint_key(cfg, endpoints.reverse, os.getpid(), read_only=read_only)
        try:
            if relay.aborted is not None:
                return SIGNAL_BASE + relay.aborted
            env = wrapped_environment(cfg, os.environ, endpoints, bundle,
                                      key.key if key else None)
            try:
                child = SpawnedChild(executable, command, env)
            except OSError as err:
                return _not_started(command, executable, err)
            relay.child = child
            return exit_code(child.wait())
        finally:
            if key is not None:
                revoke_key(cfg, endpoints.reverse, key)
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _not_started(command: list[str], executable: str, err: OSError) -> int:
    """The shell's code (and sentence) for a CMD that could not be started."""
    if isinstance(err, PermissionError):
        print(f"qonic-proxy: {command[0]}: permission denied", file=sys.stderr)
        return NOT_EXECUTABLE
    if isinstance(err, FileNotFoundError):  # e.g. a script whose #! interpreter is missing
        print(f"qonic-proxy: {command[0]}: cannot execute (missing interpreter?)",
              file=sys.stderr)
        return NOT_EXECUTABLE if os.path.exists(executable) else NOT_FOUND
    raise err


async def _run(cfg: Config, command: list[str], executable: str, read_only: bool) -> int:
    import asyncio

    loop = asyncio.get_running_loop()
    aborted: asyncio.Future[int] = loop.create_future()
    relay = SignalRelay(aborted.set_result)  # called once, by the first signal
    for signum in FORWARDED_SIGNALS:
        loop.add_signal_handler(signum, relay, signum)
    try:
        bundle = await asyncio.to_thread(ca_bundle, cfg)
        async with proxy_for(cfg, aborted, read_only=read_only) as endpoints:
            if relay.aborted is not None:
                return SIGNAL_BASE + relay.aborted
            key = None
            if key_needed(cfg, read_only):  # tied to us: revoked when we end, SIGKILL too
                key = await asyncio.to_thread(mint_key, cfg, endpoints.reverse, os.getpid(),
                                              read_only=read_only)
            try:
                return await _start(relay, cfg, command, executable, endpoints, bundle,
                                    key.key if key else None)
            finally:
                if key is not None:
                    await asyncio.to_thread(revoke_key, cfg, endpoints.reverse, key)
    finally:
        for signum in FORWARDED_SIGNALS:
            loop.remove_signal_handler(signum)


async def _start(relay: SignalRelay, cfg: Config, command: list[str], executable: str,
                 endpoints: Endpoints, bundle: str, key: str | None) -> int:
    """Start CMD with its environment and wait for it; the shell's code on failure to start."""
    import asyncio

    env = await asyncio.to_thread(wrapped_environment, cfg, os.environ, endpoints,
                                  bundle, key)
    try:
        child = await asyncio.create_subprocess_exec(*command, executable=executable, env=env,
                                                     close_fds=False)  # as SpawnedChild
    except (FileNotFoundError, PermissionError) as err:
        return _not_started(command, executable, err)
    relay.child = child
    return exit_code(await child.wait())
