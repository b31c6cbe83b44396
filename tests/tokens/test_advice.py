"""The login sentence: where no browser can be opened, it says how to paste the address back."""

from __future__ import annotations

import pytest

from qonic_proxy.tokens.advice import login_advice, no_browser_here

PASTE = "then run `qonic-proxy login --paste` and paste the address it ends on"


@pytest.mark.parametrize(("environ", "headless"), [
    ({}, True),
    ({"DISPLAY": ":0"}, False),
    ({"WAYLAND_DISPLAY": "wayland-0"}, False),
    ({"BROWSER": "firefox"}, False),
    ({"DISPLAY": ":0", "SSH_CONNECTION": "127.0.0.1 5 127.0.0.1 22"}, True),
    ({"BROWSER": "x", "SSH_TTY": "/dev/pts/1"}, True),
])
def test_no_browser_here(environ: dict[str, str], headless: bool) -> None:
    assert no_browser_here(environ) is headless


def test_headless_advice_names_the_url_and_the_paste_verb() -> None:
    text = login_advice(page="http://127.0.0.1:8080/-/login", authorize_url="https://q/a?x=1",
                        headless=True)
    assert text == f"Log in to Qonic: open https://q/a?x=1 in any browser, {PASTE}."
    assert "login --paste" in login_advice(page=None, authorize_url=None, headless=True)


def test_with_a_browser_the_advice_is_unchanged() -> None:
    assert login_advice(page="http://h/-/login", authorize_url="u", headless=False) == (
        "Log in to Qonic: open http://h/-/login in a browser, or run `qonic-proxy login`.")
