"""Prometheus metrics for the gateway, rendered in the text exposition format.

Small on purpose: counters, gauges and histograms with labels, kept in dicts and
updated from the event loop thread only (so no locks). Per-chunk updates are a dict
lookup and an add.

Every metric holds at most ``max_series`` label sets (default 1,000); observations for
further label sets are counted under the label value ``"other"``, so that names chosen
by clients cannot grow memory or ``/metrics`` without bound.

These are one process's metrics. Several worker processes add theirs up through files
in a shared directory: :mod:`tokenwire.gateway.metrics_files`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import TypeVar

__all__ = ["Counter", "Gauge", "Histogram", "HistogramSeries", "Registry"]

Labels = tuple[str, ...]
HistogramSeries = tuple[Sequence[float], float, float]
"""One histogram series: the count in each bucket (not cumulative, the last one above
every bound), the sum and the count of the observations."""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_labels(names: Sequence[str], values: Labels, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


MAX_SERIES = 1000
OTHER = "other"


class _Metric:
    kind = ""

    def __init__(
        self, name: str, help: str, labels: Sequence[str] = (), *, max_series: int = MAX_SERIES
    ) -> None:
        self.name = name
        self.help = help
        self.label_names = tuple(labels)
        self.max_series = max_series
        self.overflow: Labels = (OTHER,) * len(self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError


class Counter(_Metric):
    """A monotonically increasing count."""

    kind = "counter"

    def __init__(
        self, name: str, help: str, labels: Sequence[str] = (), *, max_series: int = MAX_SERIES
    ) -> None:
        super().__init__(name, help, labels, max_series=max_series)
        self.values: dict[Labels, float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        values = self.values
        current = values.get(labels)
        if current is None:
            if len(values) >= self.max_series:
                labels = self.overflow
            current = values.get(labels, 0.0)
        values[labels] = current + amount

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def render(self, values: Mapping[Labels, float] | None = None) -> list[str]:
        """The exposition lines of ``values`` (default: this process's)."""
        lines = self.header()
        for labels, value in sorted((self.values if values is None else values).items()):
            lines.append(f"{self.name}{_format_labels(self.label_names, labels)} {_number(value)}")
        return lines


class Gauge(Counter):
    """A value that goes up and down."""

    kind = "gauge"

    def dec(self, *labels: str, amount: float = 1.0) -> None:
        self.inc(*labels, amount=-amount)

    def set(self, value: float, *labels: str) -> None:
        self.inc(*labels, amount=value - self.get(*labels))

    def render(self, values: Mapping[Labels, float] | None = None) -> list[str]:
        """The exposition lines of ``values`` (default: this process's)."""
        if values is None:
            values = self.values
        if not values and not self.label_names:
            return [*self.header(), f"{self.name} 0"]
        return super().render(values)


class Histogram(_Metric):
    """Observations counted into cumulative buckets (upper bounds in seconds)."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        buckets: Sequence[float],
        labels: Sequence[str] = (),
        *,
        max_series: int = MAX_SERIES,
    ) -> None:
        super().__init__(name, help, labels, max_series=max_series)
        self.bounds = sorted(buckets)
        # per label set: [count per bucket (non-cumulative, + overflow)], sum, count
        self.data: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *labels: str) -> None:
        entry = self.data.get(labels)
        if entry is None:
            if len(self.data) >= self.max_series:
                labels = self.overflow
                entry = self.data.get(labels)
            if entry is None:
                entry = self.data[labels] = ([0] * (len(self.bounds) + 1), [0.0, 0.0])
        entry[0][bisect.bisect_left(self.bounds, value)] += 1
        totals = entry[1]
        totals[0] += value
        totals[1] += 1

    def count(self, *labels: str) -> int:
        entry = self.data.get(labels)
        return int(entry[1][1]) if entry else 0

    def render(self, series: Mapping[Labels, HistogramSeries] | None = None) -> list[str]:
        """The exposition lines of ``series`` (default: this process's)."""
        if series is None:
            series = {labels: (counts, t[0], t[1]) for labels, (counts, t) in self.data.items()}
        lines = self.header()
        for labels, (counts, total, count) in sorted(series.items()):
            running = 0.0
            for bound, n in zip([*self.bounds, math.inf], counts, strict=True):
                running += n
                le = f'le="{_number(bound)}"'
                label_text = _format_labels(self.label_names, labels, le)
                lines.append(f"{self.name}_bucket{label_text} {_number(running)}")
            base = _format_labels(self.label_names, labels)
            lines.append(f"{self.name}_sum{base} {_number(total)}")
            lines.append(f"{self.name}_count{base} {_number(count)}")
        return lines


_M = TypeVar("_M", bound=_Metric)


class Registry:
    """The set of metrics one gateway exposes at ``/metrics``."""

    def __init__(self) -> None:
        self.metrics: list[_Metric] = []

    def add(self, metric: _M) -> _M:
        self.metrics.append(metric)
        return metric

    def counter(
        self, name: str, help: str, labels: Sequence[str] = (), *, max_series: int = MAX_SERIES
    ) -> Counter:
        """A new counter, exposed by this registry."""
        return self.add(Counter(name, help, labels, max_series=max_series))

    def gauge(
        self, name: str, help: str, labels: Sequence[str] = (), *, max_series: int = MAX_SERIES
    ) -> Gauge:
        """A new gauge, exposed by this registry."""
        return self.add(Gauge(name, help, labels, max_series=max_series))

    def histogram(
        self,
        name: str,
        help: str,
        buckets: Sequence[float],
        labels: Sequence[str] = (),
        *,
        max_series: int = MAX_SERIES,
    ) -> Histogram:
        """A new histogram, exposed by this registry."""
        return self.add(Histogram(name, help, buckets, labels, max_series=max_series))

    def render(self) -> bytes:
        lines: list[str] = []
        for metric in self.metrics:
            lines.extend(metric.render())
        return ("\n".join(lines) + "\n").encode()
