"""Responses request bodies to and from :class:`~tokenwire.llm.requests.ChatRequest`
(:func:`from_responses` reads what a client sends, :func:`to_responses` writes what an
upstream gets)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from tokenwire.llm.requests import (
    ChatMessage,
    ChatRequest,
    Check,
    ImagePart,
    Part,
    RequestError,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    ToolSpec,
    bool_check,
    check_fields,
    check_tool_choice,
    effort_for_budget,
    extra_fields,
    int_check,
    json_kind,
    json_schema_spec,
    opt_bool,
    opt_int,
    opt_number,
    opt_str,
    read_effort,
    read_json_format,
    read_list,
    read_metadata,
    read_object,
    read_str,
    read_tool_name,
    str_check,
)

RESPONSES_MIN_OUTPUT_TOKENS = 16
"""The smallest ``max_output_tokens`` the Responses API takes."""


def _include(body: Mapping[str, Any], key: str) -> None:
    for i, item in enumerate(read_list(body[key], key)):
        read_str(item, f"{key}[{i}]")


def _truncation(body: Mapping[str, Any], key: str) -> None:
    if body[key] not in ("auto", "disabled"):
        raise RequestError(
            f"truncation must be auto or disabled, not {json_kind(body[key])}", param=key
        )


# Fields of the Responses API that ChatRequest does not model: checked as the API
# checks them, then carried in ChatRequest.extra.
_CHECKS: dict[str, Check] = {
    "user": str_check,
    "service_tier": str_check,
    "truncation": _truncation,
    "include": _include,
    "top_logprobs": int_check(0, 20),
    "max_tool_calls": int_check(1),
    "prompt_cache_key": str_check,
    "safety_identifier": str_check,
    "stream_options": lambda body, key: read_object(body[key], key),
    "store": bool_check,
}
# What ChatRequest models, and what a gateway reads itself (store,
# previous_response_id, background): none of these is forwarded as it came.
_KNOWN = frozenset(
    {
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "stream",
        "parallel_tool_calls",
        "reasoning",
        "text",
        "metadata",
        "store",
        "previous_response_id",
        "background",
    }
)


def _image(part: Mapping[str, Any], where: str) -> ImagePart:
    url = part.get("image_url")
    if url is None:
        raise RequestError(
            f"{where}.image_url is required (images by file_id cannot be carried)",
            param=f"{where}.image_url",
        )
    url = read_str(url, f"{where}.image_url")
    if url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[5:].partition(";base64,")
        return ImagePart(media_type=media_type, data=data)
    return ImagePart(url=url)


def _content(content: Any, where: str) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    if not isinstance(content, list):
        raise RequestError(f"{where} must be a string or a list of content parts", param=where)
    parts: list[Part] = []
    for j, raw in enumerate(content):
        pwhere = f"{where}[{j}]"
        part = read_object(raw, pwhere)
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            parts.append(TextPart(read_str(part.get("text"), f"{pwhere}.text")))
        elif kind == "refusal":  # an earlier refusal, replayed: it was the reply's text
            parts.append(TextPart(read_str(part.get("refusal"), f"{pwhere}.refusal")))
        elif kind == "input_image":
            parts.append(_image(part, pwhere))
        else:
            raise RequestError(f"{pwhere}.type {kind!r} is not supported", param=f"{pwhere}.type")
    return parts


def _tool_output(output: Any, where: str) -> str:
    if isinstance(output, str):
        return output
    texts = []
    for j, raw in enumerate(read_list(output, where)):
        part = read_object(raw, f"{where}[{j}]")
        if part.get("type") != "input_text":
            raise RequestError(
                f"{where}[{j}].type must be 'input_text' (a tool result is text)",
                param=f"{where}[{j}].type",
            )
        texts.append(read_str(part.get("text"), f"{where}[{j}].text"))
    return "".join(texts)


def _input_items(items: list[Any], system: list[str]) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    for i, raw in enumerate(items):
        where = f"input[{i}]"
        item = read_object(raw, where)
        kind = item.get("type")
        if kind is None and "role" in item:
            kind = "message"  # the short form: {"role": ..., "content": ...}
        if kind == "message":
            role = item.get("role")
            parts = _content(item.get("content"), f"{where}.content")
            if role in ("system", "developer"):
                system.append("".join(p.text for p in parts if isinstance(p, TextPart)))
            elif role in ("user", "assistant"):
                messages.append(ChatMessage(role, parts))
            else:
                raise RequestError(
                    f"{where}.role must be user, assistant, system or developer",
                    param=f"{where}.role",
                )
        elif kind == "function_call":
            arguments = item.get("arguments", "{}")
            if not isinstance(arguments, str):
                arguments = orjson.dumps(arguments).decode()
            call = ToolCallPart(
                id=read_str(item.get("call_id"), f"{where}.call_id"),
                name=read_str(item.get("name"), f"{where}.name"),
                arguments=arguments,
            )
            # A call belongs to the assistant turn it follows (text, then its calls).
            if messages and messages[-1].role == "assistant":
                messages[-1].parts.append(call)
            else:
                messages.append(ChatMessage("assistant", [call]))
        elif kind == "function_call_output":
            result = ToolResultPart(
                read_str(item.get("call_id"), f"{where}.call_id"),
                _tool_output(item.get("output"), f"{where}.output"),
            )
            # Results of parallel calls travel together in one user turn.
            last = messages[-1] if messages else None
            if (
                last is not None
                and last.role == "user"
                and last.parts
                and all(isinstance(p, ToolResultPart) for p in last.parts)
            ):
                last.parts.append(result)
            else:
                messages.append(ChatMessage("user", [result]))
        elif kind == "reasoning":
            continue  # earlier reasoning is not replayed across protocols
        else:
            raise RequestError(f"{where}.type {kind!r} is not supported", param=f"{where}.type")
    return messages


def _tools(raw: Any) -> list[ToolSpec]:
    tools: list[ToolSpec] = []
    for i, raw_tool in enumerate(read_list(raw, "tools") if raw is not None else []):
        where = f"tools[{i}]"
        tool = read_object(raw_tool, where)
        kind = tool.get("type")
        if kind != "function":
            raise RequestError(
                f"{where}.type {kind!r} is not supported: only function tools can be carried"
                " (hosted tools run inside the API)",
                param=f"{where}.type",
            )
        strict = tool.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise RequestError(f"{where}.strict must be a boolean", param=f"{where}.strict")
        params = tool.get("parameters")
        tools.append(
            ToolSpec(
                name=read_tool_name(tool.get("name"), f"{where}.name"),
                description=opt_str(tool, "description", f"{where}.description"),
                parameters=(
                    {"type": "object", "properties": {}}
                    if params is None
                    else dict(read_object(params, f"{where}.parameters"))
                ),
                strict=strict,
            )
        )
    return tools


def _tool_choice(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        if raw not in ("auto", "none", "required"):
            raise RequestError(
                "tool_choice must be auto, none, required or a function", param="tool_choice"
            )
        return raw
    choice = read_object(raw, "tool_choice")
    if choice.get("type") != "function":
        raise RequestError(
            "tool_choice.type must be 'function' (hosted tools cannot be carried)",
            param="tool_choice.type",
        )
    return read_str(choice.get("name"), "tool_choice.name")


def from_responses(body: Mapping[str, Any]) -> ChatRequest:
    """Read an OpenAI Responses request body (``POST /v1/responses``).

    ``input`` is a string (one user message) or a list of items: messages (roles user,
    assistant, system, developer; content a string or ``input_text`` / ``input_image``
    parts), ``function_call`` items (they join the assistant turn before them) and
    ``function_call_output`` items (results in a user turn); ``reasoning`` items are
    skipped. ``instructions`` and system/developer messages become the system prompt.
    ``store`` and ``previous_response_id`` are checked but not part of
    :class:`ChatRequest` (a gateway reads them from the body). Raises
    :class:`RequestError` naming the field for what cannot be carried: hosted tools,
    ``background: true``, other item and part types, wrong types and ranges."""
    body = read_object(body, "body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("model is required and must be a non-empty string", param="model")
    if opt_bool(body, "background"):
        raise RequestError("background mode is not supported", param="background")
    opt_bool(body, "store")
    previous = opt_str(body, "previous_response_id", "previous_response_id")
    system: list[str] = []
    instructions = opt_str(body, "instructions", "instructions")
    if instructions:
        system.append(instructions)
    raw_input = body.get("input")
    messages: list[ChatMessage] = []
    if isinstance(raw_input, str):
        messages.append(ChatMessage("user", [TextPart(raw_input)] if raw_input else []))
    elif isinstance(raw_input, list) and (raw_input or previous is not None):
        messages = _input_items(raw_input, system)
    elif raw_input is not None or previous is None:
        raise RequestError("input must be a string or a non-empty list of items", param="input")
    fmt = None
    if body.get("text") is not None:
        text = read_object(body.get("text"), "text")
        if text.get("format") is not None:
            spec = read_object(text.get("format"), "text.format")
            fmt = read_json_format(spec.get("type"), spec, "text.format")
    effort = None
    if body.get("reasoning") is not None:
        effort = read_effort(
            read_object(body.get("reasoning"), "reasoning").get("effort"), "reasoning.effort"
        )
    tools = _tools(body.get("tools"))
    tool_choice = _tool_choice(body.get("tool_choice"))
    check_tool_choice(tool_choice, tools, "tool_choice")
    stream = bool(opt_bool(body, "stream"))
    check_fields(body, _CHECKS)
    if body.get("stream_options") is not None and not stream:
        raise RequestError(
            "stream_options is only allowed when stream is true", param="stream_options"
        )
    return ChatRequest(
        model=model,
        messages=messages,
        system="\n\n".join(system) if system else None,
        max_tokens=opt_int(body, "max_output_tokens", RESPONSES_MIN_OUTPUT_TOKENS),
        temperature=opt_number(body, "temperature", 0, 2),
        top_p=opt_number(body, "top_p", 0, 1),
        tools=tools,
        tool_choice=tool_choice,
        stream=stream,
        include_usage=True,  # Responses streams always carry usage
        parallel_tool_calls=opt_bool(body, "parallel_tool_calls"),
        reasoning_effort=effort,
        response_format=fmt,
        metadata=read_metadata(body.get("metadata")),
        extra=extra_fields(body, _KNOWN),
        extra_protocol="responses",
    )


def _input_part(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "input_text", "text": part.text}
    url = part.url or f"data:{part.media_type};base64,{part.data}"
    return {"type": "input_image", "image_url": url, "detail": "auto"}


def to_responses(req: ChatRequest) -> dict[str, Any]:
    """Write an OpenAI Responses request body: the system prompt as ``instructions``,
    user turns as messages with ``input_text`` / ``input_image`` parts, assistant text
    as an assistant message, tool calls and results as ``function_call`` /
    ``function_call_output`` items. Function tools are sent with ``strict: false`` unless
    the request asked for strict (the API's default is strict, which rejects many
    schemas the other protocols take).
    Raises :class:`RequestError` for what the API cannot take: stop sequences
    (``stop``), ``seed``, images in assistant turns, a ``json_schema`` format without
    a schema (``response_format``)."""
    if req.stop:
        raise RequestError("the Responses API has no stop sequences", param="stop")
    if req.seed is not None:
        raise RequestError("the Responses API has no seed", param="seed")
    items: list[dict[str, Any]] = []
    for i, msg in enumerate(req.messages):
        content = [p for p in msg.parts if isinstance(p, TextPart | ImagePart)]
        calls = [p for p in msg.parts if isinstance(p, ToolCallPart)]
        results = [p for p in msg.parts if isinstance(p, ToolResultPart)]
        for result in results:
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": result.tool_call_id,
                    "output": result.content,
                }
            )
        if msg.role == "user":
            if content or not (results or calls):
                items.append(
                    {
                        "type": "message",
                        "role": "user",
                        "content": [_input_part(p) for p in content],
                    }
                )
        else:
            if any(isinstance(p, ImagePart) for p in content):
                raise RequestError(
                    f"messages[{i}]: the Responses API takes no images in assistant turns",
                    param=f"messages[{i}]",
                )
            text = "".join(p.text for p in content if isinstance(p, TextPart))
            if text or not (calls or results):
                items.append({"type": "message", "role": "assistant", "content": text})
        for call in calls:
            items.append(
                {
                    "type": "function_call",
                    "call_id": call.id,
                    "name": call.name,
                    "arguments": call.arguments,
                }
            )
    body: dict[str, Any] = {"model": req.model, "input": items}
    if req.system:
        body["instructions"] = req.system
    if req.max_tokens is not None:
        body["max_output_tokens"] = req.max_tokens
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.tools:
        body["tools"] = [
            {
                "type": "function",
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "parameters": t.parameters,
                # Not strict unless asked: the API's default (strict) rejects many
                # schemas the other protocols take.
                "strict": bool(t.strict),
            }
            for t in req.tools
        ]
    if req.tool_choice is not None:
        body["tool_choice"] = (
            req.tool_choice
            if req.tool_choice in ("auto", "none", "required")
            else {"type": "function", "name": req.tool_choice}
        )
    if req.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = req.parallel_tool_calls
    effort = req.reasoning_effort
    if effort is None and req.reasoning_budget is not None:
        effort = effort_for_budget(req.reasoning_budget)
    if effort is not None:
        body["reasoning"] = {"effort": effort}
    fmt = req.response_format
    if fmt is not None:
        if fmt.type == "json_schema" and fmt.schema is None:
            raise RequestError(
                "the Responses API needs a schema for a json_schema response format",
                param="response_format",
            )
        body["text"] = {
            "format": {"type": "json_schema", **json_schema_spec(fmt)}
            if fmt.type == "json_schema"
            else {"type": "json_object"}
        }
    if req.metadata is not None:
        body["metadata"] = dict(req.metadata)
    if req.stream:
        body["stream"] = True
    return body
