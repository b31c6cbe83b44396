"""PKCE values: the RFC 7636 vector, the allowed alphabet and lengths, and randomness."""

from __future__ import annotations

import hashlib
import re

import pytest

from qonic_proxy.oauth import pkce

UNRESERVED = re.compile(r"^[A-Za-z0-9\-._~]+$")


def test_rfc7636_appendix_b_vector() -> None:
    # RFC 7636 Appendix B: the verifier, the SHA-256 octets it lists, and the resulting challenge.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    octets = [
        19,
        211,
        30,
        150,
        26,
        26,
        216,
        236,
        47,
        22,
        177,
        12,
        76,
        152,
        46,
        8,
        118,
        168,
        120,
        173,
        109,
        241,
        68,
        86,
        110,
        225,
        137,
        74,
        203,
        112,
        249,
        195,
    ]
    assert list(hashlib.sha256(verifier.encode("ascii")).digest()) == octets
    assert pkce.code_challenge_s256(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_challenge_has_no_padding_and_is_url_safe() -> None:
    for _ in range(50):
        challenge = pkce.code_challenge_s256(pkce.new_code_verifier())
        assert len(challenge) == 43
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", challenge)


@pytest.mark.parametrize("length", [43, 64, 128])
def test_verifier_length_and_charset(length: int) -> None:
    verifier = pkce.new_code_verifier(length)
    assert len(verifier) == length
    assert UNRESERVED.match(verifier)


def test_default_verifier_is_64_chars() -> None:
    assert len(pkce.new_code_verifier()) == 64


@pytest.mark.parametrize("length", [0, 42, 129, 1000])
def test_verifier_length_out_of_range_is_refused(length: int) -> None:
    with pytest.raises(ValueError):
        pkce.new_code_verifier(length)


def test_verifiers_use_the_whole_alphabet_and_do_not_repeat() -> None:
    verifiers = {pkce.new_code_verifier(128) for _ in range(200)}
    assert len(verifiers) == 200
    seen = set("".join(verifiers))
    # 25,600 draws from 66 symbols: every symbol, including the four punctuation marks, shows up.
    assert seen == set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def test_state_is_random_and_url_safe() -> None:
    states = {pkce.new_state() for _ in range(100)}
    assert len(states) == 100
    for state in states:
        assert len(state) >= 43
        assert re.fullmatch(r"[A-Za-z0-9_-]+", state)
