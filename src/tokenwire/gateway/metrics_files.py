"""Metrics that add up across worker processes, through one file per process.

With several worker processes (``tokenwire serve --workers N``, or any multi-process
server started with ``TOKENWIRE_METRICS_DIR`` set), each process also writes its
counters, gauges and histograms into a memory-mapped file of its own in that directory,
on every update. ``/metrics``, whichever worker answers it, reads every file there and
adds them up, so a scrape right after a request finished counts it:

- counters and histograms are summed over every file, those of processes that have
  exited included (a restarted worker does not make counts go backwards);
- gauges (streams being relayed now) are summed over live processes only.

A process holds an exclusive ``flock`` on its file for as long as it runs, and the
kernel releases it however the process ends (``SIGKILL`` included): a file that can be
locked belongs to a process that is gone. Unlike checking a pid, this cannot be fooled by
a reused pid or a zombie.

The directory must be empty when the server starts (files left by an earlier run would
count): ``tokenwire serve`` creates a fresh one for each run and removes it at exit.
The processes must run on one host (``flock`` and shared memory are local); an app
created before a fork (a preloading server) gets a file of its own in each child.

File layout (little-endian): a 16-byte header, ``b"tokenwm1"`` and the number of bytes
in use, then one entry per series, appended as series appear: key length and number of
values (two ``uint32``), the key (JSON ``[metric name, label values...]``, padded to 8
bytes), then the values (``float64``). A counter or gauge has one value; a histogram
has its sum, its count and one count per bucket.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import secrets
import struct
import weakref
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from tokenwire.gateway.metrics import (
    MAX_SERIES,
    Counter,
    Gauge,
    Histogram,
    HistogramSeries,
    Labels,
    Registry,
    _Metric,
)

__all__ = [
    "METRICS_DIR_ENV",
    "SeriesFile",
    "SharedCounter",
    "SharedGauge",
    "SharedHistogram",
    "SharedRegistry",
    "WorkerFile",
    "read_worker_files",
]

METRICS_DIR_ENV: Final = "TOKENWIRE_METRICS_DIR"
"""The directory of the per-process metric files; set, metrics add up across processes."""

SUFFIX: Final = ".metrics"
_MAGIC = b"tokenwm1"
_HEADER = struct.Struct("<8sQ")  # magic, bytes in use (header included)
_USED = struct.Struct("<Q")
_ENTRY = struct.Struct("<II")  # key length, number of values
_INITIAL_SIZE = 1 << 16  # doubled as needed; a gateway's usual series fit in a few KiB

# Bound methods looked up once: the per-update path is a dict lookup and one call.
_pack_value = struct.Struct("<d").pack_into
_pack_pair = struct.Struct("<dd").pack_into


def _padded(n: int) -> int:
    return (n + 7) & ~7


def _key(name: str, labels: Labels) -> bytes:
    # JSON escapes anything (quotes, newlines, lone surrogates) and keeps it ASCII.
    return json.dumps([name, *labels]).encode("ascii")


class SeriesFile:
    """This process's file: a slot of ``float64`` values per series, written in place.

    The file is created under a temporary name, locked, then renamed: readers only ever
    see files whose owner holds the lock."""

    def __init__(self, directory: str, *, size: int = _INITIAL_SIZE) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        temporary = os.path.join(directory, name + ".tmp")
        self.path = os.path.join(directory, name + SUFFIX)
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, max(size, _HEADER.size))
            self.map = mmap.mmap(fd, max(size, _HEADER.size))
            _HEADER.pack_into(self.map, 0, _MAGIC, _HEADER.size)
            os.rename(temporary, self.path)
        except BaseException:
            os.close(fd)
            os.unlink(temporary)
            raise
        self._fd = fd
        self.used = _HEADER.size
        # Closing the descriptor (and the mapping's own copy) releases the lock: the file
        # then counts as a dead process's.
        self._close_fd = weakref.finalize(self, os.close, fd)

    def allocate(self, name: str, labels: Labels, width: int) -> int:
        """Room for a new series of ``width`` values (all 0.0); returns the offset of its
        first value."""
        key = _key(name, labels)
        start = self.used
        values_at = start + _ENTRY.size + _padded(len(key))
        end = values_at + 8 * width
        if end > len(self.map):
            self._grow(end)
        _ENTRY.pack_into(self.map, start, len(key), width)
        self.map[start + _ENTRY.size : start + _ENTRY.size + len(key)] = key
        # Published last, so that a reader never sees a series half written.
        _USED.pack_into(self.map, 8, end)
        self.used = end
        return values_at

    def _grow(self, needed: int) -> None:
        size = len(self.map)
        while size < needed:
            size *= 2
        # Readers read the file, not this mapping: they see the old or the new length,
        # with the same bytes in the part both have.
        os.ftruncate(self._fd, size)
        self.map.close()
        self.map = mmap.mmap(self._fd, size)

    @property
    def closed(self) -> bool:
        return self.map.closed

    def close(self) -> None:
        """Stop writing; the file stays (its counts still count) but no longer as a live
        process's."""
        if not self.map.closed:
            self.map.close()
        self._close_fd()


