"""Property tests (hypothesis): a malformed config is one clear ConfigError, never a crash.

`parse_config` gets malformed values (a URL with a password among them: it must never be echoed,
whichever key it is given to) and `load_config` malformed files. Examples are few and deadlines
set, so the file runs in seconds.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qonic_proxy.config.loader import load_config, parse_config
from qonic_proxy.config.model import Config
from qonic_proxy.errors import ConfigError

FAST = settings(max_examples=40, deadline=3000,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

_VALID: dict[str, dict[str, Any]] = {
    "qonic": {"api_url": "https://api.qonic.com"},
    "oauth": {"client_id": "fuzz", "scopes": ["projects:read"],
              "redirect_uri": "http://localhost:8765/callback"},
    "proxy": {"listen_host": "127.0.0.1", "port": 8080, "forward_port": 8081,
              "allowed_hosts": ["localhost"]},
    "token": {"cache_file": "/tmp/qonic-fuzz-never-written/token.json", "refresh_margin": 60},
}
_KEYS = [(section, key) for section, keys in {
    "qonic": ["api_url", "authorize_url", "token_url", "ca_file"],
    "oauth": ["client_id", "client_secret", "scopes", "redirect_uri", "open_browser",
              "login_timeout", "client_secret_file"],
    "proxy": ["listen_host", "port", "forward_port", "allowed_hosts", "client_key_file",
              "ca_dir"],
    "token": ["cache_file", "refresh_margin"],
    "nonsense": ["x"],
}.items() for key in keys]
# Path-like strings stay inside a temp folder: a fuzzer must not make us read /dev/zero.
_TOML_VALUE = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/~"), max_size=30),
    st.sampled_from(["https://", "https://api.qonic.com/x", "http://api.qonic.com",
                     "https://user:pw@api.qonic.com", "https://[::1", "::", "",
                     "0.0.0.0",  # noqa: S104 - a config value under test, never bound
                     "https://xn--.com", "https://bücher.example", "http://localhost:0/cb"]),
    st.integers(), st.floats(), st.booleans(),
    st.lists(st.text(max_size=10), max_size=3), st.dictionaries(st.text(max_size=5),
                                                                st.integers(), max_size=2),
)


@FAST
@given(changes=st.lists(st.tuples(st.sampled_from(_KEYS), _TOML_VALUE), min_size=1, max_size=3))
def test_malformed_config_values_are_a_clear_config_error(changes):
    data = json.loads(json.dumps(_VALID))
    for (section, key), value in changes:
        data.setdefault(section, {})[key] = value
    with tempfile.TemporaryDirectory() as folder:
        try:
            cfg = parse_config(data, "fuzz.toml", env={}, config_dir=Path(folder))
        except ConfigError as err:
            message = str(err)
            assert message.startswith("fuzz.toml") and "\n" not in message
            assert "pw@" not in message  # a URL with a password is never echoed
            return
    assert isinstance(cfg, Config)
    assert cfg.qonic.api_url.startswith("https://")


@FAST
@given(raw=st.one_of(st.binary(max_size=300),
                     st.text(max_size=300).map(lambda t: ("[oauth]\n" + t).encode())))
def test_malformed_config_files_are_a_clear_config_error(raw):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.toml"
        path.write_bytes(raw)
        path.chmod(0o600)
        try:
            load_config(path, env={})
        except ConfigError as err:
            assert str(path) in str(err) and "\n" not in str(err)


@pytest.mark.parametrize(("section", "key"), [k for k in _KEYS if k[0] != "nonsense"])
@pytest.mark.parametrize("value", ["https://user:pw@api.qonic.com", "user:pw@host",
                                   "http://user:pw@localhost:8765/callback"])
def test_a_value_with_a_password_is_never_echoed(section: str, key: str, value: str) -> None:
    """The examples the property test found: listen_host and path keys used to echo them."""
    data = json.loads(json.dumps(_VALID))
    data[section][key] = [value] if key in ("scopes", "allowed_hosts") else value
    with tempfile.TemporaryDirectory() as folder:
        try:
            parse_config(data, "fuzz.toml", env={}, config_dir=Path(folder))
        except ConfigError as err:
            assert "pw@" not in str(err) and ":pw" not in str(err)
