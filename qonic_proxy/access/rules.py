"""Per-account rule sets: `[access.rules] NAME = ["METHOD /path/pattern", ...]`.

An account with a rule set may send exactly the requests one of its rules matches (an
allow-list; 403 JSON naming the rule set otherwise). A rule is `METHOD PATTERN`: METHOD is an
upper-case HTTP method token or `*` (any method); PATTERN starts with `/`, and each of its
segments is a literal, `*` (exactly one non-empty segment) or `**` (any number of segments,
none included). Literals may use letters, digits and `-._~!$&'()+,;=:@` only: no `%`, `?`, `#`,
`\\`, no partial wildcards (`a*`), no `.` or `..`.

A request path is matched after normalisation, the same way for every listener:
- the query is dropped;
- percent-escapes of unreserved characters (letters, digits, `-._~`) are decoded, as RFC 3986
  says they are equivalent (`/v1/%70rojects` is `/v1/projects`);
- a path that still holds an escaped `/` or `\\` (`%2F`, `%5C`), a raw `\\`, or a `.`/`..`
  segment (also as `%2E`) matches no rule: the API might read it as another path than we did.
Empty segments (`//`) are kept: `*` never matches one, `**` does.
"""

from __future__ import annotations

import re

from qonic_proxy.records import record

METHOD = re.compile(r"[A-Z][A-Z-]{0,19}|\*")
LITERAL = re.compile(r"[A-Za-z0-9\-._~!$&'()+,;=:@]+")
_UNRESERVED_ESCAPE = re.compile(r"%(2[dDeE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA]|5[fF]|7[eE])")
_FORBIDDEN = re.compile(r"%(2[fF]|5[cC])|\\|\x00")
ANY = "**"
ONE = "*"


class RuleError(ValueError):
    """A rule that is not `METHOD /pattern`; the message says what was expected."""


@record
class Rule:
    method: str
    segments: tuple[str, ...]
    text: str

    @classmethod
    def parse(cls, text: str) -> Rule:
        parts = text.split(" ")
        if len(parts) != 2 or not parts[1]:
            raise RuleError(f"{text!r} is not \"METHOD /path\" (one space between them)")
        method, pattern = parts
        if not METHOD.fullmatch(method):
            raise RuleError(f"{method!r} in {text!r} is not an upper-case HTTP method or *")
        if not pattern.startswith("/"):
            raise RuleError(f"the path {pattern!r} in {text!r} does not start with /")
        segments = tuple(pattern[1:].split("/"))
        for index, segment in enumerate(segments):
            if segment in (ONE, ANY):
                if segment == ANY and index and segments[index - 1] == ANY:
                    raise RuleError(f"{text!r} has ** twice in a row; one is enough")
                continue
            if segment in (".", "..") or not LITERAL.fullmatch(segment):
                raise RuleError(
                    f"the segment {segment!r} in {text!r} is not a literal (letters, digits, "
                    "-._~ and the other characters a path segment may hold unescaped), nor * "
                    "(one segment) or ** (any depth)")
        return cls(method, segments, text)

    def matches(self, method: str, segments: tuple[str, ...]) -> bool:
        if self.method != ONE and self.method != method:
            return False
        return _match(self.segments, segments)


def _match(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == ANY:
        return any(_match(rest, path[skip:]) for skip in range(len(path) + 1))
    if not path:
        return False
    if head == ONE:
        return bool(path[0]) and _match(rest, path[1:])
    return head == path[0] and _match(rest, path[1:])


def normalised_segments(path: str) -> tuple[str, ...] | None:
    """The segments of a request path as rules see them; None when no rule may match it."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        return None  # absolute or authority form never matches a path rule
    path = _UNRESERVED_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), path)
    if _FORBIDDEN.search(path):
        return None
    segments = tuple(path[1:].split("/"))
    if any(segment in (".", "..") for segment in segments):
        return None
    return segments


@record
class RuleSet:
    """The rules of one account, under the name it was configured with."""

    name: str
    rules: tuple[Rule, ...]

    def allows(self, method: str, path: str) -> bool:
        segments = normalised_segments(path)
        if segments is None:
            return False
        return any(rule.matches(method.upper(), segments) for rule in self.rules)
