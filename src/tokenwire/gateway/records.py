"""What the gateway measures: the metrics set ``/metrics`` exposes and one request's
figures (:class:`_Record`), which feed it and write the request's access-log line."""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

import orjson

from tokenwire.errors import StreamError
from tokenwire.gateway.metrics import Registry
from tokenwire.gateway.metrics_files import METRICS_DIR_ENV, SharedRegistry
from tokenwire.llm.accumulate import error_from_delta
from tokenwire.llm.model import (
    Delta,
    ErrorDelta,
    MessageStart,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    UsageDelta,
)

if TYPE_CHECKING:
    from tokenwire.gateway.tracing import _Trace

access_log = logging.getLogger("tokenwire.gateway.access")

_CONTENT = (TextDelta, ToolCallDelta, ReasoningDelta, RefusalDelta)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)


_MAX_LOGGED = 300  # characters of an error message in the access log
# Credentials a message may quote (a key sent in the wrong field, a URL with a token).
_SECRET = re.compile(r"(?i)(bearer\s+|sk-|api[_-]?key=|token=)[^\s'\",&]{4,}")


def _loggable(text: str) -> str:
    text = _SECRET.sub(lambda m: m.group(1) + "[redacted]", text)
    return text if len(text) <= _MAX_LOGGED else text[:_MAX_LOGGED] + "..."


class GatewayMetrics:
    """What ``/metrics`` exposes.

    With a ``directory`` (default: ``$TOKENWIRE_METRICS_DIR``), every worker process
    writes its metrics to a file there and ``/metrics`` adds up all of them
    (:mod:`~tokenwire.gateway.metrics_files`); without one, this process's metrics are
    all there is (and nothing but dicts is touched per update)."""

    def __init__(self, directory: str | None = None) -> None:
        directory = directory or os.environ.get(METRICS_DIR_ENV) or None
        registry = self.registry = Registry() if directory is None else SharedRegistry(directory)
        self.requests = registry.counter(
            "tokenwire_requests_total",
            "Requests by endpoint, model and HTTP status.",
            ("endpoint", "model", "status"),
        )
        self.active = registry.gauge("tokenwire_active_streams", "Streams being relayed now.")
        self.ttft = registry.histogram(
            "tokenwire_time_to_first_token_seconds",
            "From request to the first content chunk.",
            _LATENCY_BUCKETS,
            ("model", "upstream"),
        )
        self.gap = registry.histogram(
            "tokenwire_inter_token_seconds",
            "Time between content chunks.",
            _GAP_BUCKETS,
            ("model", "upstream"),
        )
        self.tokens = registry.counter(
            "tokenwire_tokens_total",
            "Tokens by direction (input/output), model and upstream.",
            ("model", "upstream", "direction"),
        )
        self.disconnects = registry.counter(
            "tokenwire_client_disconnects_total",
            "Streams whose client left before the end.",
            ("model", "upstream"),
        )
        self.errors = registry.counter(
            "tokenwire_errors_total",
            "Failed requests and streams by error category and upstream.",
            ("category", "upstream"),
        )
        # Routes with several deployments (tokenwire.gateway.routing).
        self.attempts = registry.counter(
            "tokenwire_upstream_attempts_total",
            "Upstream attempts on routed models by deployment and outcome.",
            ("model", "deployment", "outcome"),
        )
        self.continuations = registry.counter(
            "tokenwire_continuations_total",
            "Replies continued on another deployment after their upstream failed.",
            ("model", "deployment"),
        )
        self.deployment_state = registry.gauge(
            "tokenwire_deployment_state",
            "1 for the state each deployment of a routed model is in (up, cooldown, probing).",
            ("model", "deployment", "state"),
        )
        self.deployment_in_flight = registry.gauge(
            "tokenwire_deployment_in_flight",
            "Requests in flight on each deployment of a routed model.",
            ("model", "deployment"),
        )


