"""The gateway: OpenAI- and Anthropic-compatible endpoints in front of any provider.

A request in either protocol is read into a neutral :class:`~tokenwire.llm.requests.
ChatRequest`, routed by model to a provider (``[models]`` or ``PROVIDER/MODEL``), and the
upstream's stream is relayed chunk by chunk:

- same protocol on both sides: each upstream event is passed through as it came (only
  the SSE framing is rewritten, the JSON is not touched);
- different protocols: upstream events are decoded to deltas and encoded in the
  client's protocol as they arrive (text, tool calls with argument fragments,
  reasoning, usage, finish reasons, errors); nothing is buffered.

Failures before the upstream answered get the HTTP status and error body of the
client's protocol; failures after it, a protocol-correct error event. An upstream
Anthropic stream cut off before ``message_stop`` gets an error event too. When the
client goes away, the relay is closed, which closes the upstream response at once.

With ``[gateway] resume`` set (``"memory"`` or a Redis URL), streams are resumable
(:mod:`tokenwire.resume`) on ``/v1/chat/completions``, ``/v1/messages`` and
``/chat/stream``: every event has an id ``<stream id>-<seq>`` (the stream id is in the
``x-tokenwire-stream-id`` header), a request carrying ``Last-Event-ID`` (or
``?last_event_id=``) replays what followed and goes on live, from any gateway process
sharing the log, and a reply keeps being generated for ``resume_grace`` seconds after
its client left. ``DELETE /v1/streams/{id}`` stops a stream wherever it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from importlib import resources
from typing import Any, Literal

import orjson
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp

from tokenwire.agent import Agent
from tokenwire.agent.config import Config, ConfigError, Timeouts, load_config
from tokenwire.control import guard
from tokenwire.errors import StreamError
from tokenwire.gateway.metrics import Counter, Gauge, Histogram, Registry
from tokenwire.gateway.upstream import Item, Upstream, make_upstream
from tokenwire.llm.accumulate import MessageBuilder, error_from_delta
from tokenwire.llm.anthropic_encode import AnthropicEventEncoder
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
from tokenwire.llm.openai_encode import OpenAIChunkEncoder
from tokenwire.llm.requests import ChatRequest, RequestError, from_anthropic, from_openai
from tokenwire.llm.responses import anthropic_message, openai_completion
from tokenwire.resume import LogUnavailable, Producer, ResumableStreams, last_event_id
from tokenwire.server import EventStreamResponse
from tokenwire.sse import ServerSentEvent

__all__ = ["Gateway", "create_app"]

Protocol = Literal["openai", "anthropic"]
access_log = logging.getLogger("tokenwire.gateway.access")

_CONTENT = (TextDelta, ToolCallDelta, ReasoningDelta, RefusalDelta)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_RETRY_MS = 1000  # the reconnection delay resumable browser streams ask for
_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)


class GatewayMetrics:
    """What ``/metrics`` exposes."""

    def __init__(self) -> None:
        self.registry = Registry()
        add = self.registry.add
        self.requests = add(
            Counter(
                "tokenwire_requests_total",
                "Requests by endpoint, model and HTTP status.",
                ("endpoint", "model", "status"),
            )
        )
        self.active = add(Gauge("tokenwire_active_streams", "Streams being relayed now."))
        self.ttft = add(
            Histogram(
                "tokenwire_time_to_first_token_seconds",
                "From request to the first content chunk.",
                _LATENCY_BUCKETS,
                ("model", "upstream"),
            )
        )
        self.gap = add(
            Histogram(
                "tokenwire_inter_token_seconds",
                "Time between content chunks.",
                _GAP_BUCKETS,
                ("model", "upstream"),
            )
        )
        self.tokens = add(
            Counter(
                "tokenwire_tokens_total",
                "Tokens by direction (input/output), model and upstream.",
                ("model", "upstream", "direction"),
            )
        )
        self.disconnects = add(
            Counter(
                "tokenwire_client_disconnects_total",
                "Streams whose client left before the end.",
                ("model", "upstream"),
            )
        )
        self.errors = add(
            Counter(
                "tokenwire_errors_total",
                "Failed requests and streams by error category and upstream.",
                ("category", "upstream"),
            )
        )


class _Record:
    """One request's figures, for the metrics and its access-log line."""

    __slots__ = (
        "chunks",
        "endpoint",
        "first",
        "id",
        "input_tokens",
        "last",
        "metrics",
        "model",
        "outcome",
        "output_tokens",
        "started",
        "status",
        "upstream",
    )

    def __init__(self, metrics: GatewayMetrics, endpoint: str) -> None:
        self.metrics = metrics
        self.endpoint = endpoint
        self.id = secrets.token_hex(8)
        self.started = time.perf_counter()
        self.model = "-"
        self.upstream = "-"
        self.status = 200
        self.first: float | None = None
        self.last = 0.0
        self.chunks = 0
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.outcome = "ok"

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
            elif kind is UsageDelta or kind is MessageStart:
                usage = delta.usage  # type: ignore[union-attr]
                if usage is not None:
                    if usage.input_tokens is not None:
                        self.input_tokens = usage.input_tokens
                    if usage.output_tokens is not None:
                        self.output_tokens = usage.output_tokens

    def fail(self, err: StreamError, status: int | None = None) -> None:
        self.outcome = f"error:{err.type}"
        if status is not None:
            self.status = status
        self.metrics.errors.inc(err.type, self.upstream)

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
            access_log.info(orjson.dumps(line).decode())


