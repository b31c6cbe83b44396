"""Request bodies in pieces, on a fake handler: framing rules, chunked trailers, limits."""

from __future__ import annotations

import io
from email.message import Message
from typing import Any

import pytest

from qonic_proxy.sandbox.exchange import BodyError, Exchange


class FakeHandler:
    def __init__(self, body: bytes, **headers: str | list[str]) -> None:
        self.command = "POST"
        self.path = "/v1/upload?x=1"
        self.request_version = "HTTP/1.1"
        self.rfile = io.BytesIO(body)
        self.headers = Message()
        for name, value in headers.items():
            for v in value if isinstance(value, list) else [value]:
                self.headers[name.replace("_", "-")] = v
        self.close_connection = False


def exchange(body: bytes, **headers: Any) -> Exchange:
    ex = Exchange(FakeHandler(body, **headers))  # type: ignore[arg-type]
    ex.prepare_body()
    return ex


def test_path_and_query_are_split() -> None:
    ex = exchange(b"")
    assert (ex.method, ex.path, ex.query, ex.http11) == ("POST", "/v1/upload", "x=1", True)


def test_content_length_body() -> None:
    assert b"".join(exchange(b"hello!", Content_Length="5").body_chunks()) == b"hello"


def test_chunked_body_with_extensions_and_trailers() -> None:
    raw = b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n"
    ex = exchange(raw, Transfer_Encoding="chunked")
    assert b"".join(ex.body_chunks()) == b"abcde"
    assert list(ex.body_chunks()) == []  # read once


@pytest.mark.parametrize(
    ("raw", "headers"),
    [
        (b"0\r\n\r\n", {"Content_Length": "5", "Transfer_Encoding": "chunked"}),
        (b"", {"Transfer_Encoding": "gzip, chunked"}),
        (b"", {"Content_Length": ["1", "1"]}),
        (b"", {"Content_Length": "-1"}),
    ],
)
def test_ambiguous_framing_is_refused(raw: bytes, headers: dict[str, Any]) -> None:
    with pytest.raises(BodyError):
        exchange(raw, **headers)


@pytest.mark.parametrize(
    "raw", [b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcXX0\r\n\r\n", b"5\r\nab", b"0\r\nbroken"]
)
def test_malformed_chunks_are_refused(raw: bytes) -> None:
    with pytest.raises(BodyError):
        b"".join(exchange(raw, Transfer_Encoding="chunked").body_chunks())


def test_a_short_body_and_the_small_body_limit() -> None:
    with pytest.raises(BodyError):
        b"".join(exchange(b"abc", Content_Length="10").body_chunks())
    with pytest.raises(BodyError):
        exchange(b"x" * 11, Content_Length="11").read_small_body(10)
    assert exchange(b"x" * 10, Content_Length="10").read_small_body(10) == b"x" * 10
