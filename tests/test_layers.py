"""Structural checks on the package layout: which code may import what, and module sizes.

The layering is the design (DESIGN.md: the OAuth and token code never imports mitmproxy); these
tests read the source with `ast`, so a lazy import inside a function counts as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "qonic_proxy"
MAX_MODULE_LINES = 400
# Only the proxy package embeds mitmproxy (the interception CA is made without it).
MITMPROXY_ALLOWED = {"proxy"}
MITMPROXY_LAZY_ALLOWED: set[str] = set()


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def imported_roots(path: Path) -> list[tuple[str, bool]]:
    """(top-level module name, imported at module level?) for every import in `path`."""
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module.split(".")[0], id(node) in top_level))
    return found


def relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


@pytest.mark.parametrize("path", modules(), ids=relative)
def test_only_the_proxy_package_imports_mitmproxy(path: Path) -> None:
    name = relative(path)
    package = name.split("/")[0] if "/" in name else ""
    uses = [top for root, top in imported_roots(path) if root == "mitmproxy"]
    if package in MITMPROXY_ALLOWED or not uses:
        return
    assert name in MITMPROXY_LAZY_ALLOWED and not any(uses), (
        f"{name} imports mitmproxy; only qonic_proxy/proxy may (OAuth, tokens, config and the "
        "one-shot verbs must work without it)")


@pytest.mark.parametrize("path", modules(), ids=relative)
def test_no_module_is_over_the_size_limit(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{relative(path)} has {lines} lines; split it by concern"


def test_the_test_tree_mirrors_the_source_tree() -> None:
    tests = Path(__file__).resolve().parent
    for package in sorted(p for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()):
        assert (tests / package.name / "__init__.py").is_file(), (
            f"qonic_proxy/{package.name}/ has no tests/{package.name}/")
