"""The commented example config, shipped inside the package, and `init`'s filled-in copy of it.

`example.toml` beside this module is the one source of truth: `qonic-proxy init` writes it, and
the repository's `config/qonic-proxy.example.toml` is a copy that a test keeps identical.
"""

from __future__ import annotations

import json
from importlib import resources

from qonic_proxy.config.sections import EXAMPLE_CLIENT_ID
from qonic_proxy.qonic import DEFAULT_API_URL

_CLIENT_ID_LINE = f'client_id = "{EXAMPLE_CLIENT_ID}"'
_API_URL_LINE = f'api_url = "{DEFAULT_API_URL}"'


def example_text() -> str:
    """The example config exactly as shipped."""
    return resources.files("qonic_proxy.config").joinpath("example.toml").read_text("utf-8")


def _toml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def filled_example(client_id: str | None = None, api_url: str | None = None) -> str:
    """The example with `client_id` and `api_url` put in place of the placeholder and default."""
    text = example_text()
    if client_id is not None:
        text = text.replace(_CLIENT_ID_LINE, f"client_id = {_toml_string(client_id)}", 1)
    if api_url is not None:
        text = text.replace(_API_URL_LINE, f"api_url = {_toml_string(api_url)}", 1)
    return text
