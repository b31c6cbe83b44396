"""What the addon remembers about one flow, in one typed object under one metadata key.

mitmproxy keeps `flow.metadata` alive exactly as long as the flow, so nothing needs cleaning.
"""

from __future__ import annotations

from dataclasses import dataclass

from mitmproxy import http

METADATA_KEY = "qonic"


@dataclass
class FlowState:
    """Per-flow facts the hooks hand to each other."""

    started: float | None = None  # monotonic time of requestheaders; None once observed
    sent: float | None = None  # when the request went upstream (upstream latency)
    local: bool = False  # answered by us, never sent upstream
    token: str | None = None  # the access token we added (a 401 then may refresh and replay)
    retried: bool = False  # the one refresh after a 401 was tried
    replayed: bool = False  # the response is our replay's, not the one seen in responseheaders

    def __repr__(self) -> str:  # never show the token
        return (f"FlowState(started={self.started}, sent={self.sent}, local={self.local}, "
                f"token={'<set>' if self.token else None}, retried={self.retried}, "
                f"replayed={self.replayed})")


def flow_state(flow: http.HTTPFlow) -> FlowState:
    """The flow's state, created on first use."""
    state = flow.metadata.get(METADATA_KEY)
    if not isinstance(state, FlowState):
        state = flow.metadata[METADATA_KEY] = FlowState()
    return state
