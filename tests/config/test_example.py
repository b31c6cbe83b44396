"""Tests for qonic_proxy.config.example: the one shipped example and `init`'s filled-in copy."""

from __future__ import annotations

import tomllib

from qonic_proxy.config.example import example_text, filled_example
from qonic_proxy.config.loader import parse_config
from tests.config.support import EXAMPLE


def test_repository_copy_is_the_shipped_example() -> None:
    assert EXAMPLE.read_text("utf-8") == example_text(), (
        "config/qonic-proxy.example.toml drifted from qonic_proxy/config/example.toml: "
        "copy the package's file over it")


def test_example_points_at_init() -> None:
    assert "qonic-proxy init" in example_text()


def test_filled_example_sets_client_id_and_api_url() -> None:
    text = filled_example('id "with" quote\\', "https://qonic.test:8443")
    data = tomllib.loads(text)
    assert data["oauth"]["client_id"] == 'id "with" quote\\'
    assert data["qonic"]["api_url"] == "https://qonic.test:8443"
    assert text.count("\n") == example_text().count("\n")  # every comment kept


def test_filled_example_without_values_is_the_example() -> None:
    assert filled_example() == example_text()
    config = parse_config(tomllib.loads(filled_example("abc")), "x", {})
    assert config.oauth.client_id == "abc"


def test_example_is_package_data() -> None:
    """A wheel (pip or pipx install) must carry the example, or `init` has nothing to write."""
    pyproject = tomllib.loads((EXAMPLE.parent.parent / "pyproject.toml").read_text())
    assert "example.toml" in pyproject["tool"]["setuptools"]["package-data"]["qonic_proxy.config"]
