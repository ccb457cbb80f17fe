"""Answers for requests no gateway route takes: an unknown path (404) or a known path
with the wrong method (405), as JSON errors in the caller's protocol's shape (an SDK
raises its own ``NotFoundError``), not the framework's plain text.

The protocol is told by the path first (``/v1/messages/count_tokens`` is an Anthropic
client's, ``/v1beta/models/x:countTokens`` a Gemini client's), then by the request's
headers (``anthropic-version``), else OpenAI's; paths that belong to no protocol
(``/chat/stream``, ``/metrics``) answer in the generic shape.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tokenwire.errors import StreamError
from tokenwire.llm.protocol import WireProtocol, get_protocol, protocols

__all__ = ["GatewayRoute", "caller_protocol_name", "not_found", "protocol_of_headers"]

_MAX_PATH = 200  # characters of a client's path repeated in an error message
# Paths of the gateway's own (protocol-less) endpoints: errors there are generic.
_GENERIC_PATHS = ("/chat/", "/healthz", "/metrics", "/v1/agents", "/v1/streams/")


def caller_protocol_name(path: str, headers: Mapping[str, str]) -> str:
    """The wire protocol whose error shape a request on ``path`` gets (a protocol
    name, or ``"generic"``)."""
    for wire in protocols():
        for endpoint in (*wire.endpoints, wire.reply_path or "", wire.models_path or ""):
            # The fixed start of the path (``/v1beta/models`` of
            # ``/v1beta/models/{model}:{method}``), up to its last whole segment.
            prefix = endpoint.split("{", 1)[0].rstrip("/")
            if prefix and (path == prefix or path.startswith(prefix + "/")):
                return wire.name
    if path == "/" or path.startswith(_GENERIC_PATHS):
        return "generic"
    return protocol_of_headers(headers).name


def protocol_of_headers(headers: Mapping[str, str]) -> WireProtocol:
    """The protocol of a request on a path several share, told by its headers
    (OpenAI chat completions when none claims it)."""
    for wire in protocols():
        if wire.recognizes(headers):
            return wire
    return get_protocol("openai")


def _answer(scope: Scope, err: StreamError, headers: dict[str, str] | None = None) -> Response:
    protocol = caller_protocol_name(scope.get("path", ""), Headers(scope=scope))
    return Response(
        err.to_response_body(protocol),
        status_code=err.http_status(protocol),
        headers=headers,
        media_type="application/json",
    )


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """The router's default: 404 in the caller's protocol."""
    if scope["type"] != "http":
        return  # lifespan and websockets are not answered here
    method = scope.get("method", "GET")
    path = scope.get("path", "")[:_MAX_PATH]
    err = StreamError("not_found", f"Unknown endpoint: {method} {path}", status=404)
    await _answer(scope, err)(scope, receive, send)


class GatewayRoute(Route):
    """A route whose wrong-method answer is a 405 in the caller's protocol, with
    ``Allow``."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            allowed = ", ".join(sorted(self.methods))
            err = StreamError(
                "invalid_request",
                f"Method {scope['method']} is not allowed on {self.path} (allowed: {allowed})",
                status=405,
            )
            await _answer(scope, err, {"allow": allowed})(scope, receive, send)
            return
        await self.app(scope, receive, send)
