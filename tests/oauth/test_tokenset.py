"""TokenSet: the cache-file round trip, the repr that hides tokens, and strict rebuilding."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qonic_proxy.oauth.tokenset import TokenSet, finite_float, jwt_exp
from tests.oauth.support import ACCESS, REFRESH, make_jwt


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


def test_jwt_exp_is_only_a_hint() -> None:
    assert jwt_exp(make_jwt({"exp": 1_900_000_000})) == 1_900_000_000.0
    for claims in ({"exp": "soon"}, {"exp": True}, {"exp": -1}, {"sub": "u"}):
        assert jwt_exp(make_jwt(claims)) is None
    for token in ("opaque", "a.b", "a.!!!.c", "a." + "W10" + ".c"):  # not JSON / a list
        assert jwt_exp(token) is None


def test_finite_float() -> None:
    assert finite_float(3) == 3.0 and finite_float(2.5) == 2.5
    for value in (True, None, "1", float("nan"), float("inf"), [1]):
        assert finite_float(value) is None