class _Writer:
    """Upstream items -> bytes in the client's protocol (pass-through or translation)."""

    __slots__ = ("_encoder", "_protocol")

    def __init__(self, protocol: Protocol, upstream: Upstream, include_usage: bool) -> None:
        self._protocol = protocol
        self._encoder: OpenAIChunkEncoder | AnthropicEventEncoder | None
        error_provider = upstream.protocol or protocol
        if upstream.protocol == protocol:
            self._encoder = None
        elif protocol == "openai":
            self._encoder = OpenAIChunkEncoder(
                include_usage=include_usage, error_provider=error_provider
            )
        else:
            self._encoder = AnthropicEventEncoder(error_provider=error_provider)

    def write(self, raw: bytes | None, deltas: list[Delta]) -> bytes:
        encoder = self._encoder
        if encoder is None:
            return raw or b""
        if len(deltas) == 1:
            return encoder.encode(deltas[0])
        return b"".join([encoder.encode(d) for d in deltas])

    def done(self) -> bytes:
        encoder = self._encoder
        if encoder is None or encoder.ended:
            return b""
        return encoder.done()

    def error(self, err: StreamError) -> bytes:
        encoder = self._encoder
        if encoder is None:
            return err.to_sse_event(self._protocol)
        return b"" if encoder.ended else encoder.error(err)


