"""The callback pages: self-contained, and whatever they echo is escaped."""

from __future__ import annotations

from qonic_proxy.oauth import pages


def test_a_page_escapes_its_title_and_text() -> None:
    body = pages.page("<b>t</b>", "<script>alert('x')</script> & more").decode()
    assert "<script" not in body and "<b>" not in body
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in body
    assert "<title>qonic-proxy: &lt;b&gt;t&lt;/b&gt;</title>" in body


def test_the_echoing_pages_escape_too() -> None:
    evil = '<img src=x onerror="alert(1)">'
    for body in (
        pages.refused(evil, evil),
        pages.not_a_callback(evil),
        pages.exchange_failed(evil),
    ):
        assert b"<img" not in body and b"&lt;img" in body


def test_the_headers_forbid_loading_anything() -> None:
    headers = dict(pages.PAGE_HEADERS)
    assert headers["Content-Security-Policy"] == "default-src 'none'"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
