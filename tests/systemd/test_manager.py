"""The shipped units under a real systemd: a throw-away container (see machine.py) boots the
host's systemd, runs the sandbox inside it, and drives qonic-proxy.service and, under
`systemd --user`, qonic-proxy-user.service through start, first login, API call, watchdog,
stop and a configuration error. Root only (CI runs it); about 2 minutes.

The tests share one container and run in file order: the user unit runs while the system
unit's 90 s of watchdog pings go by.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from collections.abc import Iterator

import pytest

from tests.harness import SCOPES, toml_value, wait_for
from tests.systemd.machine import ROOT, Machine, why_not

pytestmark = [pytest.mark.systemd, pytest.mark.skipif(why_not() is not None,
                                                      reason=str(why_not()))]

UNIT = "qonic-proxy.service"
SANDBOX = "https://127.0.0.1:9443"
SANDBOX_CA = "/etc/qonic-proxy/sandbox-ca.pem"  # a world-readable copy of the sandbox's CA
CLIENT_ID = "qp-unit-test"
SYSTEM_PORTS = (8080, 8765)  # reverse listener, login callback
USER_PORTS = (18080, 18765)
USER, UID = "qpuser", 1500
USER_ENV = {"XDG_RUNTIME_DIR": f"/run/user/{UID}", "HOME": f"/home/{USER}"}
WATCHDOG_SECONDS = 90
SECRET = "unit-secret-" + os.urandom(12).hex()
started_at: dict[str, float] = {}


def config(ports: tuple[int, int], ca_file: str, state: str, secret_file: str | None) -> str:
    sections = {
        "qonic": {"api_url": SANDBOX, "ca_file": ca_file},
        "oauth": {"client_id": CLIENT_ID, "scopes": SCOPES, "open_browser": False,
                  "redirect_uri": f"http://127.0.0.1:{ports[1]}/callback",
                  "login_timeout": 60, "client_secret_file": secret_file},
        "proxy": {"listen_host": "127.0.0.1", "port": ports[0], "ca_dir": f"{state}/ca"},
        "token": {"cache_file": f"{state}/token.json"},
    }
    return "".join(f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items()
                                           if v is not None) + "\n"
                   for name, keys in sections.items())


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    m = Machine(tmp_path_factory.mktemp("machine"))
    try:
        m.boot()
        start_sandbox(m)
        install_system_unit(m)
        yield m
    finally:
        m.close()


def start_sandbox(m: Machine) -> None:
    """The Qonic look-alike, inside the container (its network is only its own loopback)."""
    m.write("/root/qp-sandbox.env", f"SANDBOX_CLIENT_SECRET={SECRET}\n", 0o600)
    m.run("systemd-run", "--unit=qp-sandbox", "-p", "EnvironmentFile=/root/qp-sandbox.env",
          "/opt/qonic-proxy/bin/qonic-proxy", "sandbox", "--host", "127.0.0.1", "--port",
          "9443", "--client-id", CLIENT_ID, "--cert-dir", "/var/lib/qp-sandbox",
          *[a for port in (SYSTEM_PORTS[1], USER_PORTS[1])
            for a in ("--redirect-uri", f"http://127.0.0.1:{port}/callback")])
    made = m.path("/var/lib/qp-sandbox/ca.pem")
    wait_for(made.is_file, 30, "the sandbox's CA")
    m.write(SANDBOX_CA, made.read_text())
    wait_for(lambda: m.run("curl", "-s", "--cacert", SANDBOX_CA, SANDBOX + "/v1/projects",
                           "-o", "/dev/null", "-w", "%{http_code}", check=False,
                           ).stdout not in ("", "000"), 30, "the sandbox to listen")


def install_system_unit(m: Machine) -> None:
    m.write("/etc/qonic-proxy/config.toml",
            config(SYSTEM_PORTS, SANDBOX_CA, "/var/lib/qonic-proxy", None))
    m.write("/etc/qonic-proxy/client_secret", SECRET, 0o600)
    m.write(f"/etc/systemd/system/{UNIT}", (ROOT / "systemd" / UNIT).read_text())
    # Enabled, so that the unit (and its exit status) stays loaded after it stops.
    m.run("systemctl", "daemon-reload")
    m.run("systemctl", "enable", UNIT)


def first_login(m: Machine, reverse_port: int, user: str | None = None,
                env: dict[str, str] | None = None) -> None:
    """The daemon's own pending login, finished with `qonic-proxy login --paste` (root for the
    system unit): a browser "elsewhere" stops at the callback and its address is pasted."""
    config = "" if user else " --config /etc/qonic-proxy/config.toml"
    script = (
        f"url=$(curl -s -o /dev/null -w '%{{redirect_url}}' http://127.0.0.1:{reverse_port}/-/login)"
        " && address=$(BROWSER_STOP_AT_CALLBACK=1 /opt/qonic-proxy/bin/python"
        " /opt/qp-test/browser.py \"$url\") && test -n \"$address\""
        f" && echo \"$address\" | /opt/qonic-proxy/bin/qonic-proxy login --paste{config}")
    result = m.run("sh", "-c", script, user=user,
                   env={**(env or {}), "SANDBOX_CA": SANDBOX_CA}, timeout=60)
    assert "Logged in to Qonic" in result.stdout, result.stderr


def health(m: Machine, port: int, user: str | None = None) -> dict[str, object]:
    out = m.run("curl", "-s", f"http://127.0.0.1:{port}/-/health", user=user).stdout
    return json.loads(out) if out else {}


def journal(m: Machine, *selector: str) -> str:
    return m.run("journalctl", "--no-pager", "-o", "cat", "-n", "30", *selector,
                 check=False).stdout


def status_text(m: Machine, unit: str, user: str | None = None) -> str:
    return m.show(unit, "StatusText", user=user, env=USER_ENV if user else None)["StatusText"]


def test_system_unit_start_login_api_credential_and_state(machine: Machine) -> None:
    m = machine
    m.run("systemctl", "start", UNIT, timeout=90)
    started_at["system"] = time.monotonic()
    # Type=notify: start returns only after READY=1, which comes with the listeners up.
    props = m.show(UNIT, "ActiveState", "SubState", "MainPID", "StatusText", "NRestarts")
    assert props["ActiveState"] == "active", props
    # no DISPLAY or BROWSER in a service: any browser, then paste the address it ends on
    assert props["StatusText"].startswith("waiting for login: Log in to Qonic: "), props
    assert "`qonic-proxy login --paste`" in props["StatusText"], props
    assert props["StatusText"].endswith("paste the address it ends on."), props
    assert health(m, SYSTEM_PORTS[0])["status"] == "login_required"
    started_at["pid"] = float(props["MainPID"])

    first_login(m, SYSTEM_PORTS[0])
    wait_for(lambda: health(m, SYSTEM_PORTS[0]).get("logged_in"), 30, "the login")
    wait_for(lambda: status_text(m, UNIT).startswith("logged in to Qonic"), 30,
             "STATUS= to say logged in")

    api = m.run("curl", "-sf", "http://127.0.0.1:8080/v1/projects")
    assert "projects" in api.stdout or api.stdout.startswith(("[", "{")), api.stdout

    # The secret came through LoadCredential= and is nowhere else to be seen.
    pid = props["MainPID"]
    environ = m.path(f"/proc/{pid}/environ").read_bytes()
    assert SECRET.encode() not in environ
    assert b"CREDENTIALS_DIRECTORY=/run/credentials/qonic-proxy.service" in environ
    for proc in m.path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(FileNotFoundError):
                assert SECRET.encode() not in (proc / "cmdline").read_bytes(), proc
    assert SECRET not in m.path("/etc/qonic-proxy/config.toml").read_text()
    assert SECRET not in m.run("systemctl", "show", UNIT).stdout

    # DynamicUser state: /var/lib/private/qonic-proxy, owned by the service's UID, 0700.
    uid = m.path(f"/proc/{pid}").stat().st_uid
    assert uid not in (0, 65534)
    private = m.path("/var/lib/private")
    assert (private.stat().st_uid, stat.S_IMODE(private.stat().st_mode)) == (0, 0o700)
    assert os.readlink(m.path("/var/lib/qonic-proxy")) == "private/qonic-proxy"
    for inside, mode in (("/var/lib/private/qonic-proxy", 0o700),
                         ("/var/lib/private/qonic-proxy/token.json", 0o600),
                         ("/var/lib/private/qonic-proxy/ca", 0o700),
                         ("/var/cache/private/qonic-proxy", 0o700)):
        st = m.path(inside).stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (uid, mode), inside


def install_user_unit(m: Machine) -> None:
    m.run("useradd", "--create-home", "--uid", str(UID), USER)
    home = f"/home/{USER}"
    m.run("install", "-d", "-o", USER, "-g", USER, "-m", "0700", f"{home}/.config",
          f"{home}/.config/qonic-proxy", f"{home}/.config/systemd", f"{home}/.config/systemd/user",
          f"{home}/.local", f"{home}/.local/bin")
    m.run("ln", "-s", "/opt/qonic-proxy/bin/qonic-proxy", f"{home}/.local/bin/qonic-proxy")
    cfg = f"{home}/.config/qonic-proxy"
    m.write(f"{cfg}/config.toml", config(USER_PORTS, SANDBOX_CA, f"{home}/.local/state/qonic-proxy",
                                         f"{cfg}/client_secret"), 0o600, UID)
    m.write(f"{cfg}/client_secret", SECRET, 0o600, UID)
    m.write(f"{home}/.config/systemd/user/qonic-proxy.service",
            (ROOT / "systemd" / "qonic-proxy-user.service").read_text(), 0o644, UID)
    m.run("systemctl", "start", f"user@{UID}.service")


def test_user_unit_start_login_stop_and_config_error(machine: Machine) -> None:
    m = machine
    # nspawn mounts a FIFO over /proc/kmsg, where ProtectKernelLogs= would mount its own
    # (226/NAMESPACE); a real host has the real file there.
    m.run("umount", "/proc/kmsg", check=False)
    install_user_unit(m)

    def user(*argv: str) -> str:
        done = m.run("systemctl", "--user", *argv, user=USER, env=USER_ENV, check=False,
                     timeout=90)
        assert done.returncode == 0, done.stderr + journal(m, f"--user-unit={UNIT}")
        return done.stdout

    user("daemon-reload")
    user("enable", UNIT)
    user("start", UNIT)
    assert status_text(m, UNIT, USER).startswith("waiting for login")
    first_login(m, USER_PORTS[0], user=USER, env=USER_ENV)
    wait_for(lambda: health(m, USER_PORTS[0], USER).get("logged_in"), 30,
             "the user unit's login")
    assert m.run("curl", "-sf", f"http://127.0.0.1:{USER_PORTS[0]}/v1/projects",
                 user=USER).stdout
    # Root is outside the user unit's user namespace (a user manager cannot map it), like every
    # other account: it cannot be told apart from them, so it is refused without the key.
    refused = m.run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                    f"http://127.0.0.1:{USER_PORTS[0]}/v1/projects").stdout
    assert refused == "403", refused
    token = m.path(f"/home/{USER}/.local/state/qonic-proxy/token.json").stat()
    assert (token.st_uid, stat.S_IMODE(token.st_mode)) == (UID, 0o600)

    user("stop", UNIT)
    props = m.show(UNIT, "ExecMainStatus", "Result", "ActiveState", user=USER, env=USER_ENV)
    assert props == {"ExecMainStatus": "0", "Result": "success", "ActiveState": "inactive"}

    m.write(f"/home/{USER}/.config/qonic-proxy/config.toml", "[oauth]\nnot_a_key = 1\n",
            0o600, UID)
    assert_config_error_is_not_restarted(m, user=USER)


def assert_config_error_is_not_restarted(m: Machine, user: str | None = None) -> None:
    argv = ["systemctl", *(["--user"] if user else []), "start", UNIT]
    env = USER_ENV if user else None
    failed = m.run(*argv, user=user, env=env, check=False, timeout=90)
    assert failed.returncode != 0
    time.sleep(7)  # RestartSec=5s: a restart would have happened by now
    props = m.show(UNIT, "ExecMainStatus", "Result", "ActiveState", "NRestarts", user=user,
                   env=env)
    assert props == {"ExecMainStatus": "78", "Result": "exit-code", "ActiveState": "failed",
                     "NRestarts": "0"}, props


def test_system_unit_watchdog_pings_for_90_seconds(machine: Machine) -> None:
    m = machine
    assert "system" in started_at, "runs after test_system_unit_start_..."
    remaining = started_at["system"] + WATCHDOG_SECONDS - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
    props = m.show(UNIT, "ActiveState", "MainPID", "NRestarts", "WatchdogUSec", "Result")
    assert props == {"ActiveState": "active", "MainPID": str(int(started_at["pid"])),
                     "NRestarts": "0", "WatchdogUSec": "30s", "Result": "success"}, props
    journal = m.run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat").stdout
    assert "watchdog timeout" not in journal.lower(), journal[-3000:]


def test_system_unit_stop_exits_0_and_config_error_is_78(machine: Machine) -> None:
    m = machine
    m.run("systemctl", "stop", UNIT, timeout=60)
    props = m.show(UNIT, "ExecMainStatus", "Result", "ActiveState")
    assert props == {"ExecMainStatus": "0", "Result": "success", "ActiveState": "inactive"}
    m.write("/etc/qonic-proxy/config.toml", "[oauth]\nnot_a_key = 1\n")
    assert_config_error_is_not_restarted(m)


OTHER = "qpother"  # a local account that [access] users does not name


def test_shared_machine_dropin_lets_named_accounts_in_and_refuses_the_rest(
        machine: Machine) -> None:
    """docs/systemd.md's shared-machine set-up, as written: the drop-in plus `[access] users`.

    Without the drop-in, PrivateUsers= maps every other account to "nobody", which the daemon
    cannot tell apart: the named account would not be recognised and the other one would not
    be refused by name.
    """
    m = machine
    m.run("useradd", "--create-home", OTHER)
    m.write("/etc/qonic-proxy/config.toml",
            config(SYSTEM_PORTS, SANDBOX_CA, "/var/lib/qonic-proxy", None)
            + f'[access]\nusers = ["{USER}"]\n')
    m.write(f"/etc/systemd/system/{UNIT}.d/shared-machine.conf",
            (ROOT / "systemd" / "shared-machine.conf").read_text())
    m.run("systemctl", "daemon-reload")
    m.run("systemctl", "reset-failed", UNIT, check=False)
    m.run("systemctl", "start", UNIT, timeout=90)
    wait_for(lambda: health(m, SYSTEM_PORTS[0]).get("logged_in"), 30,
             "the login from the token cache")

    def call(user: str) -> tuple[str, str]:
        out = m.run("curl", "-s", "-w", "\n%{http_code}",
                    f"http://127.0.0.1:{SYSTEM_PORTS[0]}/v1/projects", user=user).stdout
        body, _, code = out.rpartition("\n")
        return code, body

    code, body = call(USER)
    assert code == "200", (code, body)
    code, body = call(OTHER)
    assert code == "403", (code, body)
    assert OTHER in body and "[access] users" in body, body
    m.run("systemctl", "stop", UNIT, timeout=60)
