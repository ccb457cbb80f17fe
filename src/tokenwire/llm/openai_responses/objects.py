"""The Responses API's JSON objects: ``usage``, output items, the whole ``response``
object and the failure events, shared by the encoder, whole replies and the protocol."""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson

from tokenwire.errors import StreamError
from tokenwire.llm.model import Message, Usage
from tokenwire.llm.openai_chat import openai_error_object

_dumps = orjson.dumps

# incomplete_details.reason -> finish reason (an unknown reason still means "cut short").
_INCOMPLETE_TO_FINISH = {"max_output_tokens": "length", "content_filter": "content_filter"}
# The codes a failed response's `error.code` may have (openai.types.responses.ResponseError);
# anything else is sent as server_error so that strict clients still parse the event.
_FAILED_CODES = frozenset(
    {
        "server_error",
        "rate_limit_exceeded",
        "invalid_prompt",
        "data_residency_mismatch",
        "bio_policy",
        "misalignment_policy_violation",
        "vector_store_timeout",
        "invalid_image",
        "invalid_image_format",
        "invalid_base64_image",
        "invalid_image_url",
        "image_too_large",
        "image_too_small",
        "image_parse_error",
        "image_content_policy_violation",
        "invalid_image_mode",
        "image_file_too_large",
        "unsupported_image_media_type",
        "empty_image_file",
        "failed_to_download_image",
        "image_file_not_found",
    }
)


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(24)


def responses_usage(usage: Usage) -> dict[str, Any]:
    """``usage`` in the Responses API's shape (``input_tokens``, ``input_tokens_details``
    with ``cached_tokens`` and ``cache_write_tokens``, ``output_tokens``,
    ``output_tokens_details.reasoning_tokens``, ``total_tokens``); unknown counts are 0."""
    inp = usage.input_tokens or 0
    out = usage.output_tokens or 0
    return {
        "input_tokens": inp,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_input_tokens or 0,
            "cache_write_tokens": usage.cache_creation_input_tokens or 0,
        },
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
        "total_tokens": inp + out,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _refusal_part(text: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": text}


def _message_item(id: str, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": id, "type": "message", "status": status, "content": content, "role": "assistant"}


def _call_item(id: str, status: str, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def _reasoning_item(id: str, summary: list[str]) -> dict[str, Any]:
    return {
        "id": id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text} for text in summary],
    }


def _response(
    *,
    id: str,
    model: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    error: dict[str, Any] | None = None,
    incomplete: str | None = None,
) -> dict[str, Any]:
    # Every field openai.types.responses.Response requires, plus the usual defaults.
    return {
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "temperature": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "truncation": "disabled",
        "usage": usage,
        "metadata": {},
    }


def _incomplete_reason(reason: str | None, raw: str | None) -> str | None:
    """The ``incomplete_details.reason`` a finish amounts to (``None``: completed)."""
    if raw in _INCOMPLETE_TO_FINISH:
        return raw
    if reason == "length":
        return "max_output_tokens"
    if reason == "content_filter":
        return "content_filter"
    return None


def responses_object(
    message: Message,
    *,
    id: str,
    model: str,
    status: str | None = None,
    created_at: int | None = None,
) -> dict[str, Any]:
    """The whole Responses ``response`` object for ``message`` (what ``stream: false``
    answers, and what ``response.completed`` carries).

    ``status`` defaults to ``"incomplete"`` (with ``incomplete_details``) when the
    message finished for ``length`` or ``content_filter``, else ``"completed"``. The
    output is a reasoning item (if there is reasoning), a message item (text and
    refusal) and one ``function_call`` item per tool call."""
    incomplete = _incomplete_reason(message.finish_reason, message.raw_finish_reason)
    if status is None:
        status = "incomplete" if incomplete else "completed"
    elif status != "incomplete":
        incomplete = None
    output: list[dict[str, Any]] = []
    if message.reasoning:
        output.append(_reasoning_item(_new_id("rs_"), [message.reasoning]))
    content: list[dict[str, Any]] = []
    if message.text or (message.refusal is None and not message.tool_calls):
        content.append(_text_part(message.text))
    if message.refusal is not None:
        content.append(_refusal_part(message.refusal))
    if content:
        output.append(_message_item(_new_id("msg_"), "completed", content))
    for call in message.tool_calls:
        output.append(
            _call_item(_new_id("fc_"), "completed", call.id, call.name, call.arguments or "{}")
        )
    if incomplete and output and "status" in output[-1]:
        output[-1]["status"] = "incomplete"  # the item that was cut short
    return _response(
        id=id,
        model=model,
        created_at=int(time.time()) if created_at is None else created_at,
        status=status,
        output=output,
        usage=responses_usage(message.usage),
        incomplete=incomplete,
    )


def _failed_error(err: StreamError) -> dict[str, Any]:
    """A failed response's ``error`` object (``code`` from the SDK's closed list)."""
    code = err.code if err.code in _FAILED_CODES else None
    if code is None:
        code = "rate_limit_exceeded" if err.type == "rate_limit" else "server_error"
    return {"code": code, "message": err.message}


def _error_events(err: StreamError, seq: int, response: dict[str, Any]) -> bytes:
    """The top-level ``error`` event (number ``seq``) and ``response.failed`` (``seq + 1``).

    The error event carries the documented flat fields (``code``, ``message``,
    ``param``) and, as the live API does, the error object under ``error``: the
    ``openai`` SDK raises ``APIError`` only for data with an ``error`` key, so this is
    what makes ``responses.create(stream=True)`` and ``responses.stream()`` raise."""
    inner = openai_error_object(err)
    event = {
        "type": "error",
        "code": inner["code"] or inner["type"],
        "message": inner["message"],
        "param": inner["param"],
        "error": inner,
        "sequence_number": seq,
    }
    response["status"] = "failed"
    response["error"] = _failed_error(err)
    failed = {"type": "response.failed", "response": response, "sequence_number": seq + 1}
    return (
        b"event: error\ndata: "
        + _dumps(event)
        + b"\n\nevent: response.failed\ndata: "
        + _dumps(failed)
        + b"\n\n"
    )
