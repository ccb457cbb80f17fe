"""The gateway: an endpoint for every wire protocol, in front of any provider.

Every registered :class:`~tokenwire.llm.protocol.WireProtocol` (OpenAI chat completions,
Anthropic Messages, the OpenAI Responses API, Gemini, ...) gets its endpoints (and its
model list, where it has a path of its own), authenticated where its clients put their
key. A request in any
of them is read into a neutral :class:`~tokenwire.llm.requests.ChatRequest`, routed by
model to a provider (``[models]`` or ``PROVIDER/MODEL``), and the upstream's stream is
relayed chunk by chunk:

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
(:mod:`tokenwire.resume`) on the endpoints of the protocols whose clients read event ids
(``WireProtocol.resumable``: ``/v1/chat/completions``, ``/v1/messages``,
``/v1/responses``) and on ``/chat/stream``: every event has an id ``<stream id>-<seq>``
(the stream id is in the ``x-tokenwire-stream-id`` header), a request carrying
``Last-Event-ID`` (or ``?last_event_id=``) replays what followed and goes on live, from
any gateway process sharing the log, and a reply keeps being generated for
``resume_grace`` seconds after its client left. ``DELETE /v1/streams/{id}`` stops a
stream wherever it runs.

This module holds :class:`Gateway` and :func:`create_app`; the metrics and access log
are in :mod:`~tokenwire.gateway.records`, the relay's writer and deadlines in
:mod:`~tokenwire.gateway.relay`, stored replies in :mod:`~tokenwire.gateway.replies`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Router
from starlette.types import ASGIApp

from tokenwire.agent import Agent
from tokenwire.config import TRACING_NEEDS_OTEL, Config, ConfigError, Timeouts, load_config
from tokenwire.errors import DropConnection, StreamError, public_error
from tokenwire.gateway.records import GatewayMetrics, _Record
from tokenwire.gateway.relay import (
    Upstream,
    _bounded,
    _ClientLeft,
    _guarded,
    _Late,
    _open,
    _read_body,
    _scrub,
    _too_large,
    _Writer,
)
from tokenwire.gateway.replies import StoredReplies
from tokenwire.gateway.routing import STATES, Attempts, ModelRouter, routed_items
from tokenwire.gateway.unrouted import GatewayRoute, not_found, protocol_of_headers
from tokenwire.llm.accumulate import MessageBuilder, error_from_delta
from tokenwire.llm.model import ErrorDelta, TextDelta, UsageDelta
from tokenwire.llm.protocol import WireProtocol, bearer_or_api_key, get_protocol, protocols
from tokenwire.llm.requests import ChatRequest, RequestError, dropped_fields, refused_fields
from tokenwire.providers import Item, make_provider
from tokenwire.resume import LogUnavailable, Producer, ResumableStreams, last_event_id, owner_of
from tokenwire.server import EventStreamResponse
from tokenwire.sse import ServerSentEvent

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from tokenwire.gateway.tracing import Tracing

__all__ = ["Gateway", "create_app"]

_RETRY_MS = 1000  # the reconnection delay resumable browser streams ask for
_MAX_LABEL = 100  # characters of a client-chosen name kept in metrics and logs
_GONE = 499  # the status logged for a request whose client left before the reply
DROPPED_HEADER = "x-tokenwire-dropped-params"


class Gateway(StoredReplies):
    """The gateway's state (configuration, upstreams, agents, metrics) and handlers.

    Tracing (:mod:`~tokenwire.gateway.tracing`) is on with ``[gateway] tracing`` or a
    ``tracer_provider`` (else the global one is used); ``meter_provider`` is for its
    histograms (default: the global one)."""

    def __init__(
        self,
        config: Config,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.config = config
        self.metrics = GatewayMetrics()
        # Compared as bytes: any header value (even non-ASCII) can be checked.
        self._keys = [k.encode("utf-8", "surrogateescape") for k in config.gateway.api_keys()]
        self._upstreams: dict[str, Upstream] = {}
        self._routers: dict[str, ModelRouter] = {}
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
                max_bytes=settings.resume_memory_bytes,
                connect_timeout=settings.resume_timeout,
                read_timeout=settings.resume_timeout,
                stall=settings.resume_stall,
                write_give_up=settings.resume_write_retry,
                expose_errors=settings.expose_errors,
            )
        self.tracing: Tracing | None = None
        if settings.tracing or tracer_provider is not None:
            self.tracing = _tracing(tracer_provider, meter_provider)

    # -- plumbing --------------------------------------------------------------------

    def _authenticate(
        self, request: Request, wire: WireProtocol | None = None, *, allow_query: bool = False
    ) -> str:
        """Check the client's key; returns the owner its resumable streams are bound
        to (``""`` without authentication). On ``wire``'s endpoints the key is where
        that protocol's clients send it (:meth:`WireProtocol.client_key`); on the
        gateway's own, ``Authorization: Bearer`` or ``x-api-key``, and with
        ``allow_query`` (browser endpoints: an ``EventSource`` sends no headers)
        ``?api_key=`` too."""
        if not self._keys:
            return ""
        headers = request.headers
        if wire is not None:
            key = wire.client_key(headers, request.query_params)
        else:
            key = bearer_or_api_key(headers)
        if key is None and allow_query:
            key = request.query_params.get("api_key")
        given = key.encode("utf-8", "surrogateescape") if key is not None else None
        if given is None or not any(hmac.compare_digest(given, k) for k in self._keys):
            raise StreamError(
                "authentication",
                "invalid or missing API key (send Authorization: Bearer KEY or x-api-key: KEY)",
                status=401,
            )
        return owner_of(given)

    async def _read_json(self, request: Request) -> Any:
        """The request body as JSON: at most ``max_request_bytes`` (413), within
        ``request_timeout`` (408). Raises _ClientLeft if the client goes away."""
        settings = self.config.gateway
        limit = settings.max_request_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise _too_large(limit)
        deadline = asyncio.get_running_loop().time() + settings.request_timeout
        try:
            body = await _bounded(_read_body(request.receive, limit), deadline, None)
        except _Late:
            raise StreamError(
                "timeout",
                f"the request body did not arrive within {settings.request_timeout:g} s",
                status=408,
                code="request_timeout",
            ) from None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise StreamError(
                "invalid_request", f"request body is not valid JSON: {exc}", status=400
            ) from None

    def _upstream(self, name: str) -> Upstream:
        upstream = self._upstreams.get(name)
        if upstream is None:
            settings = self.config.gateway
            try:
                upstream = make_provider(
                    self.config.providers[name],
                    max_reply_bytes=settings.max_reply_bytes,
                    max_connections=settings.max_connections,
                )
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

    def _router(self, model: str) -> ModelRouter | None:
        """The router of ``model``'s route if it has several deployments, retries or
        continuation (plain routes go straight to their upstream)."""
        router = self._routers.get(model)
        if router is None:
            route = self.config.models.get(model)
            if route is None or not route.routed:
                return None
            router = self._routers[model] = ModelRouter(route, self.config)
        return router

    def _routed_upstreams(self, router: ModelRouter) -> list[tuple[str, Upstream]]:
        """The upstream model names and upstreams of ``router``'s deployments that can
        be built (one whose key variable is unset fails its attempts instead)."""
        found = []
        for deployed in router.deployments:
            try:
                found.append((deployed.model, self._upstream(deployed.provider)))
            except StreamError:
                continue
        if not found:
            raise StreamError(
                "api_error",
                f"gateway configuration: no deployment of model {router.name!r} can be used",
                status=500,
            )
        return found

    def _told(self, exc: BaseException) -> StreamError:
        """What the client is told of ``exc`` (internal text hidden behind a reference
        id unless ``[gateway] expose_errors``)."""
        return public_error(exc, expose=self.config.gateway.expose_errors)

    def _error_response(
        self, exc: BaseException, protocol: str, secret: bytes | None = None
    ) -> Response:
        err = self._told(exc)
        return Response(
            _scrub(err.to_response_body(protocol), secret),
            status_code=err.http_status(protocol),
            headers=dict(err.response_headers()),
        )

    async def aclose(self) -> None:
        if self.streams is not None:
            await self.streams.aclose()
        for upstream in self._upstreams.values():
            await upstream.aclose()

    # -- resumable streams ------------------------------------------------------------------

    async def _producer(self, stream_id: str, protocol: str, owner: str) -> Producer | None:
        """A resumable stream to produce into, or None: resume is off, or the log is
        unreachable and ``resume_fallback`` is on. Raises LogUnavailable otherwise."""
        streams = self.streams
        if streams is None:
            return None
        try:
            return await streams.create(stream_id, protocol=protocol, owner=owner)
        except LogUnavailable:
            if self.config.gateway.resume_fallback:
                return None
            raise

    async def _resume(self, request: Request, event_id: str, protocol: str) -> Response:
        """Answer a reconnect: the events after ``event_id``, then the live stream."""
        record = _Record(self.metrics, request.scope["path"])
        record.outcome = "resume"
        assert self.streams is not None
        try:
            if protocol == "generic":
                owner = self._authenticate(request, allow_query=True)
            else:
                owner = self._authenticate(request, get_protocol(protocol))
            response = await self.streams.resume(
                event_id,
                protocol=protocol,
                owner=owner,
                retry=_RETRY_MS if protocol == "generic" else None,
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
        wire = protocol_of_headers(request.headers)
        protocol = wire.name
        stream_id = request.path_params["stream_id"]
        try:
            owner = self._authenticate(request, wire)
            if self.streams is None:
                raise StreamError(
                    "not_found",
                    "resumable streams are off on this gateway ([gateway] resume)",
                    status=404,
                )
            try:
                status = await self.streams.cancel(stream_id, owner=owner)
            except ValueError as exc:
                raise StreamError("invalid_request", str(exc), status=400) from None
        except StreamError as err:
            return self._error_response(err, protocol)
        body = {"id": stream_id, "object": "stream", "status": status}
        return Response(orjson.dumps(body), media_type="application/json")

    # -- the chat endpoints: one handler per wire protocol -------------------------------

    def handler(self, wire: WireProtocol) -> Any:
        """The endpoint handler for ``wire``'s requests."""

        async def endpoint(request: Request) -> Response:
            return await self._chat(request, wire)

        endpoint.__name__ = f"{wire.name}_endpoint"
        return endpoint

    async def _chat(self, request: Request, wire: WireProtocol) -> Response:
        protocol = wire.name
        # Only protocols whose clients read event ids have resumable streams.
        streams = self.streams if wire.resumable else None
        if streams is not None:
            resume_from = last_event_id(request)
            if resume_from is not None:
                return await self._resume(request, resume_from, protocol)
        # The route's first-token and total deadlines count from here.
        accepted = asyncio.get_running_loop().time()
        record = _Record(self.metrics, request.scope["path"])
        if self.tracing is not None:
            self.tracing.start(record, request.headers)
        producer: Producer | None = None
        upstream: Upstream | None = None
        try:
            owner = self._authenticate(request, wire)
            body = await self._read_json(request)
            try:
                chat = wire.parse_request(body, request.path_params)
            except RequestError as exc:
                raise StreamError(
                    "invalid_request", str(exc), status=400, param=exc.param
                ) from None
            field = wire.previous_reply_field
            if field is not None and isinstance(body, dict) and body.get(field) is not None:
                chat = await self._continued(chat, wire, body[field], owner)
            router = self._router(chat.model)
            if router is None:
                upstream, upstream_model, timeouts = self._route(chat.model)
                passthrough = upstream.protocol == protocol
                dropped = () if passthrough else _translated(chat, upstream)
            else:
                # Checked against every deployment: any of them may serve the request.
                candidates = self._routed_upstreams(router)
                upstream_model, upstream = candidates[0]
                timeouts = router.timeouts
                translate = router.route.continue_on_failure
                passthrough = not translate and upstream.protocol == protocol
                lost: dict[str, None] = {}
                for _, candidate in candidates:
                    if translate or candidate.protocol != protocol:
                        lost.update(dict.fromkeys(_translated(chat, candidate)))
                dropped = list(lost)
            # Only names that were routed become labels: a client cannot grow them.
            record.model = chat.model[:_MAX_LABEL]
            record.upstream = upstream.name
            record.protocol = upstream.protocol
            if record.trace is not None:
                record.upstream_headers = record.trace.route(chat, upstream_model, upstream)
            self._check_output_limit(chat, body, wire)
            headers = {"x-tokenwire-stream-id": record.id}
            if dropped:
                headers[DROPPED_HEADER] = ", ".join(dropped)
            outgoing = replace(
                chat,
                model=upstream_model,
                stream=True,
                # Translation needs usage from the upstream; pass-through asks as the client did.
                include_usage=chat.include_usage or not passthrough or not chat.stream,
            )
            attempts: Attempts | None = None
            if router is not None:
                attempts = Attempts(
                    router,
                    self._upstream,
                    protocol=protocol,
                    translate=translate or not chat.stream,  # a whole reply: no bytes
                    accepted=accepted,
                    record=record,
                    metrics=self.metrics,
                    receive=request.receive if chat.stream else None,
                )
            if not chat.stream:
                whole = self._whole(
                    upstream, outgoing, chat, wire, timeouts, accepted, record, attempts
                )
                response = await _bounded(whole, None, request.receive)
                if dropped:
                    response.headers[DROPPED_HEADER] = headers[DROPPED_HEADER]
                return response
            if streams is not None:
                producer = await self._producer(record.id, protocol, owner)
            reply_id: str | None = None
            if producer is not None and wire.reply_path is not None:
                reply_id = wire.id_prefix + producer.id
                await self._keep_request(producer.id, chat)
            if attempts is None:
                opened = await _open(
                    upstream,
                    outgoing,
                    passthrough,
                    timeouts,
                    accepted,
                    request.receive,
                    record.upstream_headers,
                )
                items = _guarded(opened, timeouts, accepted)
            else:
                first = await attempts.open(outgoing)
                attempts.receive = None  # the response watches the client from now on
                upstream, passthrough = first.upstream, first.raw
                items = routed_items(attempts, first, outgoing)
                # A response that never starts its body never runs the relay: the
                # attempt is released when the relay is dropped.
                weakref.finalize(items, attempts.abandon)
        except _ClientLeft:
            if producer is not None:
                await producer.discard()
            record.outcome = "disconnect"
            record.status = _GONE
            record.finish()
            return Response(status_code=_GONE)  # nobody reads it
        except Exception as exc:
            if producer is not None:
                await producer.discard()
            if type(exc) is DropConnection:
                raise
            err = self._told(exc)  # a bug here is a 500 in the caller's protocol
            status = err.http_status(protocol)
            record.fail(err, status)
            record.finish()
            return self._error_response(err, protocol, upstream.secret if upstream else None)
        except BaseException:
            if producer is not None:
                await producer.discard()
            raise
        if reply_id is None and not passthrough:
            reply_id = wire.id_prefix + record.id  # ids in the client's protocol's form
        writer = _Writer(
            wire,
            upstream,
            include_usage=chat.include_usage,
            reply_id=reply_id,
            translate=attempts is not None and attempts.translate,
        )
        if attempts is not None:
            attempts.on_switch = writer.rebind
        relay = self._relay(items, writer, record)
        if producer is not None:
            assert self.streams is not None
            producer.start(relay)
            return self.streams.response(
                producer.reader(0), producer.id, protocol=protocol, headers=headers
            )
        response = EventStreamResponse(
            relay,
            ping=self.config.gateway.ping,
            headers=headers,
            expose_errors=self.config.gateway.expose_errors,
        )
        response.heartbeat = wire.heartbeat  # what the protocol's clients skip
        return response

    def _check_output_limit(self, chat: ChatRequest, body: Any, wire: WireProtocol) -> None:
        """A ``max_tokens`` above the route's ``max_output_tokens`` is "too large"
        (named as the client wrote it, ``wire.max_tokens_fields``)."""
        limit = self.config.output_limit(chat.model)
        if limit is None or chat.max_tokens is None or chat.max_tokens <= limit:
            return
        fields = wire.max_tokens_fields
        param = next((k for k in fields if _present(body, k)), fields[0])
        raise StreamError(
            "invalid_request",
            f"{param} is too large: {chat.max_tokens}. The model {chat.model[:_MAX_LABEL]!r}"
            f" supports at most {limit} output tokens.",
            status=400,
            param=param,
        )

    async def _relay(
        self, items: AsyncGenerator[Item, None], writer: _Writer, record: _Record
    ) -> AsyncGenerator[bytes, None]:
        """``items`` (within their deadlines) written in the client's protocol."""
        self.metrics.active.inc()
        try:
            async with contextlib.aclosing(items) as guarded:
                async for raw, deltas in guarded:
                    record.observe(deltas)
                    out = writer.write(raw, deltas)
                    if out:
                        yield out
            tail = writer.done()
            if tail:
                yield tail
        except DropConnection:
            raise  # a simulated cut: for the server to act on
        except Exception as exc:
            err = self._told(exc)
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
        upstream: Upstream,
        outgoing: ChatRequest,
        chat: ChatRequest,
        wire: WireProtocol,
        timeouts: Timeouts,
        accepted: float,
        record: _Record,
        attempts: Attempts | None = None,
    ) -> Response:
        """A ``stream: false`` reply: the upstream's stream gathered into one body."""
        protocol = wire.name
        builder = MessageBuilder()
        secret = upstream.secret
        try:
            items: AsyncGenerator[Item, None]
            if attempts is None:
                opened = await _open(
                    upstream, outgoing, False, timeouts, accepted, headers=record.upstream_headers
                )
                items = _guarded(opened, timeouts, accepted)
            else:
                first = await attempts.open(outgoing)
                upstream = first.upstream
                secret = upstream.secret

                def switched(now: Upstream) -> None:
                    nonlocal upstream, secret
                    upstream, secret = now, now.secret

                attempts.on_switch = switched
                items = routed_items(attempts, first, outgoing)
            async with contextlib.aclosing(items) as guarded:
                async for _, deltas in guarded:
                    record.observe(deltas)
                    for delta in deltas:
                        if type(delta) is ErrorDelta:
                            raise error_from_delta(delta, upstream.protocol)
                        builder.feed(delta)
        except DropConnection:
            raise  # a simulated cut: for the server to act on
        except Exception as exc:
            err = self._told(exc)
            record.fail(err, err.http_status(protocol))
            record.finish()
            return self._error_response(err, protocol, secret)
        message = builder.message
        reply_id = message.id if message.id and message.id.startswith(wire.id_prefix) else None
        # The upstream's name for the model, as in a streamed reply.
        body = wire.whole_reply(
            message, id=reply_id or wire.id_prefix + record.id, model=message.model or chat.model
        )
        record.finish()
        return Response(_scrub(orjson.dumps(body), secret), media_type="application/json")

    # -- the rest ------------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        """``GET /v1/models`` in the shape of the caller's SDK (told by its headers)."""
        return self._model_list(request, protocol_of_headers(request.headers))

    def models_handler(self, wire: WireProtocol) -> Any:
        """The handler of ``GET`` on ``wire.models_path``: the model list in ``wire``'s
        shape, whatever the headers say."""

        async def endpoint(request: Request) -> Response:
            return self._model_list(request, wire)

        endpoint.__name__ = f"{wire.name}_models"
        return endpoint

    def _model_list(self, request: Request, wire: WireProtocol) -> Response:
        try:
            self._authenticate(request, wire)
        except StreamError as err:
            return self._error_response(err, wire.name)
        names = sorted(self.config.models)
        owners = {name: route.provider for name, route in self.config.models.items()}
        body = wire.model_list(names, owners)
        return Response(orjson.dumps(body), media_type="application/json")

    async def agents(self, request: Request) -> Response:
        """The agents ``/chat/stream`` serves, by name (their providers and models are
        the server's business)."""
        try:
            self._authenticate(request, allow_query=True)
        except StreamError as err:
            return self._error_response(err, "generic")
        data = [{"id": name, "object": "agent"} for name in sorted(self.config.agents)]
        return Response(orjson.dumps({"data": data}), media_type="application/json")

    def _agent(self, name: str) -> Agent:
        agent = self._agents.get(name)
        if agent is None:
            try:
                agent = Agent.from_config(self.config, name)
            except ConfigError as exc:
                if name not in self.config.agents:
                    # Said to clients: no file path, bounded length.
                    raise StreamError(
                        "not_found",
                        f"unknown agent {name[:_MAX_LABEL]!r} "
                        f"(defined: {', '.join(sorted(self.config.agents))})",
                        status=404,
                        param="agent",
                    ) from None
                raise StreamError(
                    "api_error", f"gateway configuration: {exc}", status=500
                ) from None
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
            owner = self._authenticate(request, allow_query=True)
            message = params.get("message", "")
            if not message.strip():
                raise StreamError(
                    "invalid_request", "the message parameter is required", status=400
                )
            name = params.get("agent") or "assistant"
            agent = self._agent(name)
            record.model = name
            record.upstream = agent.provider.name
            producer = await self._producer(record.id, "generic", owner)
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
        return EventStreamResponse(
            chunks, ping=self.config.gateway.ping, expose_errors=self.config.gateway.expose_errors
        )

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
        except DropConnection:
            raise  # a simulated cut: for the server to act on
        except Exception as exc:
            err = self._told(exc)
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
        metrics = self.metrics
        for router in self._routers.values():  # states change with time: read them now
            now = router.now()
            for deployed in router.deployments:
                labels = (router.name, deployed.label)  # configured names, as in attempts
                current = deployed.state(now)
                for state in STATES:
                    metrics.deployment_state.set(float(state == current), *labels, state)
                metrics.deployment_in_flight.set(deployed.in_flight, *labels)
        return Response(
            self.metrics.registry.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )


