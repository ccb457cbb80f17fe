"""OpenTelemetry tracing of the gateway's chat requests: ``[gateway] tracing = true``
(``pip install 'tokenwire[otel]'``), or a ``tracer_provider`` given to
:func:`~tokenwire.gateway.create_app`.

One span per request on a chat endpoint (OpenAI chat completions, Anthropic Messages,
OpenAI Responses), after the OpenTelemetry GenAI semantic conventions for a client's
inference call, since the gateway is the upstream model's client:

- name ``chat {gen_ai.request.model}``, kind ``CLIENT``; it starts when the request is
  accepted and ends when its reply does (the last event sent, an error, or the client
  leaving). It is opened once the request is routed, back-dated to its acceptance, so
  that a sampler sees the model, the provider and the server, as the conventions ask;
- at creation: ``gen_ai.operation.name`` (``chat``), ``gen_ai.provider.name`` (by the
  upstream's protocol, its ``telemetry_name``: ``openai`` for OpenAI chat completions
  and Responses, also on an OpenAI-compatible server, ``anthropic``, ...;
  ``tokenwire.demo`` for the demo model),
  ``gen_ai.request.model`` (the upstream's name for the model), ``server.address`` and
  ``server.port`` (an HTTP upstream's), ``gen_ai.request.stream`` (the client's),
  ``gen_ai.request.max_tokens`` / ``temperature`` / ``top_p`` / ``stop_sequences`` /
  ``seed`` and ``gen_ai.output.type`` (``json`` with a response format) when the
  request sets them, and ``tokenwire.route`` (the model name the client asked for) and
  ``tokenwire.upstream`` (the ``[providers]`` name);
- at the end: ``gen_ai.response.id`` and ``gen_ai.response.model`` (the upstream's),
  ``gen_ai.response.finish_reasons``, ``gen_ai.usage.input_tokens`` (cached tokens
  included, as the conventions define it, also for Anthropic, which counts them apart)
  and ``gen_ai.usage.output_tokens`` as the upstream reported them, with
  ``gen_ai.usage.cache_read.input_tokens``, ``gen_ai.usage.cache_creation.input_tokens``
  and ``gen_ai.usage.reasoning.output_tokens`` when reported; the time to the first
  content chunk in seconds, as ``gen_ai.response.time_to_first_chunk`` (the
  conventions' span attribute) and ``gen_ai.server.time_to_first_token``; the time per
  output token after the first (the rest of the request's duration over the output
  tokens after the first), as ``gen_ai.server.time_per_output_token``, for a reply that
  ended well; and ``tokenwire.stream_id`` (as in the access log and the
  ``x-tokenwire-stream-id`` header), ``tokenwire.endpoint`` and ``tokenwire.outcome``
  (``ok``, ``disconnect`` or ``error:TYPE``);
- a failure (before the upstream answered, or in its stream) sets the status ``ERROR``
  with the error's message, and ``error.type`` to its category, one of
  :data:`~tokenwire.errors.ERROR_TYPES` (``timeout``, ``network``, ``rate_limit``,
  ``authentication``, ``permission``, ``invalid_request``, ``not_found``,
  ``overloaded``, ``api_error``, ...). A client that leaves is no error: the status
  stays unset and ``tokenwire.outcome`` says ``disconnect``. A request refused before
  it was routed (bad key, bad body, unknown model) gets a span named ``chat``, without
  the model and provider.

The trace context is propagated both ways with the configured propagators (W3C
``traceparent`` by default): a request that carries one gets a span in the caller's
trace, and the upstream request carries the gateway span's. Prompts and replies are
never recorded.

The same figures also go to four histograms of the conventions, through the meter
provider (the global one unless one is given; nothing is recorded until one is set):
``gen_ai.server.time_to_first_token`` and ``gen_ai.server.time_per_output_token``
(replies that ended well), ``gen_ai.server.request.duration`` (with ``error.type`` for
failures) and ``gen_ai.client.token.usage`` (by ``gen_ai.token.type``), each with
``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.response.model`` and the server's address and port.

This module is imported only when tracing is on: off, the gateway never imports
OpenTelemetry, and a request costs one ``is None`` test per hook.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from tokenwire import __version__
from tokenwire.errors import StreamError
from tokenwire.llm.accumulate import error_from_delta
from tokenwire.llm.model import Delta, ErrorDelta, FinishDelta, MessageStart, Usage, UsageDelta
from tokenwire.llm.requests import ChatRequest
from tokenwire.providers import HTTPProvider

if TYPE_CHECKING:
    from tokenwire.gateway.records import _Record
    from tokenwire.gateway.relay import Upstream

__all__ = ["Tracing"]

_SCOPE = "tokenwire.gateway"
_OPERATION = "chat"
_DEMO = "tokenwire.demo"
_MAX_DESCRIPTION = 500  # characters of an error message kept as the span's status

# The bucket boundaries the conventions give for each histogram.
_TTFT_BUCKETS = (
    *(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75),
    *(1.0, 2.5, 5.0, 7.5, 10.0),
)
_TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
_DURATION_BUCKETS = tuple(0.01 * 2**n for n in range(14))  # 0.01, 0.02, ... 81.92
_TOKEN_BUCKETS = tuple(float(4**n) for n in range(14))  # 1, 4, 16, ... 67108864

Attributes = dict[str, AttributeValue]


class Tracing:
    """The spans and GenAI histograms of one gateway.

    ``tracer_provider`` and ``meter_provider`` default to the global ones, as the
    application (``trace.set_tracer_provider``) or ``opentelemetry-instrument``
    configures them, even after this is made; until one is set, nothing is recorded.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider)
        meter = metrics.get_meter(_SCOPE, __version__, meter_provider)
        self.ttft = meter.create_histogram(
            "gen_ai.server.time_to_first_token",
            unit="s",
            description="Time to generate first token for successful responses.",
            explicit_bucket_boundaries_advisory=_TTFT_BUCKETS,
        )
        self.tpot = meter.create_histogram(
            "gen_ai.server.time_per_output_token",
            unit="s",
            description="Time per output token generated after the first token for "
            "successful responses.",
            explicit_bucket_boundaries_advisory=_TPOT_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "gen_ai.server.request.duration",
            unit="s",
            description="Generative AI server request duration such as time-to-last byte "
            "or last output token.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self._servers: dict[str, Attributes] = {}

    def start(self, record: _Record, headers: Mapping[str, str]) -> None:
        """Begin the trace of ``record``'s request, now that it is accepted; its span's
        parent is the trace context the request carries, if any."""
        record.trace = _Trace(self, propagate.extract(headers))

    def server(self, upstream: Upstream) -> Attributes:
        """``server.address`` and ``server.port`` of an HTTP upstream (none for the demo)."""
        found = self._servers.get(upstream.name)
        if found is None:
            found = {}
            if isinstance(upstream, HTTPProvider):
                parts = urlsplit(upstream.url)
                if parts.hostname:
                    found["server.address"] = parts.hostname
                    found["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
            self._servers[upstream.name] = found
        return found


class _Trace:
    """One request's span, and what the reply told of itself on the way."""

    __slots__ = (
        "_cache_creation",
        "_cache_read",
        "_common",
        "_error",
        "_finish_reasons",
        "_parent",
        "_protocol",
        "_reasoning",
        "_response_id",
        "_response_model",
        "_secret",
        "_started",
        "_tracing",
        "span",
    )

    def __init__(self, tracing: Tracing, parent: Context) -> None:
        self._tracing = tracing
        self._parent = parent
        self._started = time.time_ns()
        self.span: Span | None = None
        self._common: Attributes = {}  # what the histograms are recorded by
        self._protocol: str | None = None
        self._secret: str | None = None
        self._error: StreamError | None = None
        self._finish_reasons: list[str] = []
        self._response_id: str | None = None
        self._response_model: str | None = None
        self._cache_read: int | None = None
        self._cache_creation: int | None = None
        self._reasoning: int | None = None

    def route(self, chat: ChatRequest, model: str, upstream: Upstream) -> dict[str, str]:
        """The request ``chat`` goes to ``upstream``, which calls the model ``model``:
        open the span and return the headers that carry its trace context there."""
        self._protocol = upstream.protocol
        if upstream.secret is not None:
            self._secret = upstream.secret.decode("utf-8", "surrogateescape")
        common: Attributes = {
            "gen_ai.operation.name": _OPERATION,
            "gen_ai.provider.name": _provider_name(upstream),
            "gen_ai.request.model": model,
            **self._tracing.server(upstream),
        }
        self._common = common
        attributes: Attributes = {
            **common,
            "gen_ai.request.stream": chat.stream,
            "tokenwire.route": chat.model,
            "tokenwire.upstream": upstream.name,
        }
        if chat.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = chat.max_tokens
        if chat.temperature is not None:
            attributes["gen_ai.request.temperature"] = chat.temperature
        if chat.top_p is not None:
            attributes["gen_ai.request.top_p"] = chat.top_p
        if chat.stop:
            attributes["gen_ai.request.stop_sequences"] = tuple(chat.stop)
        if chat.seed is not None:
            attributes["gen_ai.request.seed"] = chat.seed
        if chat.response_format is not None:
            attributes["gen_ai.output.type"] = "json"
        span = self.span = self._open(f"{_OPERATION} {model}", attributes)
        carrier: dict[str, str] = {}
        propagate.inject(carrier, trace.set_span_in_context(span, self._parent))
        return carrier

    def _open(self, name: str, attributes: Attributes) -> Span:
        return self._tracing.tracer.start_span(
            name,
            self._parent,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=self._started,
        )

    def observe(self, delta: Delta) -> None:
        """Note what a non-content delta tells: the reply's id and model, usage details,
        finish reasons and an error the upstream reported in its stream."""
        if isinstance(delta, FinishDelta):
            self._finish_reasons.append(delta.reason)
        elif isinstance(delta, MessageStart):
            self._response_id = self._response_id or delta.id
            self._response_model = self._response_model or delta.model
            if delta.usage is not None:
                self._usage(delta.usage)
        elif isinstance(delta, UsageDelta):
            self._usage(delta.usage)
        elif isinstance(delta, ErrorDelta):
            self._error = error_from_delta(delta, self._protocol)

    def _usage(self, usage: Usage) -> None:
        if usage.cache_read_input_tokens is not None:
            self._cache_read = usage.cache_read_input_tokens
        if usage.cache_creation_input_tokens is not None:
            self._cache_creation = usage.cache_creation_input_tokens
        if usage.reasoning_tokens is not None:
            self._reasoning = usage.reasoning_tokens

    def attempt(self, entry: Mapping[str, Any]) -> None:
        """An upstream attempt of a routed model ended (an access-log ``attempts``
        entry): a span event, so that retries and continuations show in the trace."""
        span = self.span
        if span is not None and span.is_recording():
            attributes: Attributes = {
                f"tokenwire.{key}": value
                for key, value in entry.items()
                if isinstance(value, str | int | float | bool)
            }
            span.add_event("tokenwire.upstream_attempt", attributes)

    def fail(self, err: StreamError) -> None:
        """The request or its stream failed with ``err``."""
        self._error = err

    def end(self, record: _Record) -> None:
        """End the span with ``record``'s figures, and record the histograms."""
        ended = time.perf_counter()
        span = self.span
        if span is None:  # refused before it was routed
            span = self._open(_OPERATION, {"gen_ai.operation.name": _OPERATION})
        error = self._error
        outcome = record.outcome
        if error is not None and outcome == "ok":
            outcome = f"error:{error.type}"  # an error event in the upstream's stream
        ttft = None if record.first is None else record.first - record.started
        output = record.output_tokens if record.output_tokens is not None else record.chunks
        tpot = None
        if error is None and outcome == "ok" and record.first is not None and output > 1:
            tpot = (ended - record.first) / (output - 1)
        input_tokens = record.input_tokens
        if input_tokens is not None and self._protocol == "anthropic":
            # Anthropic counts cached input apart; the conventions' input count has it all.
            input_tokens += (self._cache_read or 0) + (self._cache_creation or 0)
        if span.is_recording():
            attributes: Attributes = {
                "tokenwire.stream_id": record.id,
                "tokenwire.endpoint": record.endpoint,
                "tokenwire.outcome": outcome,
            }
            optional: dict[str, AttributeValue | None] = {
                "gen_ai.response.id": self._response_id,
                "gen_ai.response.model": self._response_model,
                "gen_ai.usage.input_tokens": input_tokens,
                "gen_ai.usage.output_tokens": record.output_tokens,
                "gen_ai.usage.cache_read.input_tokens": self._cache_read,
                "gen_ai.usage.cache_creation.input_tokens": self._cache_creation,
                "gen_ai.usage.reasoning.output_tokens": self._reasoning,
                "gen_ai.response.time_to_first_chunk": ttft,
                "gen_ai.server.time_to_first_token": ttft,
                "gen_ai.server.time_per_output_token": tpot,
            }
            attributes.update({k: v for k, v in optional.items() if v is not None})
            if self._finish_reasons:
                attributes["gen_ai.response.finish_reasons"] = tuple(self._finish_reasons)
            if error is not None:
                attributes["error.type"] = error.type
                span.set_status(Status(StatusCode.ERROR, self._describe(error)))
            span.set_attributes(attributes)
        span.end()
        if self._common:
            self._measure(record, ended, ttft, tpot, input_tokens, error)

    def _describe(self, error: StreamError) -> str:
        message = error.message[:_MAX_DESCRIPTION]
        if self._secret and self._secret in message:  # some upstreams echo the key
            message = message.replace(self._secret, "***")
        return message

    def _measure(
        self,
        record: _Record,
        ended: float,
        ttft: float | None,
        tpot: float | None,
        input_tokens: int | None,
        error: StreamError | None,
    ) -> None:
        tracing = self._tracing
        labels = self._common
        if self._response_model is not None:
            labels = {**labels, "gen_ai.response.model": self._response_model}
        if error is None and record.outcome == "ok":
            if ttft is not None:
                tracing.ttft.record(ttft, labels)
            if tpot is not None:
                tracing.tpot.record(tpot, labels)
        duration_labels = labels if error is None else {**labels, "error.type": error.type}
        tracing.duration.record(ended - record.started, duration_labels)
        if input_tokens is not None:
            tracing.tokens.record(input_tokens, {**labels, "gen_ai.token.type": "input"})
        if record.output_tokens is not None:
            tracing.tokens.record(record.output_tokens, {**labels, "gen_ai.token.type": "output"})


def _provider_name(upstream: Upstream) -> str:
    """``gen_ai.provider.name`` for ``upstream``: its wire protocol's, or the demo's."""
    if not isinstance(upstream, HTTPProvider):
        return _DEMO
    return upstream.wire.telemetry_name or upstream.wire.name