class _Record:
    """One request's figures, for the metrics and its access-log line (and, with
    tracing on, its span: ``trace``, see :mod:`~tokenwire.gateway.tracing`)."""

    __slots__ = (
        "attempts",
        "chunks",
        "endpoint",
        "error",
        "first",
        "id",
        "input_tokens",
        "last",
        "metrics",
        "model",
        "outcome",
        "output_tokens",
        "protocol",
        "started",
        "status",
        "trace",
        "upstream",
        "upstream_headers",
    )

    def __init__(self, metrics: GatewayMetrics, endpoint: str) -> None:
        self.metrics = metrics
        self.endpoint = endpoint
        self.id = secrets.token_hex(8)
        self.started = time.perf_counter()
        self.model = "-"
        self.upstream = "-"
        self.protocol: str | None = None  # the upstream's wire protocol, for its errors
        self.status = 200
        self.first: float | None = None
        self.last = 0.0
        self.chunks = 0
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.outcome = "ok"
        self.error: dict[str, str | None] | None = None
        self.trace: _Trace | None = None  # tracing off: None, and nothing else is done
        self.upstream_headers: dict[str, str] | None = None  # the trace context to send
        # Routed models: one entry per upstream attempt (tokenwire.gateway.routing).
        self.attempts: list[dict[str, Any]] = []

    def content(self) -> None:
        now = time.perf_counter()
        labels = (self.model, self.upstream)
        if self.first is None:
            self.first = now
            self.metrics.ttft.observe(now - self.started, *labels)
        else:
            self.metrics.gap.observe(now - self.last, *labels)
        self.last = now
        self.chunks += 1

    def observe(self, deltas: list[Delta]) -> None:
        for delta in deltas:
            kind = type(delta)
            if kind in _CONTENT:
                self.content()
                continue
            if kind is UsageDelta or kind is MessageStart:
                usage = delta.usage  # type: ignore[union-attr]
                if usage is not None:
                    if usage.input_tokens is not None:
                        self.input_tokens = usage.input_tokens
                    if usage.output_tokens is not None:
                        self.output_tokens = usage.output_tokens
            elif kind is ErrorDelta:  # an error inside the upstream's stream fails it too
                self.fail(error_from_delta(delta, self.protocol))  # type: ignore[arg-type]
            if self.trace is not None:  # not per content chunk: ids, finish, errors
                self.trace.observe(delta)

    def fail(self, err: StreamError, status: int | None = None) -> None:
        if self.error is not None:
            return  # counted once: the first failure is the request's
        self.outcome = f"error:{err.type}"
        # What the client was told, bounded and without anything key-like: the access
        # log says why a request failed (internal errors: the reference id to look up).
        self.error = {
            "type": err.type,
            "message": _loggable(err.message),
            "param": _loggable(err.param) if err.param else None,
        }
        if status is not None:
            self.status = status
        self.metrics.errors.inc(err.type, self.upstream)
        if self.trace is not None:
            self.trace.fail(err)

    def finish(self) -> None:
        metrics = self.metrics
        metrics.requests.inc(self.endpoint, self.model, str(self.status))
        output = self.output_tokens if self.output_tokens is not None else self.chunks
        if self.input_tokens:
            metrics.tokens.inc(self.model, self.upstream, "input", amount=self.input_tokens)
        if output:
            metrics.tokens.inc(self.model, self.upstream, "output", amount=output)
        if self.outcome == "disconnect":
            metrics.disconnects.inc(self.model, self.upstream)
        if access_log.isEnabledFor(logging.INFO):
            ttft = None if self.first is None else round((self.first - self.started) * 1000, 2)
            line = {
                "stream_id": self.id,
                "endpoint": self.endpoint,
                "model": self.model,
                "upstream": self.upstream,
                "status": self.status,
                "ttft_ms": ttft,
                "chunks": self.chunks,
                "input_tokens": self.input_tokens,
                "output_tokens": output,
                "duration_ms": round((time.perf_counter() - self.started) * 1000, 2),
                "outcome": self.outcome,
            }
            if self.error is not None:
                line["error"] = self.error
            if self.attempts:
                line["attempts"] = self.attempts
            access_log.info(orjson.dumps(line).decode())
        if self.trace is not None:
            self.trace.end(self)
