"""The pages the login callback shows in the browser: self-contained, and everything escaped.

No external resources, scripts or styles, and headers that forbid the browser to load or sniff
anything else: whatever Qonic or a stray request put into the URL is only ever shown as text.
"""

from __future__ import annotations

import html

PAGE_HEADERS = (
    ("Content-Type", "text/html; charset=utf-8"),
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "default-src 'none'"),
    ("Referrer-Policy", "no-referrer"),
    ("Connection", "close"),
)


def page(title: str, *paragraphs: str) -> bytes:
    """A self-contained page (no external resources, no scripts, no styles); all text escaped."""
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>qonic-proxy: {html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    ).encode()


def logged_in() -> bytes:
    return page("Logged in", "Logged in to Qonic. You can close this tab.")


def exchange_failed(reason: object) -> bytes:
    """The code came back but the token request failed; `reason` is a secret-free message."""
    return page(
        "Login failed",
        f"Qonic sent the browser back, but getting the token failed: {reason}.",
        "See the terminal or the qonic-proxy log for details.",
    )


def received() -> bytes:
    """The winning tab's page when the attempt ends before the exchange said how it went."""
    return page(
        "Login received",
        "qonic-proxy received the login; check the terminal or its log for the result.",
    )


def refused(error: str, description: str | None) -> bytes:
    return page(
        "Login refused",
        f"Qonic refused the login: {error}: {description or ''}",
        "Run `qonic-proxy login` to try again.",
    )


def not_a_callback(reason: str) -> bytes:
    return page(
        "Not a valid login callback",
        f"{reason}.",
        "The login is still waiting for Qonic to send the browser back here.",
    )


def finished() -> bytes:
    return page("Login already finished", "This login has already completed or ended.")


def too_large() -> bytes:
    return page("Request too large", "The request headers are too large.")


def timed_out() -> bytes:
    return page("Request timeout", "No request was received.")


def start() -> bytes:
    """The body of the start URL's redirect (browsers follow the Location header at once)."""
    return page("Continue to Qonic", "Your browser is being sent on to Qonic to log in.")


def start_refused() -> bytes:
    return page(
        "Not your login",
        "This login was started by another local account; only that account may continue it. "
        "Run `qonic-proxy login` as yourself to log in.",
    )
