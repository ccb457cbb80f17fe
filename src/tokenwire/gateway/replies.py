"""The stored-reply handlers of the gateway (protocols with a ``reply_path``, on
gateways with a store), kept apart from the relay and mixed into ``Gateway``."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tokenwire.errors import StreamError
from tokenwire.llm.model import Message
from tokenwire.llm.protocol import WireProtocol
from tokenwire.llm.requests import (
    ChatMessage,
    ChatRequest,
    Part,
    TextPart,
    ToolCallPart,
    dump_messages,
    load_messages,
)
from tokenwire.resume import ResumableStreams, StreamNotFound, check_stream_id
from tokenwire.sse import SSEDecoder


class StoredReplies:
    """Keeping, finding and answering stored replies: ``GET`` and ``POST .../cancel`` on
    ``reply_path`` and the conversation a ``previous_reply_field`` continues. A base of
    :class:`~tokenwire.gateway.app.Gateway`, whose members used here are declared below."""

    streams: ResumableStreams | None

    if TYPE_CHECKING:

        def _authenticate(
            self,
            request: Request,
            wire: WireProtocol | None = None,
            *,
            allow_query: bool = False,
        ) -> str: ...

        def _error_response(
            self, err: BaseException, protocol: str, secret: bytes | None = None
        ) -> Response: ...

    async def _keep_request(self, stream_id: str, chat: ChatRequest) -> None:
        """Keep the conversation a reply answers, for a request that continues it."""
        assert self.streams is not None
        record = {"system": chat.system, "messages": orjson.Fragment(dump_messages(chat.messages))}
        await self.streams.put_record(stream_id, orjson.dumps(record))

    def _reply_stream(self, wire: WireProtocol, reply_id: str, param: str | None = None) -> str:
        """The stream id behind a reply id the gateway gave out (StreamError if none)."""
        if self.streams is None:
            raise StreamError(
                "invalid_request" if param else "not_found",
                f"{param or 'looking up a reply'} needs a reply store, and this gateway keeps "
                "none (turn on [gateway] resume)",
                status=400 if param else 404,
                param=param,
            )
        stream_id = reply_id[len(wire.id_prefix) :] if reply_id.startswith(wire.id_prefix) else ""
        try:
            check_stream_id(stream_id)
        except ValueError:
            raise StreamError(
                "invalid_request" if param else "not_found",
                f"no reply {reply_id[:100]!r}",
                status=400 if param else 404,
                param=param,
            ) from None
        return stream_id

    async def _stored(
        self, wire: WireProtocol, stream_id: str, owner: str
    ) -> tuple[Message, str | None]:
        """A stored reply so far, and its status for the protocol (None: finished)."""
        assert self.streams is not None
        events, ended = await self.streams.snapshot(stream_id, owner=owner)
        decoder = wire.decoder()
        sse = SSEDecoder()
        for event in (*sse.feed(events), *sse.feed(b"\n\n")):
            decoder.feed(event)
        if decoder.error is not None:
            status: str | None = "failed"
        elif not ended or not decoder.done:
            status = "in_progress"
        else:
            status = None
        return decoder.message, status

    async def _continued(
        self, chat: ChatRequest, wire: WireProtocol, previous: Any, owner: str
    ) -> ChatRequest:
        """``chat`` after the conversation of the stored reply ``previous`` and that
        reply (as OpenAI's ``previous_response_id``; instructions are not carried)."""
        field = wire.previous_reply_field
        if not isinstance(previous, str):
            raise StreamError(
                "invalid_request", f"{field} must be a string", status=400, param=field
            )
        stream_id = self._reply_stream(wire, previous, field)
        assert self.streams is not None
        try:
            data = await self.streams.get_record(stream_id, owner=owner)
            message, status = await self._stored(wire, stream_id, owner)
        except StreamNotFound:
            data = None
            status = "missing"
        if data is None or status is not None:
            raise StreamError(
                "invalid_request",
                f"previous reply {previous[:100]!r} not found"
                if status in (None, "missing")
                else f"previous reply {previous[:100]!r} is {status}",
                status=400,
                param=field,
            )
        kept = orjson.loads(data)
        answer: list[Part] = [TextPart(message.text)] if message.text else []
        answer += [ToolCallPart(c.id, c.name, c.arguments or "{}") for c in message.tool_calls]
        history = [*load_messages(orjson.dumps(kept["messages"])), ChatMessage("assistant", answer)]
        return replace(chat, messages=[*history, *chat.messages])

    def reply_handlers(self, wire: WireProtocol) -> tuple[Any, Any]:
        """``GET`` and ``POST .../cancel`` handlers for ``wire.reply_path``."""

        async def get(request: Request) -> Response:
            reply_id = request.path_params["reply_id"]
            try:
                owner = self._authenticate(request, wire)
                stream_id = self._reply_stream(wire, reply_id)
                assert self.streams is not None
                query = request.query_params
                if query.get("stream", "").lower() in ("true", "1"):
                    skip = wire.replay_after(query)
                    if skip is None:
                        raise StreamError(
                            "invalid_request", "malformed replay position", status=400
                        )
                    return await self.streams.resume(
                        f"{stream_id}-{skip}", protocol=wire.name, owner=owner
                    )
                message, status = await self._stored(wire, stream_id, owner)
            except StreamError as err:
                return self._error_response(err, wire.name)
            body = wire.whole_reply(message, id=reply_id, model=message.model or "", status=status)
            return Response(orjson.dumps(body), media_type="application/json")

        async def cancel(request: Request) -> Response:
            reply_id = request.path_params["reply_id"]
            try:
                owner = self._authenticate(request, wire)
                stream_id = self._reply_stream(wire, reply_id)
                assert self.streams is not None
                outcome = await self.streams.cancel(stream_id, owner=owner)
                message, status = await self._stored(wire, stream_id, owner)
            except StreamError as err:
                return self._error_response(err, wire.name)
            if outcome == "cancelled":
                status = "cancelled"
            body = wire.whole_reply(message, id=reply_id, model=message.model or "", status=status)
            return Response(orjson.dumps(body), media_type="application/json")

        return get, cancel