@dataclass(frozen=True, slots=True)
class WorkerFile:
    """What one process's file holds: its series by metric name (label values and
    values, in the order they appeared), and whether the process is still running."""

    path: str
    alive: bool
    series: dict[str, list[tuple[Labels, tuple[float, ...]]]]


def read_worker_files(directory: str) -> list[WorkerFile]:
    """Every process's file in ``directory``, in name order (so that every scrape merges
    in the same order)."""
    try:
        names = sorted(name for name in os.listdir(directory) if name.endswith(SUFFIX))
    except FileNotFoundError:
        return []
    files = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as file:
                alive = _is_locked(file.fileno())
                data = file.read()
        except FileNotFoundError:
            continue
        files.append(WorkerFile(path, alive, _parse(data)))
    return files


def _is_locked(fd: int) -> bool:
    # A shared lock, so that readers probing the same file at once do not fail each other.
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def _parse(data: bytes) -> dict[str, list[tuple[Labels, tuple[float, ...]]]]:
    series: dict[str, list[tuple[Labels, tuple[float, ...]]]] = {}
    if len(data) < _HEADER.size:
        return series
    magic, used = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        return series
    used = min(used, len(data))
    at = _HEADER.size
    while at + _ENTRY.size <= used:
        key_length, width = _ENTRY.unpack_from(data, at)
        values_at = at + _ENTRY.size + _padded(key_length)
        end = values_at + 8 * width
        if end > used:
            break
        try:
            key = json.loads(data[at + _ENTRY.size : at + _ENTRY.size + key_length])
        except ValueError:
            break
        if isinstance(key, list) and key and all(isinstance(part, str) for part in key):
            values = struct.unpack_from(f"<{width}d", data, values_at)
            series.setdefault(key[0], []).append((tuple(key[1:]), values))
        at = end
    return series


def _merge(
    files: Sequence[WorkerFile], metric: _Metric, width: int, *, live_only: bool
) -> dict[Labels, list[float]]:
    """``metric``'s series summed over ``files``, at most ``max_series`` of them (plus the
    overflow series), like one process's."""
    merged: dict[Labels, list[float]] = {}
    arity = len(metric.label_names)
    for file in files:
        if live_only and not file.alive:
            continue
        for labels, values in file.series.get(metric.name, ()):
            if len(labels) != arity or len(values) != width:
                continue  # written by another version of the metric
            total = merged.get(labels)
            if total is None:
                if len(merged) >= metric.max_series:
                    labels = metric.overflow
                    total = merged.get(labels)
                if total is None:
                    total = merged[labels] = [0.0] * width
            for i, value in enumerate(values):
                total[i] += value
    return merged


class SharedCounter(Counter):
    """A counter whose values are also written to this process's file."""

    def __init__(
        self,
        file: SeriesFile,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        *,
        max_series: int = MAX_SERIES,
    ) -> None:
        super().__init__(name, help, labels, max_series=max_series)
        self.file = file
        self.slots: dict[Labels, int] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        values = self.values
        current = values.get(labels)
        if current is None:
            if len(values) >= self.max_series:
                labels = self.overflow
            current = values.get(labels)
            if current is None:
                current = 0.0
                self.slots[labels] = self.file.allocate(self.name, labels, 1)
        values[labels] = current = current + amount
        _pack_value(self.file.map, self.slots[labels], current)


class SharedGauge(SharedCounter, Gauge):
    """A gauge whose values are also written to this process's file."""