def _translated(chat: ChatRequest, upstream: Upstream) -> list[str]:
    """The request fields lost in translation to ``upstream``'s protocol (they are
    named in the reply's ``x-tokenwire-dropped-params`` header). A field whose loss
    would change what the client gets back is refused with a 400 instead."""
    protocol = upstream.protocol or "demo"
    refused = refused_fields(chat, protocol)
    if refused:
        field = refused[0]
        served = get_protocol(protocol).title if upstream.protocol else "the demo model"
        raise StreamError(
            "invalid_request",
            f"{field} cannot be carried: model {chat.model[:_MAX_LABEL]!r} is served over"
            f" {served}, which has no such parameter (remove {field}, or use a model"
            " served over the protocol of this endpoint)",
            status=400,
            param=field,
        )
    return dropped_fields(chat, protocol)


def _present(body: Any, dotted: str) -> bool:
    """Whether ``body`` has the field ``dotted`` names (``"a.b"``: ``b`` in ``a``)."""
    for key in dotted.split("."):
        if not isinstance(body, dict) or key not in body:
            return False
        body = body[key]
    return True


def _tracing(
    tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None
) -> Tracing:
    # Imported only when tracing is on: OpenTelemetry is an optional dependency.
    try:
        from tokenwire.gateway.tracing import Tracing
    except ImportError as exc:
        raise ConfigError(TRACING_NEEDS_OTEL) from exc
    return Tracing(tracer_provider, meter_provider)


