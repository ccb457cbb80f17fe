"""The Gemini API's JSON objects: ``usageMetadata``, finish reasons, parts, the whole
``GenerateContentResponse``, errors and the model list, shared by the decoder, the
encoder, whole replies and the protocol."""

from __future__ import annotations

import re
import secrets
import zlib
from typing import Any

import orjson

from tokenwire.errors import ProviderError, StreamError
from tokenwire.llm.model import Message, ToolCall, Usage

_dumps = orjson.dumps

# finishReason -> finish reason. STOP after function calls is "tool_calls" (the API
# says STOP either way); what is not listed here (OTHER, MALFORMED_FUNCTION_CALL, a
# newer reason) is "stop", with the API's word kept as the raw reason.
FINISH_TO_REASON: dict[str, str] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MODEL_ARMOR": "content_filter",
}
# The finishReason values of google.genai.types.FinishReason: a raw reason among them
# (a Gemini upstream's own) is sent again as it came.
FINISH_REASONS = frozenset(
    {
        *FINISH_TO_REASON,
        "FINISH_REASON_UNSPECIFIED",
        "LANGUAGE",
        "OTHER",
        "MALFORMED_FUNCTION_CALL",
        "IMAGE_OTHER",
        "NO_IMAGE",
        "UNEXPECTED_TOOL_CALL",
        "TOO_MANY_TOOL_CALLS",
        "MISSING_THOUGHT_SIGNATURE",
        "MALFORMED_RESPONSE",
    }
)
# finish reason -> finishReason, for replies that did not come from Gemini.
_REASON_TO_FINISH: dict[str, str] = {
    "stop": "STOP",
    "tool_calls": "STOP",
    "function_call": "STOP",
    "length": "MAX_TOKENS",
    "content_filter": "SAFETY",
}

# Category -> the google.rpc status name the API sends with it.
_STATUS: dict[str, str] = {
    "timeout": "DEADLINE_EXCEEDED",
    "cancelled": "CANCELLED",
    "network": "UNAVAILABLE",
    "rate_limit": "RESOURCE_EXHAUSTED",
    "authentication": "UNAUTHENTICATED",
    "permission": "PERMISSION_DENIED",
    "invalid_request": "INVALID_ARGUMENT",
    "not_found": "NOT_FOUND",
    "overloaded": "UNAVAILABLE",
    "api_error": "INTERNAL",
}

SYNTHETIC_ID = re.compile(r"call_[0-9]+(?:_[0-9]+)*")
"""The form of the tool call ids made up for Gemini function calls that carry no
``id`` (``call_<n>`` and ``call_<a>_<b>...``): they are left out again when a call goes
back to Gemini, which pairs calls and responses by name and order."""


def synthetic_id(*numbers: int) -> str:
    """A made-up tool call id (see :data:`SYNTHETIC_ID`)."""
    return "call_" + "_".join(str(n) for n in numbers)


def reply_tag(response_id: str | None) -> int | None:
    """A number standing for a reply's ``responseId`` (made-up call ids carry it, so the
    ids of different replies differ and decoding a reply twice gives the same ones)."""
    return None if not response_id else zlib.crc32(response_id.encode())


def new_response_id() -> str:
    """A random ``responseId`` like the API's (23 URL-safe characters)."""
    return secrets.token_urlsafe(17)


def finish_reason(raw: str, called: bool) -> str:
    """The finish reason for a ``finishReason`` (``called``: the reply made function
    calls, so a STOP is ``tool_calls``)."""
    reason = FINISH_TO_REASON.get(raw, "stop")
    return "tool_calls" if called and reason == "stop" and raw == "STOP" else reason


def gemini_finish(reason: str | None, raw: str | None) -> str:
    """The ``finishReason`` for a finish: the raw reason if it is Gemini's own, else the
    one ``reason`` amounts to (``OTHER`` for an unknown one, ``STOP`` for none)."""
    if raw is not None and raw in FINISH_REASONS:
        return raw
    if reason is None:
        return "STOP"
    return _REASON_TO_FINISH.get(reason, "OTHER")


# --- usage ---------------------------------------------------------------------------


def usage_from_gemini(raw: Any) -> Usage | None:
    """``usageMetadata`` as :class:`~tokenwire.llm.model.Usage`: ``input_tokens`` is
    ``promptTokenCount`` (cached tokens included, as in OpenAI's count),
    ``cache_read_input_tokens`` is ``cachedContentTokenCount``, ``reasoning_tokens`` is
    ``thoughtsTokenCount`` and ``output_tokens`` is ``candidatesTokenCount`` plus
    ``thoughtsTokenCount`` (thoughts are output tokens, as OpenAI counts reasoning;
    ``totalTokenCount`` is then input plus output). ``None`` for a non-object."""
    if type(raw) is not dict:
        return None
    prompt = _count(raw, "promptTokenCount", "prompt_token_count")
    candidates = _count(raw, "candidatesTokenCount", "candidates_token_count")
    thoughts = _count(raw, "thoughtsTokenCount", "thoughts_token_count")
    cached = _count(raw, "cachedContentTokenCount", "cached_content_token_count")
    output = None
    if candidates is not None or thoughts is not None:
        output = (candidates or 0) + (thoughts or 0)
    return Usage(
        input_tokens=prompt,
        output_tokens=output,
        cache_read_input_tokens=cached,
        reasoning_tokens=thoughts,
    )