class Gateway:
    """The gateway's state (configuration, upstreams, agents, metrics) and handlers."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = GatewayMetrics()
        self._keys = config.gateway.api_keys()
        self._upstreams: dict[str, Upstream] = {}
        self._agents: dict[str, Agent] = {}
        self._page: bytes | None = None
        settings = config.gateway
        self.streams: ResumableStreams | None = None
        if settings.resume is not None:
            self.streams = ResumableStreams(
                settings.resume,
                grace=settings.resume_grace,
                ping=settings.ping,
                expiry=settings.resume_expiry,
            )

    # -- plumbing --------------------------------------------------------------------

    def _authenticate(self, request: Request, *, allow_query: bool = False) -> None:
        if not self._keys:
            return
        headers = request.headers
        key = None
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
        key = key or headers.get("x-api-key")
        if key is None and allow_query:
            key = request.query_params.get("api_key")
        if key is None or not any(hmac.compare_digest(key, k) for k in self._keys):
            raise StreamError(
                "authentication",
                "invalid or missing API key (send Authorization: Bearer KEY or x-api-key: KEY)",
                status=401,
            )

    async def _read_json(self, request: Request) -> Any:
        limit = self.config.gateway.max_request_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        try:
            return orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as exc:
            raise StreamError(
                "invalid_request", f"request body is not valid JSON: {exc}", status=400
            ) from None

    def _upstream(self, name: str) -> Upstream:
        upstream = self._upstreams.get(name)
        if upstream is None:
            try:
                upstream = make_upstream(self.config.providers[name])
            except ConfigError as exc:
                # A server-side misconfiguration (e.g. the key variable is unset).
                raise StreamError(
                    "api_error", f"gateway configuration: {exc}", status=500
                ) from None
            self._upstreams[name] = upstream
        return upstream

    def _route(self, model: str) -> tuple[Upstream, str, Timeouts]:
        try:
            provider, upstream_model, timeouts = self.config.route(model)
        except ConfigError as exc:
            raise StreamError("not_found", str(exc), status=404, param="model") from None
        return self._upstream(provider.name), upstream_model, timeouts

    @staticmethod
    def _error_response(err: StreamError, protocol: Protocol | Literal["generic"]) -> Response:
        return Response(
            err.to_response_body(protocol),
            status_code=err.http_status(protocol),
            headers=dict(err.response_headers()),
        )

    async def aclose(self) -> None:
        if self.streams is not None:
            await self.streams.aclose()
        for upstream in self._upstreams.values():
            await upstream.aclose()

    # -- resumable streams ------------------------------------------------------------------

    async def _producer(
        self, stream_id: str, protocol: Protocol | Literal["generic"]
    ) -> Producer | None:
        """A resumable stream to produce into, or None: resume is off, or the log is
        unreachable and ``resume_fallback`` is on. Raises LogUnavailable otherwise."""
        streams = self.streams
        if streams is None:
            return None
        try:
            return await streams.create(stream_id, protocol=protocol)
        except LogUnavailable:
            if self.config.gateway.resume_fallback:
                return None
            raise

    async def _resume(
        self, request: Request, event_id: str, protocol: Protocol | Literal["generic"]
    ) -> Response:
        """Answer a reconnect: the events after ``event_id``, then the live stream."""
        record = _Record(self.metrics, request.scope["path"])
        record.outcome = "resume"
        assert self.streams is not None
        try:
            self._authenticate(request, allow_query=protocol == "generic")
            response = await self.streams.resume(
                event_id, protocol=protocol, retry=_RETRY_MS if protocol == "generic" else None
            )
        except StreamError as err:
            record.fail(err, err.http_status(protocol))
            record.finish()
            return self._error_response(err, protocol)
        record.status = response.status_code
        record.finish()
        return response

    async def cancel_stream(self, request: Request) -> Response:
        """``DELETE /v1/streams/{id}``: stop a resumable stream wherever it runs."""
        protocol: Protocol = "anthropic" if _is_anthropic(request) else "openai"
        stream_id = request.path_params["stream_id"]
        try:
            self._authenticate(request)
            if self.streams is None:
                raise StreamError(
                    "not_found",
                    "resumable streams are off on this gateway ([gateway] resume)",
                    status=404,
                )
            try:
                status = await self.streams.cancel(stream_id)
            except ValueError as exc:
                raise StreamError("invalid_request", str(exc), status=400) from None
        except StreamError as err:
            return self._error_response(err, protocol)
        body = {"id": stream_id, "object": "stream", "status": status}
        return Response(orjson.dumps(body), media_type="application/json")

    # -- the two chat endpoints ----------------------------------------------------------

    async def openai_chat(self, request: Request) -> Response:
        return await self._chat(request, "openai")

    async def anthropic_messages(self, request: Request) -> Response:
        return await self._chat(request, "anthropic")

    async def _chat(self, request: Request, protocol: Protocol) -> Response:
        if self.streams is not None:
            resume_from = last_event_id(request)
            if resume_from is not None:
                return await self._resume(request, resume_from, protocol)
        record = _Record(self.metrics, request.scope["path"])
        producer: Producer | None = None
        try:
            self._authenticate(request)
            body = await self._read_json(request)
            try:
                chat = from_openai(body) if protocol == "openai" else from_anthropic(body)
            except RequestError as exc:
                raise StreamError(
                    "invalid_request", str(exc), status=400, param=exc.param
                ) from None
            record.model = chat.model
            upstream, upstream_model, timeouts = self._route(chat.model)
            record.upstream = upstream.name
            passthrough = upstream.protocol == protocol
            outgoing = replace(
                chat,
                model=upstream_model,
                stream=True,
                # Translation needs usage from the upstream; pass-through asks as the client did.
                include_usage=chat.include_usage or not passthrough or not chat.stream,
            )
            if chat.stream:
                producer = await self._producer(record.id, protocol)
            items = await upstream.open(outgoing, raw=passthrough and chat.stream)
        except StreamError as err:
            if producer is not None:
                await producer.discard()
            status = err.http_status(protocol)
            record.fail(err, status)
            record.finish()
            return self._error_response(err, protocol)
        if not chat.stream:
            return await self._whole(items, chat, protocol, upstream, timeouts, record)
        writer = _Writer(protocol, upstream, include_usage=chat.include_usage)
        relay = self._relay(items, writer, timeouts, record)
        if producer is not None:
            assert self.streams is not None
            producer.start(relay)
            return self.streams.response(producer.reader(0), producer.id, protocol=protocol)
        return EventStreamResponse(
            relay,
            ping=self.config.gateway.ping,
            headers={"x-tokenwire-stream-id": record.id},
        )

    async def _relay(
        self,
        items: AsyncIterator[Item],
        writer: _Writer,
        timeouts: Timeouts,
        record: _Record,
    ) -> AsyncGenerator[bytes, None]:
        self.metrics.active.inc()
        try:
            async with contextlib.aclosing(_guarded(items, timeouts)) as guarded:
                async for raw, deltas in guarded:
                    record.observe(deltas)
                    out = writer.write(raw, deltas)
                    if out:
                        yield out
            tail = writer.done()
            if tail:
                yield tail
        except StreamError as err:
            record.fail(err)
            out = writer.error(err)
            if out:
                yield out
        except (GeneratorExit, asyncio.CancelledError):
            record.outcome = "disconnect"
            raise
        finally:
            self.metrics.active.dec()
            record.finish()

    async def _whole(
        self,
        items: AsyncIterator[Item],
        chat: ChatRequest,
        protocol: Protocol,
        upstream: Upstream,
        timeouts: Timeouts,
        record: _Record,
    ) -> Response:
        builder = MessageBuilder()
        try:
            async with contextlib.aclosing(_guarded(items, timeouts)) as guarded:
                async for _, deltas in guarded:
                    record.observe(deltas)
                    for delta in deltas:
                        if type(delta) is ErrorDelta:
                            raise error_from_delta(delta, upstream.protocol)
                        builder.feed(delta)
        except StreamError as err:
            record.fail(err, err.http_status(protocol))
            record.finish()
            return self._error_response(err, protocol)
        message = builder.message
        if protocol == "openai":
            body = openai_completion(
                message, id=message.id or f"chatcmpl-{record.id}", model=chat.model
            )
        else:
            body = anthropic_message(message, id=message.id or f"msg_{record.id}", model=chat.model)
        record.finish()
        return Response(orjson.dumps(body), media_type="application/json")

    # -- the rest ------------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        try:
            self._authenticate(request)
        except StreamError as err:
            return self._error_response(err, "anthropic" if _is_anthropic(request) else "openai")
        names = sorted(self.config.models)
        data: dict[str, Any]
        if _is_anthropic(request):
            data = {
                "data": [
                    {
                        "type": "model",
                        "id": name,
                        "display_name": name,
                        "created_at": "1970-01-01T00:00:00Z",
                    }
                    for name in names
                ],
                "has_more": False,
                "first_id": names[0] if names else None,
                "last_id": names[-1] if names else None,
            }
        else:
            data = {
                "object": "list",
                "data": [
                    {
                        "id": name,
                        "object": "model",
                        "created": 0,
                        "owned_by": self.config.models[name].provider,
                    }
                    for name in names
                ],
            }
        return Response(orjson.dumps(data), media_type="application/json")

    async def agents(self, request: Request) -> Response:
        data = [
            {"id": name, "provider": spec.provider, "model": spec.model}
            for name, spec in sorted(self.config.agents.items())
        ]
        return Response(orjson.dumps({"data": data}), media_type="application/json")

    def _agent(self, name: str) -> Agent:
        agent = self._agents.get(name)
        if agent is None:
            try:
                agent = self.config.agent(name)
            except ConfigError as exc:
                if name not in self.config.agents:
                    raise StreamError("not_found", str(exc), status=404, param="agent") from None
                raise StreamError("api_error", str(exc), status=500) from None
            self._agents[name] = agent
        # A fresh history per request; the provider (and its pool) is shared.
        return agent.new_conversation()

    async def chat_stream(self, request: Request) -> Response:
        """The seed's browser format: ``data: {"chunk": ...}`` events, then ``[DONE]``."""
        if self.streams is not None:
            resume_from = last_event_id(request)
            if resume_from is not None:
                return await self._resume(request, resume_from, "generic")
        record = _Record(self.metrics, "/chat/stream")
        params = request.query_params
        producer: Producer | None = None
        try:
            self._authenticate(request, allow_query=True)
            message = params.get("message", "")
            if not message.strip():
                raise StreamError(
                    "invalid_request", "the message parameter is required", status=400
                )
            record.model = params.get("agent") or "assistant"
            agent = self._agent(record.model)
            record.upstream = agent.provider.name
            producer = await self._producer(record.id, "generic")
        except StreamError as err:
            record.fail(err, err.http_status())
            record.finish()
            return self._error_response(err, "generic")
        chunks = self._chunks(agent, message, record)
        if producer is not None:
            assert self.streams is not None
            producer.start(chunks)
            # A short reconnection delay: the browser resumes soon after a drop.
            return self.streams.response(
                producer.reader(0), producer.id, protocol="generic", retry=_RETRY_MS
            )
        return EventStreamResponse(chunks, ping=self.config.gateway.ping)

    async def _chunks(
        self, agent: Agent, message: str, record: _Record
    ) -> AsyncGenerator[Any, None]:
        self.metrics.active.inc()
        try:
            async with agent.stream(message) as stream:
                async for delta in stream:
                    if type(delta) is TextDelta:
                        record.content()
                        yield {"chunk": delta.text}
                record.observe([UsageDelta(stream.message.usage)])
            yield "[DONE]"
        except StreamError as err:
            record.fail(err)
            yield ServerSentEvent(orjson.dumps(err.error_object()).decode(), event="error")
        except (GeneratorExit, asyncio.CancelledError):
            record.outcome = "disconnect"
            raise
        finally:
            self.metrics.active.dec()
            record.finish()

    async def page(self, request: Request) -> Response:
        if self._page is None:
            self._page = (resources.files("tokenwire.gateway") / "chat.html").read_bytes()
        return HTMLResponse(self._page)

    async def healthz(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(
            self.metrics.registry.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )


def _guarded(items: AsyncIterator[Item], timeouts: Timeouts) -> AsyncGenerator[Item, None]:
    return guard(
        items,
        timeout=timeouts.total,
        first_chunk_timeout=timeouts.first_token,
        idle_timeout=timeouts.idle,
    )


def _too_large(limit: int) -> StreamError:
    return StreamError("invalid_request", f"request body is larger than {limit} bytes", status=413)


def _is_anthropic(request: Request) -> bool:
    return "anthropic-version" in request.headers


def create_app(config: Config | None = None) -> ASGIApp:
    """The gateway as an ASGI app. With no ``config``, :func:`~tokenwire.agent.config.
    load_config` reads ``TOKENWIRE_CONFIG`` / ``./tokenwire.toml`` (or the built-in
    defaults: the ``demo`` model and the ``assistant`` agent).

    A bare Starlette router, without the error-handling middleware of a ``Starlette``
    application: those wrap every ``send`` of every chunk, and errors here are answered
    by the handlers themselves (uvicorn answers anything left with a 500)."""
    gateway = Gateway(config if config is not None else load_config())
    routes = [
        Route("/v1/chat/completions", gateway.openai_chat, methods=["POST"]),
        Route("/v1/messages", gateway.anthropic_messages, methods=["POST"]),
        Route("/v1/models", gateway.models, methods=["GET"]),
        Route("/v1/agents", gateway.agents, methods=["GET"]),
        Route("/v1/streams/{stream_id}", gateway.cancel_stream, methods=["DELETE"]),
        Route("/chat/stream", gateway.chat_stream, methods=["GET"]),
        Route("/", gateway.page, methods=["GET"]),
        Route("/healthz", gateway.healthz, methods=["GET"]),
        Route("/metrics", gateway.metrics_endpoint, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        # Everything allocated at start-up (modules, configuration) lives as long as the
        # process: keep it out of the collector's way, so that a full collection during
        # a burst of requests does not walk it (tens of ms added to time to first token).
        gc.collect()
        gc.freeze()
        yield
        await gateway.aclose()

    app: ASGIApp = Router(routes=routes, lifespan=lifespan)
    if gateway.config.gateway.cors_origins:
        app = CORSMiddleware(
            app,
            allow_origins=list(gateway.config.gateway.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=["x-tokenwire-stream-id"],
        )
    return app
