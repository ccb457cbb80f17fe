"""Whole (non-streamed) replies in each protocol's JSON shape, from a :class:`Message`.

Used when a client asks with ``stream: false``: the reply is still streamed from the
upstream and accumulated, then written out once in the shape the client's SDK expects.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from tokenwire.llm.anthropic_encode import anthropic_usage
from tokenwire.llm.model import ANTHROPIC_TO_FINISH, FINISH_TO_ANTHROPIC, Message
from tokenwire.llm.openai_encode import openai_usage

__all__ = ["anthropic_message", "openai_completion"]


def openai_completion(
    message: Message, *, id: str, model: str, created: int | None = None
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object."""
    reply: dict[str, Any] = {
        "role": message.role,
        "content": message.text if message.text or not message.tool_calls else None,
        "refusal": message.refusal,
    }
    if message.reasoning:
        reply["reasoning_content"] = message.reasoning
    if message.tool_calls:
        reply["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments or "{}"},
            }
            for call in message.tool_calls
        ]
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": message.finish_reason or "stop",
            }
        ],
    }
    usage = openai_usage(message.usage)
    if usage:
        body["usage"] = usage
    return body


def anthropic_message(message: Message, *, id: str, model: str) -> dict[str, Any]:
    """An Anthropic ``message`` object."""
    content: list[dict[str, Any]] = []
    if message.reasoning:
        content.append(
            {
                "type": "thinking",
                "thinking": message.reasoning,
                "signature": message.reasoning_signature or "",
            }
        )
    text = message.text or (message.refusal or "")
    if text or not message.tool_calls:
        content.append({"type": "text", "text": text})
    for call in message.tool_calls:
        try:
            arguments = orjson.loads(call.arguments) if call.arguments.strip() else {}
        except orjson.JSONDecodeError:
            arguments = {}  # cut-off arguments (max_tokens): as the SDK, keep the call
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    raw = message.raw_finish_reason
    if raw in ANTHROPIC_TO_FINISH:
        stop_reason: str | None = raw
    elif message.stop_sequence is not None:
        stop_reason = "stop_sequence"
    else:
        stop_reason = FINISH_TO_ANTHROPIC.get(message.finish_reason or "stop", "end_turn")
    usage = anthropic_usage(message.usage)
    usage.setdefault("input_tokens", 0)
    usage.setdefault("output_tokens", 0)
    return {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": message.stop_sequence,
        "usage": usage,
    }
