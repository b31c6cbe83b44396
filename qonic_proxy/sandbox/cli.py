"""`qonic-proxy sandbox`: run the sandbox in the foreground until SIGTERM/SIGINT.

Why apart: the argparse surface and the one `sandbox ready:` line are a contract for scripts
and tests; the server itself knows nothing of argv or signals.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from qonic_proxy.qonic import DEFAULT_REDIRECT_URI
from qonic_proxy.sandbox.app import Sandbox
from qonic_proxy.sandbox.faults import TokenFault
from qonic_proxy.sandbox.settings import ERROR_STYLES, TOKEN_STYLES, SandboxSettings

DEFAULT_SECRET = "sandbox-secret"  # noqa: S105 (the sandbox's well-known test secret)
DEFAULT_CLIENT_ID = "sandbox-client"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qonic-proxy sandbox",
        description="Run a strict local Qonic-compatible server (OAuth + a few API routes). "
        "It prints one `sandbox ready: url=... ca_file=...` line on stdout, then a config "
        "snippet for qonic-proxy on stderr.",
        epilog="For a config that survives restarts, give it a fixed --port and a --cert-dir "
        "(the CA there is kept).",
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="loopback address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=0,
                   help="port to listen on; 0 picks a free one (default: 0)")
    p.add_argument("--client-id", default=DEFAULT_CLIENT_ID,
                   help=f"the one registered client ID (default: {DEFAULT_CLIENT_ID})")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument(
        "--client-secret",
        default=None,
        help=f"client secret (default: $SANDBOX_CLIENT_SECRET, else {DEFAULT_SECRET!r})",
    )
    secret.add_argument("--public", action="store_true",
                        help="a public client without a secret (default: confidential)")
    p.add_argument(
        "--redirect-uri",
        action="append",
        default=None,
        help=f"registered redirect URI (repeatable; default: {DEFAULT_REDIRECT_URI})",
    )
    p.add_argument("--auto-consent", action="store_true",
                   help="skip the consent page (default: show it)")
    p.add_argument("--access-token-lifetime", type=float, default=3600.0, metavar="SECONDS",
                   help="lifetime of access tokens (default: 3600)")
    p.add_argument("--code-lifetime", type=float, default=60.0, metavar="SECONDS",
                   help="lifetime of authorization codes (default: 60)")
    p.add_argument("--no-refresh-tokens", action="store_true",
                   help="issue no refresh tokens (default: issue them)")
    p.add_argument("--no-rotate-refresh-tokens", action="store_true",
                   help="keep a refresh token valid after use (default: rotate on every use)")
    p.add_argument("--token-style", choices=TOKEN_STYLES, default="snake",
                   help="token response keys: access_token or accessToken (default: snake)")
    p.add_argument("--jwt", action="store_true",
                   help="omit expires_in; access tokens are JWTs with exp (default: off)")
    p.add_argument("--error-style", choices=ERROR_STYLES, default="rfc6749",
                   help="error bodies: RFC 6749 or Qonic's errorDetails (default: rfc6749)")
    p.add_argument("--export-redirect-url", default=None, metavar="URL",
                   help="where IFC export results redirect to (default: the sandbox itself)")
    p.add_argument("--cert-dir", type=Path, default=None, metavar="DIR",
                   help="keep the TLS CA and certificate here, reused across restarts "
                        "(default: a new temporary CA each start)")
    p.add_argument("--plain-http", action="store_true",
                   help="serve plain HTTP instead of HTTPS (default: HTTPS)")
    p.add_argument("--verbose", action="store_true",
                   help="log one line per request to stderr (default: off)")
    f = p.add_argument_group("token endpoint fault (for the first --token-fault-seconds)")
    f.add_argument(
        "--token-fault", metavar="STATUS|hang|reset", default=None,
        help="answer token requests with STATUS (429 or 5xx), leave them unanswered, or reset "
             "the connection (default: no fault)",
    )
    f.add_argument("--token-fault-seconds", type=float, default=30.0, metavar="SECONDS",
                   help="how long the fault lasts from the start (default: 30)")
    f.add_argument("--token-fault-retry-after", type=int, default=None, metavar="N",
                   help="send Retry-After: N with a STATUS fault (default: none)")
    f.add_argument("--token-fault-hang", type=float, default=60.0, metavar="SECONDS",
                   help="how long a hung token request is held (default: 60)")
    return p


def token_fault_from_args(args: argparse.Namespace) -> TokenFault | None:
    """The fault `--token-fault` asks for; ValueError (one sentence) when it is not one."""
    if args.token_fault is None:
        return None
    mode = args.token_fault
    status = 503
    if mode.isdigit():
        mode, status = "status", int(mode)
    return TokenFault(mode, args.token_fault_seconds, status=status,
                      retry_after=args.token_fault_retry_after, hang=args.token_fault_hang)


def settings_from_args(args: argparse.Namespace) -> SandboxSettings:
    """The settings the command line asks for (the secret from the environment first)."""
    client_secret = (
        None
        if args.public
        else os.environ.get("SANDBOX_CLIENT_SECRET") or args.client_secret or DEFAULT_SECRET
    )
    return SandboxSettings(
        host=args.host,
        port=args.port,
        client_id=args.client_id,
        client_secret=client_secret,
        redirect_uris=tuple(args.redirect_uri or (DEFAULT_REDIRECT_URI,)),
        auto_consent=args.auto_consent,
        access_token_lifetime=args.access_token_lifetime,
        issue_refresh_tokens=not args.no_refresh_tokens,
        rotate_refresh_tokens=not args.no_rotate_refresh_tokens,
        code_lifetime=args.code_lifetime,
        token_style=args.token_style,
        omit_expires_in=args.jwt,
        error_style=args.error_style,
        tls=not args.plain_http,
        cert_dir=args.cert_dir,
        export_redirect_url=args.export_redirect_url,
        verbose=args.verbose,
        token_fault=token_fault_from_args(args),
    )


def _secret_hint(args: argparse.Namespace) -> str:
    """How qonic-proxy gets the secret; only the well-known default is ever shown."""
    if args.public:
        return "# a public client: qonic-proxy needs no client secret"
    if os.environ.get("SANDBOX_CLIENT_SECRET"):
        return "# client secret: export QONIC_CLIENT_SECRET=\"$SANDBOX_CLIENT_SECRET\""
    if args.client_secret:
        return "# client secret: export QONIC_CLIENT_SECRET=<the --client-secret you gave>"
    return f"# client secret: export QONIC_CLIENT_SECRET={DEFAULT_SECRET}"


def config_snippet(sandbox: Sandbox, args: argparse.Namespace) -> str:
    """A qonic-proxy config for this sandbox, valid on its own, for a human to save or paste."""
    settings = sandbox.settings
    lines = [
        "sandbox: a qonic-proxy config for this sandbox (save it as sandbox.toml and run "
        "`qonic-proxy --config sandbox.toml`, or copy these keys over the same keys of the "
        "file `qonic-proxy init` wrote):",
        "",
        "[qonic]",
        f"api_url = {json.dumps(sandbox.url)}",
    ]
    if sandbox.ca_file is not None:
        lines.append(f"ca_file = {json.dumps(str(sandbox.ca_file))}")
    lines += [
        "",
        "[oauth]",
        f"client_id = {json.dumps(settings.client_id)}",
        f"redirect_uri = {json.dumps(settings.redirect_uris[0])}",
        _secret_hint(args),
    ]
    if args.port == 0 or (sandbox.ca_file is not None and args.cert_dir is None):
        lines.append("# the URL or CA changes at each sandbox start: pass --port N and "
                     "--cert-dir DIR for a config that survives restarts")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """`qonic-proxy sandbox`: serve until SIGTERM/SIGINT, after one `sandbox ready:` line.

    The ready line is for scripts (stdout, exactly one line); the config snippet is for people
    (stderr).
    """
    args = parser().parse_args(argv)
    if args.access_token_lifetime <= 0 or args.code_lifetime <= 0:
        print("sandbox: lifetimes must be positive numbers of seconds.", file=sys.stderr)
        return 2
    try:
        sandbox = Sandbox(settings_from_args(args), keep_ca=args.cert_dir is not None)
    except ValueError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        try:
            sandbox.start()
        except OSError as exc:
            print(
                f"sandbox: cannot listen on {args.host}:{args.port} ({exc.strerror}); "
                "choose another --port.",
                file=sys.stderr,
            )
            return 1
        ca = str(sandbox.ca_file) if sandbox.ca_file else ""
        print(f"sandbox ready: url={sandbox.url} ca_file={ca}", flush=True)
        print(config_snippet(sandbox, args), file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
        return 0
    finally:
        sandbox.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
