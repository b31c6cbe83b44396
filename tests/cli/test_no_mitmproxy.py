"""Structure: the one-shot verbs and `exec` with a running daemon never import mitmproxy.

mitmproxy is heavy and belongs to the daemon. `status`, `token`, `login`, `logout` and `exec`
(when a daemon already serves the config) and `env` must work without it, so they start fast
and the OAuth and token code stays independent of it; `exec` makes the proxy CA itself (with
`cryptography`) when none exists yet. Checked in a fresh interpreter, where nothing else has
imported it yet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from qonic_proxy.cli.session import store_for
from qonic_proxy.config.loader import load_config
from qonic_proxy.oauth.tokenset import TokenSet
from qonic_proxy.wrap.ca_files import PROXY_CA_FILE
from tests.cli.fake_daemon import fake_daemon, health_answer
from tests.cli.helpers import write_config

REPO = Path(__file__).resolve().parent.parent.parent

SCRIPT = textwrap.dedent("""\
    import json, sys
    import qonic_proxy.cli.commands, qonic_proxy.cli.daemon_client, qonic_proxy.cli.parser
    import qonic_proxy.cli.session, qonic_proxy.cli.status_format, qonic_proxy.cli.verbs
    import qonic_proxy.wrap.ca_files, qonic_proxy.wrap.command, qonic_proxy.wrap.daemon_link
    import qonic_proxy.wrap.environment, qonic_proxy.wrap.shell_exports
    from qonic_proxy.cli.main import main
    from qonic_proxy.config.loader import load_config
    from qonic_proxy.wrap.shell_exports import shell_exports

    alone, served, out = sys.argv[1:4]
    codes = {
        "status_alone": main(["status", "--json", "--config", alone]),
        "login": main(["login", "--no-browser", "--config", served]),
        "status": main(["status", "--json", "--config", served]),
        "token": main(["token", "--config", served]),
        "exec": main(["exec", "--config", served, "--", "true"]),  # makes the CA too
        "env": int("export HTTPS_PROXY=" not in shell_exports(load_config(served))),
        "ca": main(["ca", "--bundle", "--config", served]),
        "logout": main(["logout", "--config", served]),
    }
    loaded = sorted(name for name in sys.modules if name.split(".")[0] == "mitmproxy")
    with open(out, "w") as fh:
        json.dump({"codes": codes, "mitmproxy": loaded}, fh)
    """)


def test_one_shot_verbs_and_exec_never_import_mitmproxy(tmp_path: Path) -> None:
    alone_dir = tmp_path / "alone"
    alone_dir.mkdir()
    alone = write_config(alone_dir)
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    with fake_daemon() as daemon:
        served = write_config(served_dir, port=daemon.port)
        daemon.health.update(health_answer("https://api.qonic.com", daemon.port,
                                           forward_port=daemon.port, login_in_progress=True))
        cfg = load_config(served)
        now = time.time()
        store_for(cfg).save(TokenSet(access_token="a" * 40, refresh_token=None,
                                     expires_at=now + 3600, scopes=("projects:read",),
                                     token_type="Bearer", obtained_at=now))
        assert not cfg.proxy.ca_dir.exists()  # `exec` makes the proxy CA without mitmproxy

        out = tmp_path / "result.json"
        env = {k: v for k, v in os.environ.items()
               if not k.lower().endswith("_proxy") and not k.startswith("QONIC_")}
        env["PYTHONPATH"] = str(REPO)
        result = subprocess.run([sys.executable, "-c", SCRIPT, str(alone), str(served), str(out)],
                                env=env, capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(out.read_text())
    assert outcome["codes"] == {"status_alone": 1, "login": 0, "status": 0, "token": 0,
                                "exec": 0, "env": 0, "ca": 0, "logout": 0}, result.stderr
    assert outcome["mitmproxy"] == []
    assert (cfg.proxy.ca_dir / PROXY_CA_FILE).is_file()
    assert "a" * 40 in result.stdout  # `token` printed the cached token
    assert "/-/login" in [path for path, _ in daemon.requests]  # login joined the daemon's


FAST_SCRIPT = textwrap.dedent("""\
    import contextlib, io, json, sys
    from qonic_proxy.cli.main import main

    verb, config, out, *rest = sys.argv[1:]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = main([verb, "--config", config, *rest])
    heavy = ("cryptography", "mitmproxy", "asyncio", "h11", "ssl", "http.client", "certifi",
             "platformdirs", "difflib", "webbrowser", "subprocess", "socket", "dataclasses",
             "inspect", "logging", "_hashlib", "shutil", "threading", "encodings.idna")
    loaded = sorted(name for name in heavy if name in sys.modules)
    with open(out, "w") as fh:
        json.dump({"code": code, "loaded": loaded, "printed": printed.getvalue()}, fh)
    """)
NEVER = {"cryptography", "mitmproxy", "h11"}  # the CA, the daemon, the login's callback server
# with the daemon logged in and no key to mint: no event loop, no TLS, no HTTP library (the
# daemon is asked on a plain socket), no default paths (the config names them), no typo hints
LIGHT = NEVER | {"asyncio", "ssl", "http.client", "certifi", "platformdirs", "difflib",
                 "webbrowser"}
# and none of what made them slow to start (records.py, logs.py, digest.py say why): no
# dataclasses (inspect), no logging unless a line is shown, no OpenSSL for a hash, no shutil
# (bz2, lzma), no threading, no idna codec for a loopback address, no subprocess for CMD
LEAN = LIGHT | {"dataclasses", "inspect", "logging", "_hashlib", "shutil", "encodings.idna",
                "subprocess"}
FAST_VERBS: dict[str, tuple[set[str], list[str]]] = {
    "token": (LEAN | {"socket", "threading"}, []),  # nothing to refresh: no connection
    "status": (LEAN | {"threading"}, []),
    "env": (LEAN | {"threading"}, []),
    "exec": (LEAN | {"threading"}, ["--", "true"]),  # the running daemon: os.posix_spawn
}


def test_token_status_env_and_exec_with_a_daemon_load_no_heavy_module(tmp_path: Path) -> None:
    """With a daemon running and its CA in place, these start with the config and the cache
    alone (the LEAN list): no `cryptography` (the CA is recognised by its digest), no asyncio
    (`exec` runs CMD under os.posix_spawn), no TLS (nothing to refresh; the bundle's sources
    are named without `ssl` and certifi), no HTTP library, no platformdirs (the config names its
    paths)."""
    from qonic_proxy.wrap.ca_files import ca_bundle

    with fake_daemon() as daemon:
        served = write_config(tmp_path, port=daemon.port)
        daemon.health.update(health_answer("https://api.qonic.com", daemon.port,
                                           forward_port=daemon.port))
        cfg = load_config(served)
        now = time.time()
        store_for(cfg).save(TokenSet(access_token="a" * 40, refresh_token=None,
                                     expires_at=now + 3600, scopes=("projects:read",),
                                     token_type="Bearer", obtained_at=now))
        ca_bundle(cfg)  # the first `exec` makes the CA (with cryptography) and the bundle
        ca_bundle(cfg)  # the next one checks it once more, then knows it by its digest
        env = {k: v for k, v in os.environ.items()
               if not k.lower().endswith("_proxy") and not k.startswith("QONIC_")}
        env["PYTHONPATH"] = str(REPO)
        for verb, (forbidden, rest) in FAST_VERBS.items():
            out = tmp_path / f"{verb}.json"
            result = subprocess.run([sys.executable, "-c", FAST_SCRIPT, verb, str(served),
                                     str(out), *rest], env=env, capture_output=True, text=True,
                                    timeout=60, stdin=subprocess.DEVNULL, check=False)
            assert result.returncode == 0, result.stderr
            outcome = json.loads(out.read_text())
            assert outcome["code"] == 0, (verb, result.stderr)
            assert not forbidden & set(outcome["loaded"]), (verb, outcome["loaded"])
    assert "export HTTPS_PROXY=" in json.loads((tmp_path / "env.json").read_text())["printed"]