class SharedHistogram(Histogram):
    """A histogram whose series are also written to this process's file."""

    def __init__(
        self,
        file: SeriesFile,
        name: str,
        help: str,
        buckets: Sequence[float],
        labels: Sequence[str] = (),
        *,
        max_series: int = MAX_SERIES,
    ) -> None:
        super().__init__(name, help, buckets, labels, max_series=max_series)
        self.file = file
        self.slots: dict[Labels, int] = {}

    def observe(self, value: float, *labels: str) -> None:
        entry = self.data.get(labels)
        if entry is None:
            if len(self.data) >= self.max_series:
                labels = self.overflow
                entry = self.data.get(labels)
            if entry is None:
                entry = self.data[labels] = ([0] * (len(self.bounds) + 1), [0.0, 0.0])
                width = len(self.bounds) + 3
                self.slots[labels] = self.file.allocate(self.name, labels, width)
        counts = entry[0]
        bucket = bisect_left(self.bounds, value)
        counts[bucket] = n = counts[bucket] + 1
        totals = entry[1]
        totals[0] += value
        totals[1] += 1
        at = self.slots[labels]
        file_map = self.file.map
        _pack_pair(file_map, at, totals[0], totals[1])
        _pack_value(file_map, at + 16 + 8 * bucket, n)


_M = TypeVar("_M", bound=_Metric)


class SharedRegistry(Registry):
    """A registry whose metrics add up across the processes writing to ``directory``.

    Its metrics (made with :meth:`counter`, :meth:`gauge` and :meth:`histogram`) are
    updated in memory and in this process's file; :meth:`render` merges every file of
    the directory. ``get()``/``count()`` on a metric answer for this process alone."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = directory
        self.file = SeriesFile(directory)
        _registries.add(self)

    def add(self, metric: _M) -> _M:
        if not isinstance(metric, SharedCounter | SharedHistogram):
            raise TypeError(
                f"{metric.name}: a SharedRegistry exposes only its own metrics "
                "(made with counter(), gauge() or histogram())"
            )
        return super().add(metric)

    def counter(
        self, name: str, help: str, labels: Sequence[str] = (), *, max_series: int = MAX_SERIES
    ) -> Counter:
        return self.add(SharedCounter(self.file, name, help, labels, max_series=max_series))

    def gauge(
        self, name: str, help: str, labels: Sequence[str] = (), *, max_series: int = MAX_SERIES
    ) -> Gauge:
        return self.add(SharedGauge(self.file, name, help, labels, max_series=max_series))

    def histogram(
        self,
        name: str,
        help: str,
        buckets: Sequence[float],
        labels: Sequence[str] = (),
        *,
        max_series: int = MAX_SERIES,
    ) -> Histogram:
        metric = SharedHistogram(self.file, name, help, buckets, labels, max_series=max_series)
        return self.add(metric)

    def render(self) -> bytes:
        """Every process's metrics, added up."""
        files = read_worker_files(self.directory)
        lines: list[str] = []
        for metric in self.metrics:
            if isinstance(metric, Histogram):
                merged = _merge(files, metric, len(metric.bounds) + 3, live_only=False)
                series: dict[Labels, HistogramSeries] = {
                    labels: (values[2:], values[0], values[1]) for labels, values in merged.items()
                }
                lines.extend(metric.render(series))
            elif isinstance(metric, Counter):
                live_only = isinstance(metric, Gauge)
                merged = _merge(files, metric, 1, live_only=live_only)
                lines.extend(metric.render({labels: v[0] for labels, v in merged.items()}))
        return ("\n".join(lines) + "\n").encode()

    def close(self) -> None:
        """Stop writing this process's file (what it counted still counts)."""
        self.file.close()

    def _start_over(self) -> None:
        """In a forked child: the inherited file is the parent's. Write a new one, from
        zero (what the parent counted is in the parent's file)."""
        if self.file.closed:
            return
        # The new file first: should that fail, updates still go somewhere (wrongly
        # shared, rather than raising on every update).
        inherited, self.file = self.file, SeriesFile(self.directory)
        inherited.close()  # the child's copies of the mapping and descriptor only
        for metric in self.metrics:
            if isinstance(metric, SharedCounter):
                metric.values.clear()
            elif isinstance(metric, SharedHistogram):
                metric.data.clear()
            else:  # pragma: no cover - add() admits no other kind
                continue
            metric.slots.clear()
            metric.file = self.file


_registries: weakref.WeakSet[SharedRegistry] = weakref.WeakSet()


def _after_fork() -> None:
    for registry in list(_registries):
        registry._start_over()


os.register_at_fork(after_in_child=_after_fork)
