"""The program: dispatch through the table, and every failure mapped to its ExitStatus."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from qonic_proxy.cli import commands
from qonic_proxy.cli.environment import Environment
from qonic_proxy.cli.main import main
from qonic_proxy.errors import (
    ConfigError,
    ExitStatus,
    LoginError,
    QonicProxyError,
    TokenEndpointError,
    UsageError,
)
from qonic_proxy.records import replace
from tests.cli.helpers import RecordingEnvironment, write_config


def replace_handler(monkeypatch: pytest.MonkeyPatch, verb: str,
                    handler: commands.Handler) -> None:
    monkeypatch.setitem(commands.BY_NAME, verb,
                        replace(commands.BY_NAME[verb], handler=handler))


@pytest.mark.parametrize("argv", [[], ["--config", "my.toml"]])
def test_run_is_dispatched_when_no_verb_is_named(monkeypatch: pytest.MonkeyPatch,
                                                 argv: list[str]) -> None:
    seen: list[argparse.Namespace] = []

    def fake_run(args: argparse.Namespace, env: Environment) -> int:
        seen.append(args)
        return ExitStatus.OK

    replace_handler(monkeypatch, "run", fake_run)
    assert main(argv, RecordingEnvironment()) == ExitStatus.OK
    assert [args.verb for args in seen] == ["run"]
    assert seen[0].log_level == "info"
    assert seen[0].config == (argv[1] if argv else None)


@pytest.mark.parametrize(("error", "status"), [
    (QonicProxyError("the upstream is down; try later"), ExitStatus.FAILURE),
    (LoginError("the login was denied; run `qonic-proxy login`"), ExitStatus.FAILURE),
    (TokenEndpointError("the token endpoint refused us", status=400), ExitStatus.FAILURE),
    (UsageError("exec needs a command"), ExitStatus.USAGE),
    (ConfigError("config file x.toml: [proxy] port must be an integer"), ExitStatus.CONFIG),
])
def test_each_error_class_maps_to_its_exit_status(monkeypatch: pytest.MonkeyPatch,
                                                  error: QonicProxyError,
                                                  status: ExitStatus) -> None:
    def failing(args: argparse.Namespace, env: Environment) -> int:
        raise error

    replace_handler(monkeypatch, "status", failing)
    env = RecordingEnvironment()
    assert main(["status"], env) == status
    assert env.err == f"qonic-proxy: {error}\n"  # one sentence, never a traceback


def test_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(args: argparse.Namespace, env: Environment) -> int:
        raise KeyboardInterrupt

    replace_handler(monkeypatch, "token", interrupted)
    env = RecordingEnvironment()
    assert main(["token"], env) == ExitStatus.INTERRUPTED == 130
    assert env.err == "qonic-proxy: interrupted\n"


def test_a_bug_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def buggy(args: argparse.Namespace, env: Environment) -> int:
        raise RuntimeError("boom")

    replace_handler(monkeypatch, "logout", buggy)
    env = RecordingEnvironment()
    assert main(["logout"], env) == ExitStatus.FAILURE
    assert env.err.startswith("qonic-proxy: internal error (RuntimeError: boom); please report")
    assert env.err.count("\n") == 1


def test_exit_status_values_are_the_contract() -> None:
    assert [int(s) for s in (ExitStatus.OK, ExitStatus.FAILURE, ExitStatus.USAGE,
                             ExitStatus.CONFIG, ExitStatus.INTERRUPTED)] == [0, 1, 2, 78, 130]


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    env = RecordingEnvironment()
    assert main(["status", "--config", str(tmp_path / "nope.toml")], env) == ExitStatus.CONFIG
    assert env.err.startswith("qonic-proxy: config file ")
    assert "does not exist" in env.err


def test_status_json_without_daemon_or_token(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    env = RecordingEnvironment()
    assert main(["status", "--json", "--config", str(config)], env) == ExitStatus.FAILURE
    report = json.loads(env.out)
    assert report["logged_in"] is False
    assert report["daemon"] is None
    assert report["action"] == "run `qonic-proxy login`"
    assert report["cache_file"] == str(tmp_path / "state" / "token.json")


def test_status_text_and_token_without_a_login(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    env = RecordingEnvironment()
    assert main(["status", "--config", str(config)], env) == ExitStatus.FAILURE
    assert env.out.startswith("NOT logged in: run `qonic-proxy login`")
    env = RecordingEnvironment()
    assert main(["token", "--config", str(config)], env) == ExitStatus.FAILURE
    assert env.out == ""
    assert env.err.startswith("qonic-proxy: not logged in (no token in ")


def test_logout_without_a_token(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    env = RecordingEnvironment()
    assert main(["logout", "--config", str(config)], env) == ExitStatus.OK
    assert env.out.startswith("Already logged out: no token cache at ")


def test_exec_needs_a_command(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    for rest in ([], ["--"]):
        env = RecordingEnvironment()
        assert main(["exec", "--config", str(config), *rest], env) == ExitStatus.USAGE
        assert "exec needs a command" in env.err


def test_sandbox_gets_its_own_argv_without_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from qonic_proxy.sandbox import cli as sandbox_cli

    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 0

    monkeypatch.setattr(sandbox_cli, "main", fake_main)
    env = RecordingEnvironment()
    assert main(["sandbox", "--host", "127.0.0.1", "--config", "c.toml", "--port", "0"], env) == 0
    assert main(["sandbox", "--", "--port", "1"], env) == 0
    assert seen == [["--host", "127.0.0.1", "--port", "0"], ["--port", "1"]]
