"""Tests for qonic_proxy.access.rules: the rule syntax, matching, and path normalisation."""

from __future__ import annotations

import pytest

from qonic_proxy.access.rules import Rule, RuleError, RuleSet, normalised_segments

REPORTER = RuleSet("reporter", (Rule.parse("GET /v1/**"),
                                Rule.parse("POST /v1/projects/*/models/*/products/query")))


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/v1/projects", True),
    ("GET", "/v1", True),  # ** matches no segment, too
    ("GET", "/v1/projects/p1/models?limit=3", True),
    ("HEAD", "/v1/projects", False),  # strict: HEAD is not GET
    ("POST", "/v1/projects/p1/models/m1/products/query", True),
    ("post", "/v1/projects/p1/models/m1/products/query", True),
    ("POST", "/v1/projects/p1/models/m1/products/query?x=1", True),
    ("POST", "/v1/projects/p1/models/m1/products", False),
    ("POST", "/v1/projects/p1/models/m1/products/query/more", False),
    ("POST", "/v1/projects//models/m1/products/query", False),  # * is never empty
    ("POST", "/v1/projects/p1/x/models/m1/products/query", False),  # * is one segment
    ("DELETE", "/v1/projects/p1", False),
    ("GET", "/v2/projects", False),
])
def test_a_rule_set_allows_what_one_rule_matches(method: str, path: str, allowed: bool) -> None:
    assert REPORTER.allows(method, path) is allowed


@pytest.mark.parametrize("path", [
    "/v1/projects/p1/models/m1/products/../../../../delete/query",
    "/v1/projects/p1/models/m1/products/%2e%2E/query",
    "/v1/projects/p1%2Fmodels%2Fm1/models/m1/products/query",
    "/v1/projects/p1%2fx/models/m1/products/query",
    "/v1/projects/p1%5Cx/models/m1/products/query",
    "/v1/projects/p1\\x/models/m1/products/query",
    "/v1/projects/./p1/models/m1/products/query",
    "https://api.qonic.com/v1/projects/p1/models/m1/products/query",
    "*",
])
def test_paths_that_could_mean_another_path_match_no_rule(path: str) -> None:
    assert normalised_segments(path) is None
    assert not RuleSet("any", (Rule.parse("* /**"),)).allows("POST", path)


def test_unreserved_escapes_are_decoded_before_matching() -> None:
    assert normalised_segments("/v1/%70rojects/p%2D1?q=%2F") == ("v1", "projects", "p-1")
    assert REPORTER.allows("POST", "/v1/projects/p1/models/m1/products/%71uery")
    assert normalised_segments("/v1/a%20b") == ("v1", "a%20b")  # others stay escaped


def test_double_slashes_are_kept_for_star_star() -> None:
    assert normalised_segments("/v1/projects/p1//publish") == ("v1", "projects", "p1", "",
                                                                "publish")
    assert RuleSet("s", (Rule.parse("POST /v1/**"),)).allows("POST", "/v1/projects/p1//publish")
    assert not RuleSet("s", (Rule.parse("POST /v1/projects/*/*/publish"),)).allows(
        "POST", "/v1/projects/p1//publish")


def test_any_method_and_star_star_in_the_middle() -> None:
    rules = RuleSet("s", (Rule.parse("* /v1/**/query"),))
    assert rules.allows("PATCH", "/v1/query") and rules.allows("PUT", "/v1/a/b/c/query")
    assert not rules.allows("PUT", "/v1/a/b/c/query/x")


@pytest.mark.parametrize(("text", "expected"), [
    ("GET", "METHOD /path"),
    ("GET  /v1", "METHOD /path"),
    ("get /v1", "upper-case HTTP method"),
    ("GET v1/x", "does not start with /"),
    ("GET /v1/a*", "not a literal"),
    ("GET /v1/%2F", "not a literal"),
    ("GET /v1/../x", "not a literal"),
    ("GET /v1/./x", "not a literal"),
    ("GET /v1/x?y=1", "not a literal"),
    ("GET /v1/**/**", "twice in a row"),
])
def test_bad_rules_say_what_was_expected(text: str, expected: str) -> None:
    with pytest.raises(RuleError) as caught:
        Rule.parse(text)
    assert expected in str(caught.value)
