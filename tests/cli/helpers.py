"""Small helpers for the CLI unit tests: a config file, an Environment that records output."""

from __future__ import annotations

import io
import socket
import textwrap
from pathlib import Path

from qonic_proxy.cli.environment import Environment


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_config(tmp: Path, *, port: int | None = None, api_url: str = "https://api.qonic.com",
                 client_key_file: Path | None = None) -> Path:
    """A minimal valid config whose token cache and CA folder live under `tmp`."""
    key = f'client_key_file = "{client_key_file}"\n' if client_key_file else ""
    path = tmp / "config.toml"
    path.write_text(textwrap.dedent(f"""\
        [qonic]
        api_url = "{api_url}"
        [oauth]
        client_id = "cli-unit-test"
        open_browser = false
        [proxy]
        port = {port if port is not None else unused_port()}
        ca_dir = "{tmp / 'ca'}"
        """) + key + textwrap.dedent(f"""\
        [token]
        cache_file = "{tmp / 'state' / 'token.json'}"
        """))
    return path


class RecordingEnvironment(Environment):
    """An Environment whose streams are in memory; no browser is ever opened."""

    def __init__(self) -> None:
        super().__init__(stdout=io.StringIO(), stderr=io.StringIO(),
                         open_browser=self._no_browser)
        self.opened: list[str] = []

    def _no_browser(self, url: str) -> bool:
        self.opened.append(url)
        return False

    @property
    def out(self) -> str:
        assert isinstance(self.stdout, io.StringIO)
        return self.stdout.getvalue()

    @property
    def err(self) -> str:
        assert isinstance(self.stderr, io.StringIO)
        return self.stderr.getvalue()
