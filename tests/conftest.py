"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DaemonProcess, World, make_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path)
    try:
        yield w
    finally:
        w.sandbox.stop()


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """Daemons a test starts are appended here and always stopped."""
    started: list[DaemonProcess] = []
    try:
        yield started
    finally:
        for daemon in started:
            daemon.stop()


@pytest.fixture
def logged_in(world: World, daemons: list[DaemonProcess]) -> DaemonProcess:
    """A running daemon that has completed the browser login."""
    daemon = world.daemon()
    daemons.append(daemon)
    daemon.wait_ready()
    daemon.wait_logged_in()
    return daemon
