"""Shared set-up for the config tests: the source name, a secret, and small parse helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from qonic_proxy.config.loader import parse_config
from qonic_proxy.config.model import Config
from qonic_proxy.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent.parent
EXAMPLE = REPO / "config" / "qonic-proxy.example.toml"
SRC = "/etc/test/config.toml"
SECRET = "s3cr3t-value-never-shown"


def parse(data: dict, env: dict | None = None, **kw) -> Config:
    return parse_config(data, SRC, env if env is not None else {}, **kw)


def minimal(**sections: dict) -> dict:
    data: dict = {"oauth": {"client_id": "cid"}}
    for name, keys in sections.items():
        data.setdefault(name, {}).update(keys)
    return data


def config_error(data: dict, section: str, key: str, env: dict | None = None, **kw) -> str:
    """Parse, expect ConfigError naming the file and `[section] key`; return the message."""
    with pytest.raises(ConfigError) as info:
        parse(data, env, **kw)
    message = str(info.value)
    assert info.value.exit_code == 78
    assert message.startswith(f"{SRC}: [{section}] {key}: "), message
    assert "; " in message and "\n" not in message
    return message


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path