def _count(raw: dict[str, Any], camel: str, snake: str) -> int | None:
    value = raw.get(camel)
    if value is None:
        value = raw.get(snake)
    return value if type(value) is int else None


def gemini_usage(usage: Usage) -> dict[str, Any]:
    """``usage`` as ``usageMetadata`` (the inverse of :func:`usage_from_gemini`):
    ``promptTokenCount``, ``candidatesTokenCount`` (output minus reasoning tokens),
    ``totalTokenCount``, and ``thoughtsTokenCount`` / ``cachedContentTokenCount`` when
    known. Unknown counts are 0."""
    prompt = usage.input_tokens or 0
    output = usage.output_tokens or 0
    thoughts = usage.reasoning_tokens
    out: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": max(0, output - (thoughts or 0)),
        "totalTokenCount": prompt + max(output, thoughts or 0),
    }
    if usage.cache_read_input_tokens is not None:
        out["cachedContentTokenCount"] = usage.cache_read_input_tokens
    if thoughts is not None:
        out["thoughtsTokenCount"] = thoughts
    return out


# --- parts and replies ---------------------------------------------------------------


def parse_args(arguments: str) -> dict[str, Any]:
    """A tool call's JSON arguments as the object ``functionCall.args`` is; ``{}`` for
    arguments that are empty, cut off (a reply stopped by its token limit) or not an
    object."""
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return value if type(value) is dict else {}


def call_part(call: ToolCall | tuple[str, str, str]) -> dict[str, Any]:
    """A ``functionCall`` part for a tool call (``(id, name, arguments)`` or a
    :class:`~tokenwire.llm.model.ToolCall`); a made-up id is left out."""
    if isinstance(call, ToolCall):
        id, name, arguments = call.id, call.name, call.arguments
    else:
        id, name, arguments = call
    function: dict[str, Any] = {"name": name, "args": parse_args(arguments)}
    if id and SYNTHETIC_ID.fullmatch(id) is None:
        function["id"] = id
    return {"functionCall": function}


def chunk(
    candidates: list[dict[str, Any]],
    *,
    usage: dict[str, Any] | None,
    model: str | None,
    response_id: str | None,
) -> dict[str, Any]:
    """A ``GenerateContentResponse`` in the API's key order."""
    out: dict[str, Any] = {"candidates": candidates}
    if usage is not None:
        out["usageMetadata"] = usage
    if model:
        out["modelVersion"] = model
    if response_id:
        out["responseId"] = response_id
    return out


def candidate(
    parts: list[dict[str, Any]], index: int = 0, finish: str | None = None
) -> dict[str, Any]:
    """One candidate: ``content`` (role ``model``) with ``parts``, then ``finishReason``
    (if ``finish``) and ``index``."""
    out: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
    if finish is not None:
        out["finishReason"] = finish
    out["index"] = index
    return out


def gemini_response(
    message: Message, *, id: str, model: str, status: str | None = None
) -> dict[str, Any]:
    """The whole ``GenerateContentResponse`` for ``message`` (what ``:generateContent``
    answers): one candidate whose parts are the reasoning (a ``thought`` part), the text
    and one ``functionCall`` part per tool call, with its ``finishReason``, then
    ``usageMetadata``, ``modelVersion`` and ``responseId``. A reasoning signature goes on
    the first function call, else on the last part (where the API puts it). ``status``
    is not used (the API's replies have none)."""
    parts: list[dict[str, Any]] = []
    if message.reasoning:
        parts.append({"text": message.reasoning, "thought": True})
    text = message.text or (message.refusal or "")
    if text or not message.tool_calls:
        parts.append({"text": text})
    first_call = len(parts)
    parts.extend(call_part(call) for call in message.tool_calls)
    signature = message.reasoning_signature
    if signature:
        parts[first_call if message.tool_calls else -1]["thoughtSignature"] = signature
    finish = gemini_finish(message.finish_reason, message.raw_finish_reason)
    return chunk(
        [candidate(parts, 0, finish)],
        usage=gemini_usage(message.usage),
        model=model,
        response_id=id,
    )


def model_list(names: list[str]) -> dict[str, Any]:
    """The body of ``GET /v1beta/models`` for ``names``."""
    return {
        "models": [
            {
                "name": "models/" + name,
                "version": "",
                "displayName": name,
                "description": "",
                "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
            }
            for name in names
        ]
    }


# --- errors --------------------------------------------------------------------------


def gemini_status(err: StreamError) -> str:
    """The google.rpc status name for ``err``: a Gemini error's own, else its
    category's."""
    if err.provider == "gemini" and isinstance(err, ProviderError) and err.body is not None:
        inner = err.body.get("error", err.body)
        status = inner.get("status") if isinstance(inner, dict) else None
        if isinstance(status, str) and status:
            return status
    return _STATUS[err.type]


def error_object(err: StreamError, code: int) -> dict[str, Any]:
    """``{"error": {"code", "message", "status"}}``, as the API sends it (``code``: the
    HTTP status)."""
    return {"error": {"code": code, "message": err.message, "status": gemini_status(err)}}


def error_event(err: StreamError, code: int) -> bytes:
    """The error as one data-only event: the ``google-genai`` SDK raises
    ``ClientError`` / ``ServerError`` (by ``code``) for a chunk that is an error object."""
    return b"data: " + _dumps(error_object(err, code)) + b"\r\n\r\n"
