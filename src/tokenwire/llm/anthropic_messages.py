"""The Anthropic Messages protocol (``POST /v1/messages``), as a
:class:`~tokenwire.llm.protocol.WireProtocol`: the pieces in
:mod:`~tokenwire.llm.anthropic_decode`, :mod:`~tokenwire.llm.anthropic_encode`,
:mod:`~tokenwire.llm.requests` and :mod:`~tokenwire.llm.responses` behind one object."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from tokenwire.llm.anthropic_decode import AnthropicStreamDecoder
from tokenwire.llm.anthropic_encode import AnthropicEventEncoder
from tokenwire.llm.model import Message
from tokenwire.llm.protocol import WireProtocol, register
from tokenwire.llm.requests import ChatRequest, from_anthropic, to_anthropic
from tokenwire.llm.responses import anthropic_message
from tokenwire.sse import ServerSentEvent

if TYPE_CHECKING:
    from tokenwire.errors import StreamError

__all__ = ["ANTHROPIC_MESSAGES", "AnthropicMessages"]

_EVENT_TYPES = frozenset(
    {
        "message_start",
        "message_delta",
        "message_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
    }
)

# Category -> Anthropic error type (anthropic.types.shared.ErrorType names).
_TYPES: dict[str, str] = {
    "timeout": "timeout_error",
    "cancelled": "api_error",
    "network": "api_error",
    "rate_limit": "rate_limit_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "invalid_request": "invalid_request_error",
    "not_found": "not_found_error",
    "overloaded": "overloaded_error",
    "api_error": "api_error",
}


class AnthropicMessages(WireProtocol):
    """Anthropic Messages: named, typed events (``message_start`` ...
    ``message_stop``); errors as ``event: error``."""

    name = "anthropic"
    title = "Anthropic Messages"
    provider_type = "anthropic"
    endpoints = ("/v1/messages",)
    upstream_path = "/v1/messages"
    default_base_url = "https://api.anthropic.com"
    default_key_env = "ANTHROPIC_API_KEY"
    accepts_seed = False
    id_prefix = "msg_"
    # The SDK's SSE reader takes ids and comments.
    resumable = True
    heartbeat = b": ping\n"
    provider_options: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"anthropic_version": "2023-06-01"}
    )

    def auth_headers(self, key: str | None, options: Mapping[str, str]) -> dict[str, str]:
        version = options.get("anthropic_version") or self.provider_options["anthropic_version"]
        headers = {"anthropic-version": version}
        if key:
            headers["x-api-key"] = key
        return headers

    def recognizes(self, headers: Mapping[str, str]) -> bool:
        return "anthropic-version" in headers

    def parse_request(
        self, body: Mapping[str, Any], params: Mapping[str, str] | None = None
    ) -> ChatRequest:
        return from_anthropic(body)

    def write_request(self, request: ChatRequest) -> dict[str, Any]:
        return to_anthropic(request)

    def decoder(self) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder()

    def encoder(
        self,
        *,
        include_usage: bool = True,
        error_provider: str | None = None,
        id: str | None = None,
    ) -> AnthropicEventEncoder:
        return AnthropicEventEncoder(id, error_provider=error_provider or self.name)

    def detect(self, event: ServerSentEvent, obj: Any) -> bool:
        if event.event in _EVENT_TYPES:
            return True
        if type(obj) is not dict:
            return False
        kind = obj.get("type")
        # A Responses error event nests the error too, but carries a sequence number.
        return kind in _EVENT_TYPES or (
            kind == "error" and type(obj.get("error")) is dict and "sequence_number" not in obj
        )

    def whole_reply(
        self, message: Message, *, id: str, model: str, status: str | None = None
    ) -> dict[str, Any]:
        return anthropic_message(message, id=id, model=model)

    def model_list(self, names: list[str], owners: Mapping[str, str]) -> dict[str, Any]:
        return {
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

    def error_object(self, err: StreamError) -> dict[str, Any]:
        etype = _TYPES[err.type]
        if err.provider == "anthropic" and err.provider_type is not None:
            etype = err.provider_type
        return {"type": "error", "error": {"type": etype, "message": err.message}}

    def http_status(self, err: StreamError) -> int:
        if (err.status is None or not 400 <= err.status <= 599) and err.type == "overloaded":
            return 529  # what the Messages API answers when overloaded
        return err.http_status("generic")


ANTHROPIC_MESSAGES = register(AnthropicMessages())
