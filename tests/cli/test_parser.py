"""The parser: `run` by default, usage errors as ExitStatus.USAGE (never a bare sys.exit)."""

from __future__ import annotations

import pytest

from qonic_proxy import __version__
from qonic_proxy.cli.main import main
from qonic_proxy.cli.parser import ParserExit, build_parser, with_default_verb
from qonic_proxy.errors import ExitStatus
from tests.cli.helpers import RecordingEnvironment


@pytest.mark.parametrize(("argv", "expected"), [
    ([], ["run"]),
    (["--config", "x.toml"], ["run", "--config", "x.toml"]),
    (["--log-level", "debug"], ["run", "--log-level", "debug"]),
    (["status", "--json"], ["status", "--json"]),
    (["sandbox", "--port", "0"], ["sandbox", "--port", "0"]),
    (["--help"], ["--help"]),
    (["-h"], ["-h"]),
    (["--version"], ["--version"]),
])
def test_run_is_the_default_verb(argv: list[str], expected: list[str]) -> None:
    assert with_default_verb(argv) == expected


@pytest.mark.parametrize("argv", [
    ["status", "--bogus"],
    ["--bogus"],  # becomes `run --bogus`
    ["run", "--log-level", "loud"],
    ["run", "--log-format", "xml"],
    ["demo", "--port", "eighty"],
    ["logout", "extra"],
])
def test_unknown_or_bad_options_exit_2(argv: list[str]) -> None:
    env = RecordingEnvironment()
    assert main(argv, env) == ExitStatus.USAGE
    assert "usage: qonic-proxy" in env.err
    assert "error:" in env.err
    assert env.out == ""


def test_version() -> None:
    env = RecordingEnvironment()
    assert main(["--version"], env) == ExitStatus.OK
    assert env.out.strip() == f"qonic-proxy {__version__}"


def test_the_parser_raises_instead_of_exiting() -> None:
    with pytest.raises(ParserExit) as caught:
        build_parser().parse_args(["status", "--bogus"])
    assert caught.value.status is ExitStatus.USAGE
