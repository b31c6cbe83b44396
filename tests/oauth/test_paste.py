"""parse_pasted: the whole address or its query; same strictness as the callback."""

from __future__ import annotations

import pytest

from qonic_proxy.oauth.authorization_response import BadRequest
from qonic_proxy.oauth.paste import parse_pasted

STATE = "s-123"
URL = f"http://127.0.0.1:8765/callback?code=c-1&state={STATE}"


@pytest.mark.parametrize("text", [URL, f"  {URL}\n", f"code=c-1&state={STATE}",
                                  f"?state={STATE}&code=c-1", f"{URL}#fragment"])
def test_whole_url_or_query_gives_the_code(text: str) -> None:
    assert parse_pasted(text, path="/callback", state=STATE).code == "c-1"


@pytest.mark.parametrize(("text", "start"), [
    ("", "That is not the address"),
    ("hello world", "That is not the address"),
    ("garbage", "That is not the address"),
    ("http://127.0.0.1:8765/callback", "That address carries no login result"),
    (URL.replace(STATE, "other"), "The state does not belong to the login in progress"),
    (URL.replace("/callback", "/elsewhere"), "There is nothing at this address"),
    (f"code=a&code=b&state={STATE}", "The parameter code appears more than once"),
    (f"error=access_denied&state={STATE}", "Qonic refused the login (access_denied)"),
])
def test_anything_else_is_one_sentence(text: str, start: str) -> None:
    with pytest.raises(BadRequest) as bad:
        parse_pasted(text, path="/callback", state=STATE)
    assert str(bad.value).startswith(start)
    assert "c-1" not in str(bad.value)
