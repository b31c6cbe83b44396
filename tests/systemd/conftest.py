"""`-m systemd` selects the tests that run the units under a real systemd manager."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "systemd: boots a systemd container (root) and drives the shipped units")
