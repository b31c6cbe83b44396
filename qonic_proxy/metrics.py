"""Prometheus text-format metrics, kept in-process: a few counters and one histogram.

Hand-written instead of prometheus_client: we need five series, and a dependency would cost more
than this file. The format is https://prometheus.io/docs/instrumenting/exposition_formats/.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    escaped = (v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for v in values)
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, escaped, strict=True)) + "}"


class Counter:
    """A monotonically increasing count per label combination."""

    def __init__(self, name: str, help_text: str, label_names: tuple[str, ...] = ()) -> None:
        self.name, self.help_text, self.label_names = name, help_text, label_names
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *label_values: str, amount: float = 1) -> None:
        self.values[label_values] = self.values.get(label_values, 0) + amount

    def get(self, *label_values: str) -> float:
        return self.values.get(label_values, 0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help_text}"
        yield f"# TYPE {self.name} counter"
        for values, count in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.label_names, values)} {count:g}"


class Histogram:
    """Cumulative-bucket histogram, as Prometheus expects."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]) -> None:
        self.name, self.help_text, self.buckets = name, help_text, buckets
        self.counts = [0] * (len(buckets) + 1)  # the last slot is +Inf
        self.total = 0.0
        self.observations = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.observations += 1

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help_text}"
        yield f"# TYPE {self.name} histogram"
        cumulative = 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            yield f'{self.name}_bucket{{le="{le}"}} {cumulative}'
        yield f"{self.name}_sum {self.total:.6f}"
        yield f"{self.name}_count {self.observations}"


class Gauge:
    """A value read at scrape time from a callback (e.g. seconds until the token expires)."""

    def __init__(self, name: str, help_text: str, read: Callable[[], float | None]) -> None:
        self.name, self.help_text, self.read = name, help_text, read

    def render(self) -> Iterable[str]:
        value = self.read()
        yield f"# HELP {self.name} {self.help_text}"
        yield f"# TYPE {self.name} gauge"
        if value is not None:
            yield f"{self.name} {value:.3f}"


class Metrics:
    """Every series the daemon exports."""

    def __init__(self, seconds_until_expiry: Callable[[], float | None]) -> None:
        self.requests = Counter(
            "qonic_proxy_requests_total",
            "Requests handled, by listener and HTTP status class.",
            ("listener", "status_class"),
        )
        self.upstream_latency = Histogram(
            "qonic_proxy_upstream_latency_seconds",
            "Time from sending the request upstream to the response headers arriving.",
            LATENCY_BUCKETS,
        )
        self.refreshes = Counter(
            "qonic_proxy_token_refreshes_total", "Token refreshes, by outcome.", ("outcome",)
        )
        self.refresh_failures = Counter(
            "qonic_proxy_token_refresh_failures_total",
            "Failed token refreshes, by reason (http_<status>, timeout, connection_refused, ...).",
            ("reason",),
        )
        self.logins = Counter(
            "qonic_proxy_logins_total", "Browser logins, by outcome.", ("outcome",)
        )
        self.rejected = Counter(
            "qonic_proxy_rejected_requests_total",
            "Requests refused before going upstream, by reason.",
            ("reason",),
        )
        self.expiry = Gauge(
            "qonic_proxy_token_expiry_seconds",
            "Seconds until the access token expires (absent when unknown or not logged in).",
            seconds_until_expiry,
        )

    def render(self) -> str:
        series = (self.requests, self.upstream_latency, self.refreshes, self.refresh_failures,
                  self.logins,
                  self.rejected, self.expiry)
        return "\n".join(line for s in series for line in s.render()) + "\n"
