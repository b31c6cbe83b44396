"""The per-flow state: one typed object under one metadata key."""

from __future__ import annotations

from mitmproxy.test import tflow

from qonic_proxy.proxy.flow_state import METADATA_KEY, FlowState, flow_state


def test_one_object_under_one_key_created_on_first_use():
    flow = tflow.tflow()
    state = flow_state(flow)
    assert isinstance(state, FlowState) and flow_state(flow) is state
    assert list(flow.metadata) == [METADATA_KEY]
    assert (state.started, state.sent, state.token) == (None, None, None)
    assert not (state.local or state.retried or state.replayed)


def test_repr_never_shows_the_token():
    state = FlowState(token="secret-access-token")  # noqa: S106
    assert "secret-access-token" not in repr(state) and "<set>" in repr(state)
