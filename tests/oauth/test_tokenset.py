"""TokenSet: the cache-file round trip, the repr that hides tokens, and strict rebuilding."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qonic_proxy.oauth.tokenset import TokenSet
from tests.oauth.support import ACCESS, REFRESH


def sample_tokens(**changes: Any) -> TokenSet:
    values: dict[str, Any] = dict(
        access_token=ACCESS,
        refresh_token=REFRESH,
        expires_at=4600.0,
        scopes=("projects:read",),
        token_type="Bearer",
        obtained_at=1000.0,
    )
    values.update(changes)
    return TokenSet(**values)


def test_tokenset_json_round_trip() -> None:
    for tokens in (sample_tokens(), sample_tokens(refresh_token=None, expires_at=None)):
        data = json.loads(json.dumps(tokens.to_json()))
        assert TokenSet.from_json(data) == tokens


def test_tokenset_repr_hides_tokens() -> None:
    text = repr(sample_tokens())
    assert ACCESS not in text and REFRESH not in text
    assert "expires_at=4600.0" in text


@pytest.mark.parametrize(
    "change",
    [
        {"access_token": ""},
        {"access_token": 5},
        {"refresh_token": 7},
        {"expires_at": "soon"},
        {"expires_at": True},
        {"scopes": "projects:read"},
        {"scopes": [1]},
        {"token_type": "MAC"},
        {"obtained_at": None},
    ],
)
def test_tokenset_from_json_rejects_bad_shapes(change: dict[str, Any]) -> None:
    data = sample_tokens().to_json()
    data.update(change)
    with pytest.raises(ValueError) as info:
        TokenSet.from_json(data)
    assert ACCESS not in str(info.value) and REFRESH not in str(info.value)


def test_tokenset_from_json_rejects_non_dict_and_missing_field() -> None:
    with pytest.raises(ValueError):
        TokenSet.from_json([])  # type: ignore[arg-type]
    data = sample_tokens().to_json()
    del data["obtained_at"]
    with pytest.raises(ValueError):
        TokenSet.from_json(data)
