"""Tests for qonic_proxy.config.schema: unknown sections and keys, and the example file's keys."""

from __future__ import annotations

import pytest

from qonic_proxy.config import schema
from qonic_proxy.errors import ConfigError
from tests.config.support import EXAMPLE, SRC, config_error, minimal, parse


def test_unknown_key_names_file_key_and_suggests() -> None:
    message = config_error(minimal(oauth={"client_ide": "x"}), "oauth", "client_ide")
    assert "unknown key (did you mean client_id?)" in message
    assert "redirect_uri" in message  # lists the valid keys


def test_unknown_section() -> None:
    with pytest.raises(ConfigError) as info:
        parse(minimal(oath={"client_id": "x"}))
    message = str(info.value)
    assert info.value.exit_code == 78
    assert message.startswith(f"{SRC}: [oath]: unknown section (did you mean oauth?)")


def test_top_level_key_and_non_table_section() -> None:
    with pytest.raises(ConfigError, match=r"^/etc/test/config.toml: client_id: unknown top-level"):
        parse({"client_id": "x"})
    with pytest.raises(ConfigError, match=r"\[qonic\]: expected a table, got a string"):
        parse(minimal() | {"qonic": "https://api.qonic.com"})


def test_example_file_mentions_every_key() -> None:
    text = EXAMPLE.read_text()
    for section, keys in schema.KEYS.items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"{key} =" in text, key


def test_did_you_mean_and_every_key() -> None:
    assert schema.did_you_mean("forward_prot", schema.all_keys()) == " (did you mean forward_port?)"
    assert schema.did_you_mean("zzz", schema.KEYS) == ""
    assert len(schema.all_keys()) == len(set(schema.all_keys()))


def test_unknown_key_with_a_newline_stays_on_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        schema.check_unknown("s.toml", {"proxy": {"a\nb": 1}})
    assert "\n" not in str(info.value)
