"""The OpenAI Responses API (``POST /v1/responses``) as a
:class:`~tokenwire.llm.protocol.WireProtocol`.

Everything for the protocol lives in this package (sans-I/O, nothing opens a socket or
awaits), and every name below is importable from here:

- :class:`ResponsesStreamDecoder` (``decode``): ``response.*`` SSE events in, deltas out.
- :class:`ResponsesEventEncoder` (``encode``): deltas in, the event stream the ``openai``
  SDK accumulates (``response.created`` ... ``response.completed``), with a
  ``sequence_number`` on every event.
- :func:`from_responses` / :func:`to_responses` (``requests``): request bodies to and
  from :class:`~tokenwire.llm.requests.ChatRequest`.
- :func:`responses_object` and :func:`responses_usage` (``objects``): the whole
  ``response`` object, for ``stream: false``, and ``usage`` in the API's shape.
- :class:`OpenAIResponses`, defined here and registered as ``"responses"``.

How the stream maps onto :class:`~tokenwire.llm.model.Message`: the text of every
``output_text`` part of every ``message`` item is :attr:`Message.text`, ``refusal`` parts
are :attr:`Message.refusal`, ``function_call`` items are tool calls numbered 0, 1, ... in
order of appearance, and reasoning summaries (and ``reasoning_text``) are
:attr:`Message.reasoning` (the parts of one reasoning item are separated by a blank
line). Hosted tools, annotations and other events are skipped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from tokenwire.errors import StreamError
from tokenwire.llm.model import Message
from tokenwire.llm.openai_chat import openai_error_object
from tokenwire.llm.openai_responses.decode import ResponsesStreamDecoder
from tokenwire.llm.openai_responses.encode import ResponsesEventEncoder
from tokenwire.llm.openai_responses.objects import (
    _error_events,
    _new_id,
    _response,
    responses_object,
    responses_usage,
)
from tokenwire.llm.openai_responses.requests import from_responses, to_responses
from tokenwire.llm.protocol import WireProtocol, register
from tokenwire.llm.requests import ChatRequest
from tokenwire.sse import ServerSentEvent

__all__ = [
    "OPENAI_RESPONSES",
    "OpenAIResponses",
    "ResponsesEventEncoder",
    "ResponsesStreamDecoder",
    "from_responses",
    "responses_object",
    "responses_usage",
    "to_responses",
]


# --- the protocol --------------------------------------------------------------------


class OpenAIResponses(WireProtocol):
    """The OpenAI Responses API: named ``response.*`` events with a ``sequence_number``
    each, no ``[DONE]``; errors as the ``error`` event plus ``response.failed``."""

    name = "responses"
    title = "OpenAI Responses"
    provider_type = "openai-responses"
    endpoints = ("/v1/responses",)
    upstream_path = "/responses"
    default_base_url = "https://api.openai.com/v1"
    default_key_env = "OPENAI_API_KEY"
    max_stop_sequences = 0
    accepts_seed = False
    id_prefix = "resp_"
    max_tokens_fields = ("max_output_tokens",)
    telemetry_name = "openai"
    # The SDK's SSE reader takes ids and comments.
    resumable = True
    heartbeat = b": ping\n"
    reply_path = "/v1/responses/{reply_id}"
    previous_reply_field = "previous_response_id"

    def auth_headers(self, key: str | None, options: Mapping[str, str]) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if key else {}

    def parse_request(
        self, body: Mapping[str, Any], params: Mapping[str, str] | None = None
    ) -> ChatRequest:
        return from_responses(body)

    def write_request(self, request: ChatRequest) -> dict[str, Any]:
        return to_responses(request)

    def decoder(self) -> ResponsesStreamDecoder:
        return ResponsesStreamDecoder()

    def encoder(
        self,
        *,
        include_usage: bool = True,
        error_provider: str | None = None,
        id: str | None = None,
    ) -> ResponsesEventEncoder:
        return ResponsesEventEncoder(
            id, include_usage=include_usage, error_provider=error_provider or self.name
        )

    def detect(self, event: ServerSentEvent, obj: Any) -> bool:
        if event.event.startswith("response."):
            return True
        if type(obj) is not dict:
            return False
        kind = obj.get("type")
        if type(kind) is str and kind.startswith("response."):
            return True
        # Anthropic's error event and chat-completions chunks carry no sequence number.
        return (event.event == "error" or kind == "error") and "sequence_number" in obj

    def whole_reply(
        self, message: Message, *, id: str, model: str, status: str | None = None
    ) -> dict[str, Any]:
        return responses_object(message, id=id, model=model, status=status)

    def replay_after(self, query: Mapping[str, str]) -> int | None:
        # starting_after=N: the events after the one numbered N (numbers count from 0).
        after = query.get("starting_after")
        if after is None:
            return 0
        if not after.isascii() or not after.isdigit() or len(after) > 18:
            return None
        return int(after) + 1

    def error_object(self, err: StreamError) -> dict[str, Any]:
        return {"error": openai_error_object(err)}

    def error_event(self, err: StreamError) -> bytes:
        # Without an encoder's state: the two events numbered 0 and 1.
        response = _response(
            id=_new_id("resp_"),
            model="",
            created_at=int(time.time()),
            status="failed",
            output=[],
            usage=None,
        )
        return _error_events(err, 0, response)


OPENAI_RESPONSES = register(OpenAIResponses())
