"""logs: the one-shot verbs' loggers import `logging` only for a line that will be shown."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(body: str) -> subprocess.CompletedProcess[str]:
    """`body` in a fresh interpreter (nothing has imported logging there yet)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(body)], cwd=REPO,
                          capture_output=True, text=True, timeout=30, check=False)


def test_a_line_below_the_noted_level_costs_no_import() -> None:
    result = run("""\
        import sys
        from qonic_proxy.logs import configure_later, logger
        configure_later("warning", "text")
        log = logger("qonic_proxy.test")
        log.debug("quiet %s", 1)
        log.info("quiet too")
        print("logging" in sys.modules)
        """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False" and result.stderr == ""


def test_the_first_shown_line_sets_logging_up_as_noted() -> None:
    result = run("""\
        import logging
        from qonic_proxy.logs import configure_later, logger
        configure_later("info", "json")
        logger("qonic_proxy.test").info("shown %s", "once")
        logger("qonic_proxy.test").debug("not shown")
        print(logging.getLogger("mitmproxy").level == logging.WARNING)
        """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"  # mitmproxy's loggers stay at warning
    assert '"message": "shown once"' in result.stderr and '"level": "info"' in result.stderr
    assert "not shown" not in result.stderr


def test_a_set_up_made_by_someone_else_is_kept() -> None:
    result = run("""\
        import logging, sys
        logging.basicConfig(stream=sys.stdout, format="host: %(message)s", level=logging.DEBUG)
        from qonic_proxy.logs import configure_later, logger
        configure_later("error", "json")
        logger("qonic_proxy.test").debug("to the host's handler")
        """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "host: to the host's handler" and result.stderr == ""


def test_settle_applies_the_noted_set_up_for_code_that_logs_by_itself() -> None:
    result = run("""\
        import logging
        from qonic_proxy.logs import configure_later, settle
        configure_later("warning", "text")
        settle()
        logging.getLogger("asyncio").warning("from a library")
        """)
    assert result.returncode == 0, result.stderr
    assert result.stderr.rstrip().endswith("WARNING from a library")
