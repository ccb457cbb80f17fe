"""Google Gemini (``POST /v1beta/models/{model}:streamGenerateContent?alt=sse`` and
``:generateContent``) as a :class:`~tokenwire.llm.protocol.WireProtocol`.

Everything for the protocol lives in this package (sans-I/O, nothing opens a socket or
awaits), and every name below is importable from here:

- :class:`GeminiStreamDecoder` (``decode``): ``GenerateContentResponse`` chunks in,
  deltas out.
- :class:`GeminiEventEncoder` (``encode``): deltas in, the data-only event stream the
  ``google-genai`` SDK reads (function calls sent whole).
- :func:`from_gemini` / :func:`to_gemini` (``requests``): request bodies to and from
  :class:`~tokenwire.llm.requests.ChatRequest`.
- :func:`gemini_response`, :func:`gemini_usage`, :func:`usage_from_gemini` and
  :func:`model_list` (``objects``): the whole reply (``:generateContent``),
  ``usageMetadata`` both ways, and the ``GET /v1beta/models`` body.
- :class:`Gemini`, defined here and registered as ``"gemini"``.

How a reply maps onto :class:`~tokenwire.llm.model.Message`: the ``text`` parts of a
candidate are :attr:`Message.text`, its ``thought`` parts :attr:`Message.reasoning`
(the last ``thoughtSignature`` is :attr:`Message.reasoning_signature`), its
``functionCall`` parts tool calls numbered 0, 1, ... with the arguments as JSON text;
each candidate is a choice (by its ``index``). Gemini function calls may come without
an ``id``: such calls get made-up ids of the form ``call_<n>...`` (see
:data:`~tokenwire.llm.gemini.objects.SYNTHETIC_ID`), which are left out again whenever
a call or its result goes back to Gemini.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from tokenwire.errors import StreamError
from tokenwire.llm.gemini import objects
from tokenwire.llm.gemini.decode import GeminiStreamDecoder
from tokenwire.llm.gemini.encode import GeminiEventEncoder
from tokenwire.llm.gemini.objects import (
    SYNTHETIC_ID,
    gemini_response,
    gemini_usage,
    model_list,
    usage_from_gemini,
)
from tokenwire.llm.gemini.requests import (
    GEMINI_MAX_STOP,
    from_gemini,
    json_schema,
    to_gemini,
)
from tokenwire.llm.model import Message
from tokenwire.llm.protocol import WireProtocol, register
from tokenwire.llm.requests import ChatRequest, RequestError
from tokenwire.sse import ServerSentEvent

__all__ = [
    "GEMINI",
    "SYNTHETIC_ID",
    "Gemini",
    "GeminiEventEncoder",
    "GeminiStreamDecoder",
    "from_gemini",
    "gemini_response",
    "gemini_usage",
    "json_schema",
    "model_list",
    "to_gemini",
    "usage_from_gemini",
]

_METHODS = {"streamGenerateContent": True, "generateContent": False}
# Keys of the other protocols' events: a chunk that has one is not Gemini's.
_FOREIGN = ("object", "type", "choices")


def _model_name(model: str) -> str:
    return model[len("models/") :] if model.startswith("models/") else model


class Gemini(WireProtocol):
    """Google Gemini: data-only events, each a whole ``GenerateContentResponse`` chunk,
    with no end marker; the model and the method are in the path; errors as
    ``{"error": {"code", "message", "status"}}`` (in band: an event with that data)."""

    name = "gemini"
    title = "Google Gemini"
    provider_type = "gemini"
    # ``path``: a routed name may hold a slash (``PROVIDER/MODEL``, sent as ``models/a/b``).
    endpoints = ("/v1beta/models/{model:path}:{method}",)
    upstream_path = "/models/{model}:streamGenerateContent?alt=sse"
    default_base_url = "https://generativelanguage.googleapis.com/v1beta"
    default_key_env = "GEMINI_API_KEY"
    max_stop_sequences = GEMINI_MAX_STOP
    accepts_seed = True
    # responseId is an opaque string (no prefix of its own).
    id_prefix = ""
    models_path: ClassVar[str | None] = "/v1beta/models"
    # The google-genai SDK fails on any line but "data: ..." and blank ones: no ids (so
    # no resuming), and a blank line to keep a quiet stream alive.
    resumable: ClassVar[bool] = False
    heartbeat: ClassVar[bytes] = b"\n"
    telemetry_name: ClassVar[str | None] = "gcp.gemini"
    max_tokens_fields: ClassVar[tuple[str, ...]] = (
        "generationConfig.maxOutputTokens",
        "generation_config.max_output_tokens",
    )

    # -- HTTP ------------------------------------------------------------------------

    def auth_headers(self, key: str | None, options: Mapping[str, str]) -> dict[str, str]:
        return {"x-goog-api-key": key} if key else {}

    def upstream_url(self, base_url: str, request: ChatRequest) -> str:
        model = quote(_model_name(request.model), safe="")
        return f"{base_url}/models/{model}:streamGenerateContent?alt=sse"

    def client_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        # The google-genai SDK sends x-goog-api-key; REST examples use ?key=.
        key = headers.get("x-goog-api-key") or query.get("key")
        return key or super().client_key(headers, query)

    def recognizes(self, headers: Mapping[str, str]) -> bool:
        return (
            "x-goog-api-key" in headers
            or "x-goog-api-client" in headers
            or "google-genai-sdk" in headers.get("user-agent", "")
        )

    # -- requests --------------------------------------------------------------------

    def parse_request(
        self, body: Mapping[str, Any], params: Mapping[str, str] | None = None
    ) -> ChatRequest:
        """``params``: the path's ``model`` and ``method`` (``streamGenerateContent`` or
        ``generateContent``; any other is a :class:`RequestError` naming ``method``).
        Without them the model is the body's ``model`` and the request is not streamed."""
        params = params or {}
        method = params.get("method")
        if method is not None and method not in _METHODS:
            raise RequestError(
                f"method {method[:60]!r} is not supported: streamGenerateContent or"
                " generateContent",
                param="method",
            )
        return from_gemini(
            body, model=params.get("model"), stream=_METHODS.get(method or "", False)
        )

    def write_request(self, request: ChatRequest) -> dict[str, Any]:
        return to_gemini(request)

    # -- streams ---------------------------------------------------------------------

    def decoder(self) -> GeminiStreamDecoder:
        return GeminiStreamDecoder()

    def encoder(
        self,
        *,
        include_usage: bool = True,
        error_provider: str | None = None,
        id: str | None = None,
    ) -> GeminiEventEncoder:
        return GeminiEventEncoder(
            id, include_usage=include_usage, error_provider=error_provider or self.name
        )

    def detect(self, event: ServerSentEvent, obj: Any) -> bool:
        if event.event != "message" or type(obj) is not dict:
            return False
        if any(key in obj for key in _FOREIGN):
            return False
        if (
            type(obj.get("candidates")) is list
            or type(obj.get("usageMetadata")) is dict
            or type(obj.get("promptFeedback")) is dict
        ):
            return True
        # The error chunk: {"error": {"code": 503, "message": ..., "status": "UNAVAILABLE"}}
        # (OpenAI's decoder, asked first, takes any {"error": ...} too).
        error = obj.get("error")
        return (
            len(obj) == 1
            and type(error) is dict
            and type(error.get("code")) is int
            and type(error.get("status")) is str
        )

    # -- whole replies -----------------------------------------------------------------

    def whole_reply(
        self, message: Message, *, id: str, model: str, status: str | None = None
    ) -> dict[str, Any]:
        return gemini_response(message, id=id, model=model)

    def model_list(self, names: list[str], owners: Mapping[str, str]) -> dict[str, Any]:
        return model_list(names)

    # -- errors ------------------------------------------------------------------------

    def error_object(self, err: StreamError) -> dict[str, Any]:
        return objects.error_object(err, self.http_status(err))

    def error_event(self, err: StreamError) -> bytes:
        return objects.error_event(err, self.http_status(err))


GEMINI = register(Gemini())
