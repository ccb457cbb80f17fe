"""The OpenAI chat-completions protocol (``POST /v1/chat/completions``), as a
:class:`~tokenwire.llm.protocol.WireProtocol`: the pieces in
:mod:`~tokenwire.llm.openai_decode`, :mod:`~tokenwire.llm.openai_encode`,
:mod:`~tokenwire.llm.requests` and :mod:`~tokenwire.llm.responses` behind one object.

Also what OpenAI-compatible servers speak (Ollama, vLLM, LM Studio, LiteLLM, a
tokenwire gateway)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from tokenwire.llm.model import Message
from tokenwire.llm.openai_decode import OpenAIStreamDecoder
from tokenwire.llm.openai_encode import OpenAIChunkEncoder
from tokenwire.llm.protocol import WireProtocol, register
from tokenwire.llm.requests import ChatRequest, from_openai, to_openai
from tokenwire.llm.responses import openai_completion
from tokenwire.sse import ServerSentEvent

if TYPE_CHECKING:
    from tokenwire.errors import StreamError

__all__ = ["OPENAI_CHAT", "OpenAIChat", "openai_error_object"]

# Category -> (type, code) in OpenAI's shape. Rate limits use what the API itself sends
# ({"type":"requests","code":"rate_limit_exceeded"}); categories OpenAI has no type for
# are "server_error" with our category as the code, so a reader can still tell them apart.
_TYPES: dict[str, tuple[str, str | None]] = {
    "timeout": ("server_error", "timeout"),
    "cancelled": ("server_error", "cancelled"),
    "network": ("server_error", "network_error"),
    "rate_limit": ("requests", "rate_limit_exceeded"),
    "authentication": ("authentication_error", None),
    "permission": ("permission_error", None),
    "invalid_request": ("invalid_request_error", None),
    "not_found": ("not_found_error", None),
    "overloaded": ("server_error", "overloaded"),
    "api_error": ("server_error", None),
}


def openai_error_object(err: StreamError) -> dict[str, Any]:
    """``{"message", "type", "param", "code"}`` for ``err`` in OpenAI's vocabulary (an
    error that came from OpenAI keeps its own type and code). Shared by the OpenAI
    protocols."""
    etype, code = _TYPES[err.type]
    if err.provider in ("openai", "responses") and err.provider_type is not None:
        etype = err.provider_type
    if err.code is not None:
        code = err.code
    return {"message": err.message, "type": etype, "param": err.param, "code": code}


class OpenAIChat(WireProtocol):
    """OpenAI chat completions: ``data:``-only events of ``chat.completion.chunk``
    objects ending with ``data: [DONE]``; errors as ``data: {"error": {...}}``."""

    name = "openai"
    title = "OpenAI chat completions"
    provider_type = "openai"
    endpoints = ("/v1/chat/completions",)
    upstream_path = "/chat/completions"
    default_base_url = "https://api.openai.com/v1"
    default_key_env = "OPENAI_API_KEY"
    max_stop_sequences = 4
    id_prefix = "chatcmpl-"
    max_tokens_fields = ("max_completion_tokens", "max_tokens")
    # The SDK's SSE reader takes ids and comments.
    resumable = True
    heartbeat = b": ping\n"

    def auth_headers(self, key: str | None, options: Mapping[str, str]) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if key else {}

    def parse_request(
        self, body: Mapping[str, Any], params: Mapping[str, str] | None = None
    ) -> ChatRequest:
        return from_openai(body)

    def write_request(self, request: ChatRequest) -> dict[str, Any]:
        return to_openai(request)

    def decoder(self) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder()

    def encoder(
        self,
        *,
        include_usage: bool = True,
        error_provider: str | None = None,
        id: str | None = None,
    ) -> OpenAIChunkEncoder:
        return OpenAIChunkEncoder(
            id, include_usage=include_usage, error_provider=error_provider or self.name
        )

    def detect(self, event: ServerSentEvent, obj: Any) -> bool:
        # Also what a stream nobody else claims is taken for (detect_protocol).
        if type(obj) is not dict:
            return False
        return (
            "choices" in obj
            or obj.get("object") == "chat.completion.chunk"
            or ("error" in obj and "type" not in obj)
        )

    def whole_reply(
        self, message: Message, *, id: str, model: str, status: str | None = None
    ) -> dict[str, Any]:
        return openai_completion(message, id=id, model=model)

    def error_object(self, err: StreamError) -> dict[str, Any]:
        return {"error": openai_error_object(err)}

    def error_event(self, err: StreamError) -> bytes:
        # No event name: the openai SDK raises on any data with an "error" key.
        return b"data: " + orjson.dumps(self.error_object(err)) + b"\n\n"


OPENAI_CHAT = register(OpenAIChat())