def create_app(
    config: Config | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> ASGIApp:
    """The gateway as an ASGI app. With no ``config``, :func:`~tokenwire.config.
    load_config` reads ``TOKENWIRE_CONFIG`` / ``./tokenwire.toml`` (or the built-in
    defaults: the ``demo`` model and the ``assistant`` agent).

    ``tracer_provider`` turns OpenTelemetry tracing on with that provider (as
    ``[gateway] tracing`` does with the global one); ``meter_provider`` receives its
    histograms (see :mod:`~tokenwire.gateway.tracing`).

    A bare Starlette router, without the error-handling middleware of a ``Starlette``
    application: those wrap every ``send`` of every chunk, and errors here are answered
    by the handlers themselves (uvicorn answers anything left with a 500)."""
    gateway = Gateway(
        config if config is not None else load_config(),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    routes = [
        GatewayRoute(path, gateway.handler(wire), methods=["POST"])
        for wire in protocols()
        for path in wire.endpoints
    ]
    for wire in protocols():
        if wire.models_path is not None:
            routes.append(
                GatewayRoute(wire.models_path, gateway.models_handler(wire), methods=["GET"])
            )
        if wire.reply_path is not None:
            get, cancel = gateway.reply_handlers(wire)
            routes.append(GatewayRoute(wire.reply_path, get, methods=["GET"]))
            routes.append(GatewayRoute(wire.reply_path + "/cancel", cancel, methods=["POST"]))
    routes += [
        GatewayRoute("/v1/models", gateway.models, methods=["GET"]),
        GatewayRoute("/v1/agents", gateway.agents, methods=["GET"]),
        GatewayRoute("/v1/streams/{stream_id}", gateway.cancel_stream, methods=["DELETE"]),
        GatewayRoute("/chat/stream", gateway.chat_stream, methods=["GET"]),
        GatewayRoute("/", gateway.page, methods=["GET"]),
        GatewayRoute("/healthz", gateway.healthz, methods=["GET"]),
        GatewayRoute("/metrics", gateway.metrics_endpoint, methods=["GET"]),
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

    app: ASGIApp = Router(routes=routes, lifespan=lifespan, default=not_found)
    if gateway.config.gateway.cors_origins:
        app = CORSMiddleware(
            app,
            allow_origins=list(gateway.config.gateway.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=["x-tokenwire-stream-id"],
        )
    return app
