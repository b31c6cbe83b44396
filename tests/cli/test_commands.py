"""The command table: every verb of the contract, once, with --config; it drives the help."""

from __future__ import annotations

import argparse

import pytest

from qonic_proxy.cli.commands import BY_NAME, COMMANDS, DEFAULT_VERB, Command
from qonic_proxy.cli.main import main
from qonic_proxy.cli.parser import build_parser
from qonic_proxy.errors import ExitStatus
from tests.cli.helpers import RecordingEnvironment

CONTRACT_VERBS = {"init", "help", "run", "login", "logout", "status", "token", "exec", "ca",
                  "sandbox", "demo", "env"}


def test_the_table_holds_exactly_the_contract_verbs_once() -> None:
    names = [command.name for command in COMMANDS]
    assert len(names) == len(set(names))
    assert set(names) == CONTRACT_VERBS
    assert set(BY_NAME) == CONTRACT_VERBS
    assert DEFAULT_VERB == "run"


def test_every_verb_is_in_the_help_with_its_help_line() -> None:
    env = RecordingEnvironment()
    assert main(["--help"], env) == ExitStatus.OK
    help_text = " ".join(env.out.split())  # argparse wraps long lines
    for command in COMMANDS:
        assert command.name in help_text
        assert " ".join(command.help.split()) in help_text


@pytest.mark.parametrize("name", sorted(CONTRACT_VERBS - {"sandbox"}))
def test_every_parsed_verb_takes_config(name: str) -> None:
    argv = [name, "--config", "/some/file.toml"]
    if name == "exec":
        argv += ["--", "true"]
    args = build_parser().parse_args(argv)
    assert args.verb == name
    assert args.config == "/some/file.toml"


@pytest.mark.parametrize("name", sorted(CONTRACT_VERBS - {"sandbox", "demo", "help"}))
def test_every_verb_has_its_own_help(name: str) -> None:
    env = RecordingEnvironment()
    assert main([name, "--help"], env) == ExitStatus.OK
    assert "--config FILE" in env.out
    assert " ".join(BY_NAME[name].help.split()) in " ".join(env.out.split())


def test_verb_options() -> None:
    parser = build_parser()
    run = parser.parse_args(["run", "--log-level", "debug", "--log-format", "json"])
    assert (run.log_level, run.log_format) == ("debug", "json")
    assert parser.parse_args(["run"]).log_level == "info"
    assert parser.parse_args(["status", "--json"]).json is True
    assert parser.parse_args(["ca", "--bundle"]).bundle is True
    assert parser.parse_args(["login", "--no-browser"]).no_browser is True
    assert parser.parse_args(["exec", "--", "curl", "-v"]).command == ["--", "curl", "-v"]
    demo = parser.parse_args(["demo", "--port", "1", "--forward-port", "2", "--once"])
    assert (demo.port, demo.forward_port, demo.once) == (1, 2, True)


def test_a_command_has_exactly_one_handler() -> None:
    def handler(args: argparse.Namespace, env: object) -> int:
        return 0

    with pytest.raises(ValueError, match="exactly one"):
        Command("broken", "no handler at all")
    with pytest.raises(ValueError, match="exactly one"):
        Command("broken", "two handlers", handler, raw_handler=lambda argv, env: 0)
    assert BY_NAME["sandbox"].raw_handler is not None
    assert all(c.handler is not None for c in COMMANDS if c.name != "sandbox")
