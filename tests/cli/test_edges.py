"""The CLI's edges: unknown verbs and options, `help`, --config anywhere, log levels, help lines."""

from __future__ import annotations

import argparse
import re

import pytest

from qonic_proxy.cli import commands
from qonic_proxy.cli.commands import COMMANDS
from qonic_proxy.cli.environment import Environment
from qonic_proxy.cli.main import main
from qonic_proxy.cli.parser import build_parser, with_default_verb
from qonic_proxy.errors import ExitStatus
from qonic_proxy.records import replace
from qonic_proxy.sandbox import cli as sandbox_cli
from qonic_proxy.wrap.environment import CA_VARIABLES, PROXY_VARIABLES
from tests.cli.helpers import RecordingEnvironment


def run(*argv: str) -> tuple[int, RecordingEnvironment]:
    env = RecordingEnvironment()
    return main(list(argv), env), env


def test_an_unknown_verb_gets_the_nearest_and_the_list() -> None:
    status, env = run("stauts")
    assert status == ExitStatus.USAGE
    assert env.err.startswith("qonic-proxy: unknown command 'stauts' (did you mean status?); ")
    for command in COMMANDS:
        assert command.name in env.err
    assert env.err.count("\n") == 1 and env.out == ""


def test_a_far_unknown_verb_gets_only_the_list() -> None:
    status, env = run("frobnicate")
    assert status == ExitStatus.USAGE
    assert "did you mean" not in env.err and "the commands are init, " in env.err


@pytest.mark.parametrize(("argv", "expected"), [
    (["--config", "x.toml", "status"], ["status", "--config", "x.toml"]),
    (["--config=x.toml", "status", "--json"], ["status", "--config=x.toml", "--json"]),
    (["--config", "x.toml", "--log-level", "debug"], ["run", "--config", "x.toml",
                                                      "--log-level", "debug"]),
    (["status", "--config", "x.toml"], ["status", "--config", "x.toml"]),
])
def test_config_before_or_after_the_verb(argv: list[str], expected: list[str]) -> None:
    assert with_default_verb(argv) == expected
    assert build_parser().parse_verb(expected).config == "x.toml"


def test_an_unknown_option_is_reported_by_its_verb_with_a_near_miss() -> None:
    status, env = run("status", "--jsn")
    assert status == ExitStatus.USAGE
    assert "usage: qonic-proxy status" in env.err
    assert "unrecognized arguments: --jsn (did you mean --json?)" in env.err


@pytest.mark.parametrize("level", ["DEBUG", "Info", "warning", "ERROR"])
def test_log_levels_in_any_case(level: str) -> None:
    assert build_parser().parse_verb(["run", "--log-level", level]).log_level == level.lower()
    assert build_parser().parse_verb(["status", "--log-level", level]).log_level == level.lower()


def test_help_lists_the_verbs_and_explains_one() -> None:
    status, env = run("help")
    assert status == ExitStatus.OK
    assert all(command.name in env.out for command in COMMANDS)
    status, env = run("help", "status")
    assert status == ExitStatus.OK
    assert "usage: qonic-proxy status" in env.out and "--json" in env.out
    status, env = run("help", "sandbox")
    assert status == ExitStatus.OK and "--cert-dir" in env.out
    status, env = run("help", "stauts")
    assert status == ExitStatus.USAGE and "did you mean status?" in env.err


def _parsers() -> list[argparse.ArgumentParser]:
    parser = build_parser()
    return [parser, *parser.verb_parsers.values(), sandbox_cli.parser()]


def test_every_option_has_a_help_line_with_its_default() -> None:
    for parser in _parsers():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction |
                          argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
                continue
            said = "required" if action.required else "default"
            assert action.help and said in action.help, (parser.prog, action.dest)


def test_the_internal_error_hint_names_a_flag_the_verb_has(monkeypatch: pytest.MonkeyPatch,
                                                           ) -> None:
    def buggy(args: argparse.Namespace, env: Environment) -> int:
        raise RuntimeError("boom")

    for verb in ("status", "logout", "token", "init"):
        monkeypatch.setitem(commands.BY_NAME, verb,
                            replace(commands.BY_NAME[verb], handler=buggy))
        status, env = run(verb)
        assert status == ExitStatus.FAILURE
        flags = set(re.findall(r"--[a-z-]+", env.err))
        assert flags == {"--log-level"}
        assert flags <= set(build_parser().verb_parsers[verb].option_names())


def test_exec_help_lists_its_variables_and_the_private_proxy() -> None:
    status, env = run("exec", "--help")
    text = " ".join(env.out.split())
    assert status == ExitStatus.OK
    for name in (*PROXY_VARIABLES, *CA_VARIABLES, "NO_PROXY", "QONIC_API_URL"):
        assert name in text
    assert "starts a private one" in text


def test_demo_does_not_offer_config_but_accepts_it(monkeypatch: pytest.MonkeyPatch) -> None:
    status, env = run("demo", "--help")
    assert status == ExitStatus.OK and "--config" not in env.out
    from qonic_proxy.cli import demo

    seen: list[dict[str, object]] = []
    monkeypatch.setattr(demo, "run_demo", lambda **kw: seen.append(kw) or 0)
    status, env = run("--config", "x.toml", "demo", "--once")
    assert status == ExitStatus.OK and seen and "ignores --config" in env.err
