"""OpenTelemetry tracing of the gateway (``tokenwire[otel]``): the official SDKs against a
real gateway in front of the scripted upstream, the spans caught by the OpenTelemetry
SDK's in-memory exporter and the histograms by its in-memory metric reader."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anthropic
import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tokenwire.config import ConfigError, from_mapping
from tokenwire.gateway import create_app

from .conftest import serve
from .gateway_helpers import TEXT, Upstream, gateway_config, upstream_app

pytestmark = pytest.mark.integration

UPSTREAM_KEY = "sk-upstream-secret-123"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Spans(InMemorySpanExporter):
    """The in-memory exporter, and a wait for spans to arrive: a span ends (and is
    exported) in the gateway's thread, when the reply ended there, which may be just
    after the client has read the last byte."""

    def __init__(self) -> None:
        super().__init__()
        self._arrived = threading.Condition()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = super().export(spans)
        with self._arrived:
            self._arrived.notify_all()
        return result

    def wait(self, count: int = 1, timeout: float = 10.0) -> list[ReadableSpan]:
        """The spans once ``count`` of them have ended (fails after ``timeout``)."""
        with self._arrived:
            ok = self._arrived.wait_for(lambda: len(self.get_finished_spans()) >= count, timeout)
        spans = list(self.get_finished_spans())
        assert ok, f"{len(spans)} span(s) ended, expected {count}"
        return spans


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    state = Upstream()
    with serve(upstream_app(state)) as url:
        yield state, url


@dataclass
class Traced:
    state: Upstream  # what the upstream received
    url: str  # the gateway's
    upstream_url: str
    spans: Spans
    reader: InMemoryMetricReader


@pytest.fixture
def traced(upstream: tuple[Upstream, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Traced]:
    """A gateway with tracing on, its own tracer and meter providers (not the global
    ones, which can be set only once per process)."""
    monkeypatch.setenv("TW_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    state, url = upstream
    spans = Spans()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    config = from_mapping(gateway_config(url, tracing=True))
    app = create_app(config, tracer_provider=tracer_provider, meter_provider=meter_provider)
    with serve(app) as gateway_url:
        yield Traced(state, gateway_url, url, spans, reader)
    tracer_provider.shutdown()
    meter_provider.shutdown()


def openai_client(url: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, **kw)


def anthropic_client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)


def only(spans: list[ReadableSpan]) -> tuple[ReadableSpan, dict[str, Any]]:
    assert len(spans) == 1, [s.name for s in spans]
    span = spans[0]
    return span, dict(span.attributes or {})


def upstream_traceparent(state: Upstream) -> tuple[str, str, bool]:
    """The (trace id, parent span id, sampled) of the upstream's last request."""
    _, _, headers = state.requests[-1]
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert version == "00"
    return trace_id, span_id, bool(int(flags, 16) & 1)


# --- spans --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "provider"),
    [("oa/text", "openai"), ("an/text", "anthropic")],
    ids=["passthrough", "from-anthropic"],
)
def test_streamed_request_is_one_genai_span(traced: Traced, route: str, provider: str) -> None:
    state, url, spans = traced.state, traced.url, traced.spans
    started = time.time_ns()
    raw = openai_client(url).chat.completions.with_raw_response.create(
        model=route,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=50,
        temperature=0.25,
        top_p=0.5,
        stop=["END"],
    )
    stream_id = raw.headers["x-tokenwire-stream-id"]
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(TEXT)
    span, attributes = only(spans.wait())
    assert span.name == "chat text"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert span.parent is None  # the client sent no trace context
    assert span.start_time is not None and span.end_time is not None
    assert started <= span.start_time < span.end_time <= time.time_ns()
    port = urlsplit(traced.upstream_url).port
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": "text",
        "gen_ai.request.stream": True,
        "gen_ai.request.max_tokens": 50,
        "gen_ai.request.temperature": 0.25,
        "gen_ai.request.top_p": 0.5,
        "gen_ai.request.stop_sequences": ("END",),
        "gen_ai.response.id": "up-1",
        "gen_ai.response.model": "text-upstream",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 4,
        "server.address": "127.0.0.1",
        "server.port": port,
        "tokenwire.route": route,
        "tokenwire.upstream": route.split("/")[0],
        "tokenwire.stream_id": stream_id,
        "tokenwire.endpoint": "/v1/chat/completions",
        "tokenwire.outcome": "ok",
    }
    assert {k: attributes.get(k) for k in expected} == expected
    assert "error.type" not in attributes
    duration = (span.end_time - span.start_time) / 1e9
    ttft = attributes["gen_ai.server.time_to_first_token"]
    assert attributes["gen_ai.response.time_to_first_chunk"] == ttft
    assert 0 < ttft <= duration
    # The rest of the request (after the first token) over the 3 tokens after the first.
    tpot = attributes["gen_ai.server.time_per_output_token"]
    assert 0 < tpot < duration / 3
    # The upstream request carried the span's trace context.
    trace_id, parent_id, sampled = upstream_traceparent(state)
    assert trace_id == f"{span.context.trace_id:032x}"
    assert parent_id == f"{span.context.span_id:016x}"
    assert sampled


