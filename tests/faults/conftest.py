"""Fixtures for the fault tests: a world with 8 s tokens refreshed 3 s before expiry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import World, make_world

LIFETIME = 8.0
MARGIN = 3


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path, access_token_lifetime=LIFETIME)
    w.config["token"]["refresh_margin"] = MARGIN
    try:
        yield w
    finally:
        w.sandbox.stop()
