"""Where we listen: filled in by the daemon once mitmproxy has bound its sockets."""

from __future__ import annotations

from dataclasses import dataclass

from qonic_proxy.hosts import bracket


@dataclass
class ListenerInfo:
    """The bound ports (0 = not listening) and the host clients use to reach them."""

    reverse_port: int = 0
    forward_port: int = 0
    public_host: str = "127.0.0.1"

    @property
    def reverse_url(self) -> str:
        return self._url(self.reverse_port)

    @property
    def forward_url(self) -> str | None:
        return self._url(self.forward_port) if self.forward_port else None

    @property
    def ports(self) -> frozenset[int]:
        """The ports we listen on (0, a listener that is off, left out)."""
        return frozenset({self.reverse_port, self.forward_port} - {0})

    def _url(self, port: int) -> str:
        return f"http://{bracket(self.public_host)}:{port}"