def test_anthropic_sdk_stream_and_whole_reply(
    traced: Traced,
) -> None:
    state, url, spans = traced.state, traced.url, traced.spans
    client = anthropic_client(url)
    with client.messages.stream(
        model="oa/tools",
        max_tokens=100,
        messages=[{"role": "user", "content": "weather?"}],
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    span, attributes = only(spans.wait())
    assert span.name == "chat tools"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.max_tokens"] == 100
    assert attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert attributes["gen_ai.usage.output_tokens"] == 20
    assert attributes["tokenwire.endpoint"] == "/v1/messages"
    assert upstream_traceparent(state)[0] == f"{span.context.trace_id:032x}"
    spans.clear()

    whole = client.messages.create(
        model="an/text", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    )
    assert whole.content[0].text == "".join(TEXT)
    span, attributes = only(spans.wait())
    assert span.name == "chat text"
    assert attributes["gen_ai.request.stream"] is False
    assert attributes["gen_ai.provider.name"] == "anthropic"
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (
        11,
        4,
    )
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["gen_ai.server.time_to_first_token"] > 0
    trace_id, parent_id, _ = upstream_traceparent(state)
    assert (trace_id, parent_id) == (
        f"{span.context.trace_id:032x}",
        f"{span.context.span_id:016x}",
    )


def test_caller_trace_context_makes_the_span_a_child(
    traced: Traced,
) -> None:
    state, url, spans = traced.state, traced.url, traced.spans
    caller = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
    list(
        openai_client(url, default_headers=caller).chat.completions.create(
            model="an/text", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    span, _ = only(spans.wait())
    assert f"{span.context.trace_id:032x}" == CALLER_TRACE
    assert span.parent is not None and span.parent.is_remote
    assert f"{span.parent.span_id:016x}" == CALLER_SPAN
    # The upstream sees the same trace, with the gateway's span as its parent.
    assert upstream_traceparent(state) == (CALLER_TRACE, f"{span.context.span_id:016x}", True)


def test_unsampled_caller_records_nothing_but_propagates(traced: Traced) -> None:
    state, url, spans = traced.state, traced.url, traced.spans
    unsampled = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"}
    list(
        openai_client(url, default_headers=unsampled).chat.completions.create(
            model="oa/text", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    # The caller's decision goes on upstream, under a span id of the gateway's.
    trace_id, parent_id, sampled = upstream_traceparent(state)
    assert (trace_id, sampled) == (CALLER_TRACE, False)
    assert parent_id != CALLER_SPAN
    list(
        openai_client(url).chat.completions.create(
            model="oa/text", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    span, _ = only(spans.wait())  # only the sampled request's span is exported
    assert f"{span.context.trace_id:032x}" == upstream_traceparent(state)[0] != CALLER_TRACE


def test_upstream_error_status_is_an_error_span(
    traced: Traced,
) -> None:
    state, url, spans = traced.state, traced.url, traced.spans
    with pytest.raises(openai.RateLimitError):
        openai_client(url).chat.completions.create(
            model="oa/ratelimit", messages=[{"role": "user", "content": "x"}], stream=True
        )
    span, attributes = only(spans.wait())
    assert span.name == "chat ratelimit"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description is not None and "slow down" in span.status.description
    assert attributes["error.type"] == "rate_limit"
    assert attributes["tokenwire.outcome"] == "error:rate_limit"
    assert "gen_ai.server.time_per_output_token" not in attributes
    assert upstream_traceparent(state)[0] == f"{span.context.trace_id:032x}"


def test_error_in_the_upstream_stream_is_an_error_span(
    traced: Traced,
) -> None:
    url, spans = traced.url, traced.spans
    with pytest.raises(openai.APIError, match="upstream overloaded"):
        list(
            openai_client(url).chat.completions.create(
                model="an/midfail", messages=[{"role": "user", "content": "x"}], stream=True
            )
        )
    span, attributes = only(spans.wait())
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == "overloaded"
    assert attributes["tokenwire.outcome"] == "error:overloaded"
    assert attributes["gen_ai.server.time_to_first_token"] > 0  # "Hel" came first
    assert "gen_ai.server.time_per_output_token" not in attributes


def test_upstream_key_never_reaches_a_span(
    traced: Traced,
) -> None:
    url, spans = traced.url, traced.spans
    with (
        pytest.raises(anthropic.APIStatusError),
        anthropic_client(url).messages.stream(
            model="an/echo-key-stream", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        ) as stream,
    ):
        list(stream.text_stream)
    span, attributes = only(spans.wait())
    assert span.status.status_code is StatusCode.ERROR
    assert UPSTREAM_KEY not in str(span.status.description)
    assert UPSTREAM_KEY not in str(attributes)


def test_request_refused_before_routing_gets_a_chat_span(
    traced: Traced,
) -> None:
    state, url, spans, reader = traced.state, traced.url, traced.spans, traced.reader
    with pytest.raises(openai.NotFoundError):
        openai_client(url).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    span, attributes = only(spans.wait())
    assert span.name == "chat"
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == "not_found"
    assert "gen_ai.provider.name" not in attributes
    assert not state.requests  # nothing went upstream
    assert not _points(reader, "gen_ai.server.request.duration")  # no model was called


# --- histograms -------------------------------------------------------------------------------


def _points(reader: InMemoryMetricReader, name: str) -> list[HistogramDataPoint]:
    data = reader.get_metrics_data()
    found: list[HistogramDataPoint] = []
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend(p for p in metric.data.data_points)  # type: ignore[misc]
    return found


def test_genai_histograms(traced: Traced) -> None:
    url, spans, reader = traced.url, traced.spans, traced.reader
    list(
        openai_client(url).chat.completions.create(
            model="oa/text",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    with pytest.raises(openai.RateLimitError):
        openai_client(url).chat.completions.create(
            model="oa/ratelimit", messages=[{"role": "user", "content": "x"}], stream=True
        )
    spans.wait(2)  # the histograms are recorded as the spans end
    (ttft,) = _points(reader, "gen_ai.server.time_to_first_token")
    assert ttft.count == 1 and ttft.sum > 0
    assert ttft.explicit_bounds[:3] == (0.001, 0.005, 0.01)  # the conventions' buckets
    assert dict(ttft.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "text",
        "gen_ai.response.model": "text-upstream",
        "server.address": "127.0.0.1",
        "server.port": urlsplit(traced.upstream_url).port,
    }
    (tpot,) = _points(reader, "gen_ai.server.time_per_output_token")
    assert tpot.count == 1
    durations = _points(reader, "gen_ai.server.request.duration")
    assert sorted(str((p.attributes or {}).get("error.type")) for p in durations) == [
        "None",
        "rate_limit",
    ]
    tokens = {
        (p.attributes or {})["gen_ai.token.type"]: p.sum
        for p in _points(reader, "gen_ai.client.token.usage")
    }
    assert tokens == {"input": 11, "output": 4}


# --- off, and not installed ----------------------------------------------------------------------


def test_tracing_off_imports_no_opentelemetry() -> None:
    script = """
import sys
from tokenwire.config import from_mapping
from tokenwire.gateway import Gateway, create_app
create_app(from_mapping({}))
assert Gateway(from_mapping({})).tracing is None
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
assert not loaded, loaded
assert "tokenwire.gateway.tracing" not in sys.modules
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_tracing_needs_opentelemetry_installed() -> None:
    # OpenTelemetry hidden: an import of it fails as if it were not installed.
    script = """
import sys
for name in ("opentelemetry", "opentelemetry.trace"):
    sys.modules[name] = None
from tokenwire.config import Config, ConfigError, GatewayConfig, from_mapping
from tokenwire.gateway import Gateway
for build in (
    lambda: from_mapping({"gateway": {"tracing": True}}),
    lambda: Gateway(Config({}, {}, gateway=GatewayConfig(tracing=True))),
):
    try:
        build()
    except ConfigError as exc:
        assert "pip install 'tokenwire[otel]'" in str(exc), exc
    else:
        raise AssertionError("no ConfigError")
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_tracing_setting_is_validated() -> None:
    assert from_mapping({}).gateway.tracing is False
    assert from_mapping({"gateway": {"tracing": True}}).gateway.tracing is True
    with pytest.raises(ConfigError, match="tracing must be true or false"):
        from_mapping({"gateway": {"tracing": "yes"}})


def test_attempts_of_a_routed_model_are_span_events(
    upstream: tuple[Upstream, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A route whose first deployment answers 429: one span for the request, an event
    per upstream attempt, and the reply from the second deployment."""
    monkeypatch.setenv("TW_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    _, url = upstream
    data = gateway_config(url, tracing=True)
    data["models"]["routed"] = {
        "deployments": [
            {"provider": "oa", "model": "ratelimit"},
            {"provider": "an", "model": "text"},
        ]
    }
    spans = Spans()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    app = create_app(from_mapping(data), tracer_provider=tracer_provider)
    with serve(app) as gateway_url:
        stream = openai_client(gateway_url).chat.completions.create(
            model="routed", messages=[{"role": "user", "content": "x"}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        span, attributes = only(spans.wait())
    tracer_provider.shutdown()
    assert text == "".join(TEXT)
    assert span.status.status_code is not StatusCode.ERROR
    assert attributes["tokenwire.outcome"] == "ok"
    events = [(e.name, dict(e.attributes or {})) for e in span.events]
    assert [(name, a["tokenwire.deployment"], a["tokenwire.outcome"]) for name, a in events] == [
        ("tokenwire.upstream_attempt", "oa/ratelimit", "error:rate_limit"),
        ("tokenwire.upstream_attempt", "an/text", "ok"),
    ]
    assert events[0][1]["tokenwire.status"] == 429
