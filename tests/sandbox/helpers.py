"""Shared by the sandbox tests: a client that speaks to a sandbox over verified TLS."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from qonic_proxy.sandbox.app import Sandbox

REDIRECT = "http://localhost:8765/callback"
CLIENT_ID = "sandbox-client"
SECRET = "sandbox-secret"
ALL_SCOPES = "projects:read models:read models:write"
REPO = Path(__file__).resolve().parent.parent.parent


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@dataclass
class Client:
    """A requests session that trusts only the sandbox CA and ignores proxy/CA env settings."""

    sb: Sandbox
    session: requests.Session

    def get(self, path: str, **kw) -> requests.Response:
        return self.session.get(self.sb.url + path, allow_redirects=False, timeout=30, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.session.post(self.sb.url + path, allow_redirects=False, timeout=30, **kw)

    def authorize(self, verifier: str | None = None, **overrides: str) -> requests.Response:
        verifier = verifier or secrets.token_urlsafe(48)
        params = {
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT,
            "response_type": "code",
            "scope": ALL_SCOPES,
            "state": "st-123",
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
        }
        params.update(overrides)
        params = {k: v for k, v in params.items() if v is not None}
        return self.get("/v1/auth/authorize?" + urlencode(params))

    def code(self, verifier: str, **overrides: str) -> str:
        """Run authorize (and approve consent when asked) and return the code."""
        r = self.authorize(verifier, **overrides)
        if r.status_code == 200:
            r = self.post(
                "/v1/auth/consent", data={"consent_id": consent_id(r.text), "decision": "approve"}
            )
        assert r.status_code == 302, r.text
        q = query_of(r.headers["Location"])
        assert q["state"] == overrides.get("state", "st-123")
        return q["code"]

    def token(self, **form: str) -> requests.Response:
        return self.post("/v1/auth/token", data=form)

    def exchange(self, code: str, verifier: str, **extra: str) -> requests.Response:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        }
        form.update(extra)
        return self.token(**{k: v for k, v in form.items() if v is not None})

    def login(self) -> dict:
        verifier = secrets.token_urlsafe(48)
        r = self.exchange(self.code(verifier), verifier)
        assert r.status_code == 200, r.text
        return r.json()

    def refresh(self, refresh_token: str, **extra: str) -> requests.Response:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
        }
        form.update(extra)
        return self.token(**form)

    def api(self, path: str, token: str, method: str = "GET", **kw) -> requests.Response:
        headers = dict(kw.pop("headers", {}), Authorization=f"Bearer {token}")
        return self.session.request(
            method, self.sb.url + path, headers=headers, allow_redirects=False, timeout=60, **kw
        )


def consent_id(page: str) -> str:
    m = re.search(r'name="consent_id" value="([^"]+)"', page)
    assert m, page
    return m.group(1)


def assert_error(r: requests.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"] == code, r.text
    assert r.json()["error_description"]
