"""Chat requests in one neutral shape, read from and written to both protocols.

An OpenAI ``/v1/chat/completions`` body and an Anthropic ``/v1/messages`` body say the
same things in different words (system prompt placement, tool calls and results, stop
sequences, tool choice). :class:`ChatRequest` holds what they share, so a gateway can
accept either and call an upstream of either kind. Pure data in, data out.

Invalid input raises :class:`RequestError`, whose message names the offending field
(a gateway answers it with a 400 in the caller's protocol).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

__all__ = [
    "EFFORT_BUDGETS",
    "REASONING_EFFORTS",
    "ChatMessage",
    "ChatRequest",
    "ImagePart",
    "RequestError",
    "ResponseFormat",
    "TextPart",
    "ToolCallPart",
    "ToolResultPart",
    "ToolSpec",
    "dump_messages",
    "from_anthropic",
    "from_openai",
    "load_messages",
    "to_anthropic",
    "to_openai",
]

DEFAULT_ANTHROPIC_MAX_TOKENS = 4096
"""Anthropic requires ``max_tokens``; used when an OpenAI caller gave none."""


class RequestError(ValueError):
    """A request body that can't be used; the message names the field."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(slots=True)
class TextPart:
    text: str


@dataclass(slots=True)
class ImagePart:
    """An image by URL (``url``) or inline (``media_type`` + base64 ``data``)."""

    url: str | None = None
    media_type: str | None = None
    data: str | None = None


@dataclass(slots=True)
class ToolCallPart:
    """The assistant calling a tool; ``arguments`` is JSON text."""

    id: str
    name: str
    arguments: str = "{}"


@dataclass(slots=True)
class ToolResultPart:
    tool_call_id: str
    content: str
    is_error: bool = False


Part = TextPart | ImagePart | ToolCallPart | ToolResultPart


@dataclass(slots=True)
class ChatMessage:
    role: Literal["user", "assistant"]
    parts: list[Part] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))


@dataclass(slots=True)
class ToolSpec:
    """A function tool. ``strict``: the schema is enforced exactly (OpenAI's meaning;
    ``None``: the protocol's default)."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


@dataclass(slots=True)
class ResponseFormat:
    """Structured output: ``type`` is ``"json_object"`` (any JSON object) or
    ``"json_schema"`` (``schema``, named ``name``, ``strict`` as OpenAI means it)."""

    type: Literal["json_object", "json_schema"]
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


REASONING_EFFORTS = ("minimal", "low", "medium", "high")
# Anthropic thinking budgets for an effort, and back (the smallest effort whose budget
# covers it): the protocols say the same thing in different units.
EFFORT_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}


@dataclass(slots=True)
class ChatRequest:
    """What a chat request asks for, independent of protocol.

    ``tool_choice`` is ``"auto"``, ``"none"``, ``"required"`` or a tool name.
    ``reasoning_effort`` is one of :data:`REASONING_EFFORTS`; ``reasoning_budget`` the
    thinking token budget where the protocol counts in tokens (Anthropic).
    """

    model: str
    messages: list[ChatMessage]
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: str | None = None
    stream: bool = False
    include_usage: bool = False
    parallel_tool_calls: bool | None = None
    reasoning_effort: str | None = None
    reasoning_budget: int | None = None
    response_format: ResponseFormat | None = None
    metadata: dict[str, str] | None = None
    seed: int | None = None


# --- validation helpers --------------------------------------------------------


def read_object(value: Any, where: str) -> Mapping[str, Any]:
    """``value`` as an object, or a 400 naming ``where``."""
    if not isinstance(value, Mapping):
        raise RequestError(f"{where} must be an object", param=where)
    return value


def read_str(value: Any, where: str) -> str:
    """``value`` as a string, or a 400 naming ``where``."""
    if not isinstance(value, str):
        raise RequestError(f"{where} must be a string", param=where)
    return value


def opt_number(body: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    """``body[key]`` as a number from ``low`` to ``high``, ``None`` if absent."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise RequestError(f"{key} must be a number from {low:g} to {high:g}", param=key)
    return float(value)


def opt_positive_int(body: Mapping[str, Any], key: str) -> int | None:
    """``body[key]`` as an integer >= 1, ``None`` if absent."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(f"{key} must be a positive integer", param=key)
    return value


def _stop_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return list(value)
    raise RequestError(f"{key} must be a string or a list of strings", param=key)


def _model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("model is required and must be a non-empty string", param="model")
    return model


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _parse_arguments(text: str, where: str) -> Any:
    try:
        return orjson.loads(text) if text.strip() else {}
    except orjson.JSONDecodeError:
        raise RequestError(f"{where} must be valid JSON", param=where) from None


def opt_bool(body: Mapping[str, Any], key: str) -> bool | None:
    """``body[key]`` if it is a boolean (``None`` if absent); else RequestError."""
    value = body.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise RequestError(f"{key} must be a boolean", param=key)


def opt_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{key} must be an integer", param=key)
    return value


def read_effort(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if value not in REASONING_EFFORTS:
        raise RequestError(f"{where} must be one of {', '.join(REASONING_EFFORTS)}", param=where)
    return str(value)


def effort_for_budget(budget: int) -> str:
    """The reasoning effort a thinking budget amounts to."""
    for effort, tokens in EFFORT_BUDGETS.items():
        if budget <= tokens:
            return effort
    return "high"


def read_metadata(value: Any, where: str = "metadata") -> dict[str, str] | None:
    if value is None:
        return None
    meta = read_object(value, where)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise RequestError(f"{where} must map strings to strings", param=where)
    return dict(meta)


def read_json_format(
    kind: Any, spec: Mapping[str, Any] | None, where: str
) -> ResponseFormat | None:
    """A structured-output request: ``kind`` is ``text`` (None), ``json_object`` or
    ``json_schema`` (``spec``: ``name``, ``schema``, ``strict``, ``description``)."""
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return ResponseFormat("json_object")
    if kind != "json_schema":
        raise RequestError(
            f"{where}.type must be text, json_object or json_schema", param=f"{where}.type"
        )
    spec = read_object(spec, where)
    schema = spec.get("schema")
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise RequestError(f"{where}.strict must be a boolean", param=f"{where}.strict")
    return ResponseFormat(
        "json_schema",
        name=read_str(spec.get("name", "response"), f"{where}.name"),
        schema=dict(read_object(schema, f"{where}.schema")) if schema is not None else None,
        strict=strict,
        description=spec.get("description") if isinstance(spec.get("description"), str) else None,
    )


def json_schema_spec(fmt: ResponseFormat) -> dict[str, Any]:
    """``name``, ``schema``, ``strict``, ``description`` of a json_schema format."""
    spec: dict[str, Any] = {"name": fmt.name or "response"}
    if fmt.description:
        spec["description"] = fmt.description
    if fmt.schema is not None:
        spec["schema"] = fmt.schema
    if fmt.strict is not None:
        spec["strict"] = fmt.strict
    return spec


# --- OpenAI chat completions ----------------------------------------------------


def _openai_content(content: Any, where: str) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    if not isinstance(content, list):
        raise RequestError(f"{where} must be a string or a list of content parts", param=where)
    parts: list[Part] = []
    for i, raw in enumerate(content):
        item = read_object(raw, f"{where}[{i}]")
        kind = item.get("type")
        if kind == "text":
            parts.append(TextPart(read_str(item.get("text"), f"{where}[{i}].text")))
        elif kind == "image_url":
            image = read_object(item.get("image_url"), f"{where}[{i}].image_url")
            url = read_str(image.get("url"), f"{where}[{i}].image_url.url")
            if url.startswith("data:") and ";base64," in url:
                media_type, _, data = url[5:].partition(";base64,")
                parts.append(ImagePart(media_type=media_type, data=data))
            else:
                parts.append(ImagePart(url=url))
        else:
            raise RequestError(f"{where}[{i}].type {kind!r} is not supported", param=where)
    return parts


def from_openai(body: Mapping[str, Any]) -> ChatRequest:
    """Read an OpenAI chat-completions request body."""
    body = read_object(body, "body")
    model = _model(body)
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise RequestError("messages must be a non-empty list", param="messages")
    n = body.get("n")
    if n not in (None, 1):
        raise RequestError("only n=1 is supported", param="n")
    system: list[str] = []
    messages: list[ChatMessage] = []
    for i, raw in enumerate(raw_messages):
        where = f"messages[{i}]"
        msg = read_object(raw, where)
        role = msg.get("role")
        if role in ("system", "developer"):
            system.append(
                "".join(
                    p.text
                    for p in _openai_content(msg.get("content"), f"{where}.content")
                    if isinstance(p, TextPart)
                )
            )
        elif role == "user":
            messages.append(
                ChatMessage("user", _openai_content(msg.get("content"), f"{where}.content"))
            )
        elif role == "assistant":
            parts = _openai_content(msg.get("content"), f"{where}.content")
            for j, raw_call in enumerate(msg.get("tool_calls") or []):
                cwhere = f"{where}.tool_calls[{j}]"
                call = read_object(raw_call, cwhere)
                function = read_object(call.get("function"), f"{cwhere}.function")
                arguments = function.get("arguments", "{}")
                if not isinstance(arguments, str):
                    arguments = _json_text(arguments)
                parts.append(
                    ToolCallPart(
                        id=read_str(call.get("id"), f"{cwhere}.id"),
                        name=read_str(function.get("name"), f"{cwhere}.function.name"),
                        arguments=arguments,
                    )
                )
            messages.append(ChatMessage("assistant", parts))
        elif role == "tool":
            content = msg.get("content")
            text = (
                content
                if isinstance(content, str)
                else "".join(
                    p.text
                    for p in _openai_content(content, f"{where}.content")
                    if isinstance(p, TextPart)
                )
            )
            part = ToolResultPart(read_str(msg.get("tool_call_id"), f"{where}.tool_call_id"), text)
            # Results of parallel calls travel together in one user turn.
            if (
                messages
                and messages[-1].role == "user"
                and all(isinstance(p, ToolResultPart) for p in messages[-1].parts)
            ):
                messages[-1].parts.append(part)
            else:
                messages.append(ChatMessage("user", [part]))
        else:
            raise RequestError(f"{where}.role {role!r} is not supported", param=f"{where}.role")
    tools: list[ToolSpec] = []
    for i, raw_tool in enumerate(body.get("tools") or []):
        where = f"tools[{i}]"
        tool = read_object(raw_tool, where)
        if tool.get("type", "function") != "function":
            raise RequestError(f"{where}.type must be 'function'", param=where)
        function = read_object(tool.get("function"), f"{where}.function")
        params = function.get("parameters") or {"type": "object", "properties": {}}
        tools.append(
            ToolSpec(
                name=read_str(function.get("name"), f"{where}.function.name"),
                description=function.get("description"),
                parameters=dict(read_object(params, f"{where}.function.parameters")),
                strict=opt_bool(function, "strict"),
            )
        )
    tool_choice: str | None = None
    raw_choice = body.get("tool_choice")
    if isinstance(raw_choice, str):
        if raw_choice not in ("auto", "none", "required"):
            raise RequestError(
                "tool_choice must be auto, none, required or a function", param="tool_choice"
            )
        tool_choice = raw_choice
    elif raw_choice is not None:
        choice = read_object(raw_choice, "tool_choice")
        tool_choice = read_str(
            read_object(choice.get("function"), "tool_choice.function").get("name"),
            "tool_choice.function.name",
        )
    stream_options = body.get("stream_options") or {}
    max_tokens = opt_positive_int(body, "max_completion_tokens") or opt_positive_int(
        body, "max_tokens"
    )
    raw_format = body.get("response_format")
    response_format = None
    if raw_format is not None:
        fmt = read_object(raw_format, "response_format")
        response_format = read_json_format(
            fmt.get("type"), fmt.get("json_schema"), "response_format"
        )
    return ChatRequest(
        model=model,
        messages=messages,
        system="\n\n".join(system) if system else None,
        max_tokens=max_tokens,
        temperature=opt_number(body, "temperature", 0, 2),
        top_p=opt_number(body, "top_p", 0, 1),
        stop=_stop_list(body.get("stop"), "stop"),
        tools=tools,
        tool_choice=tool_choice,
        stream=bool(body.get("stream", False)),
        include_usage=bool(
            read_object(stream_options, "stream_options").get("include_usage", False)
        ),
        parallel_tool_calls=opt_bool(body, "parallel_tool_calls"),
        reasoning_effort=read_effort(body.get("reasoning_effort"), "reasoning_effort"),
        response_format=response_format,
        metadata=read_metadata(body.get("metadata")),
        seed=opt_int(body, "seed"),
    )


def to_openai(req: ChatRequest) -> dict[str, Any]:
    """Write an OpenAI chat-completions request body."""
    messages: list[dict[str, Any]] = []
    if req.system:
        messages.append({"role": "system", "content": req.system})
    for msg in req.messages:
        texts = [p for p in msg.parts if isinstance(p, TextPart | ImagePart)]
        calls = [p for p in msg.parts if isinstance(p, ToolCallPart)]
        results = [p for p in msg.parts if isinstance(p, ToolResultPart)]
        for result in results:
            messages.append(
                {"role": "tool", "tool_call_id": result.tool_call_id, "content": result.content}
            )
        if not texts and not calls:
            continue
        out: dict[str, Any] = {"role": msg.role}
        if any(isinstance(p, ImagePart) for p in texts):
            out["content"] = [_openai_part(p) for p in texts]
        else:
            out["content"] = "".join(p.text for p in texts if isinstance(p, TextPart)) or (
                None if calls else ""
            )
        if calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in calls
            ]
        messages.append(out)
    body: dict[str, Any] = {"model": req.model, "messages": messages}
    if req.max_tokens is not None:
        body["max_tokens"] = req.max_tokens
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stop:
        body["stop"] = list(req.stop)
    if req.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.parameters,
                    **({"strict": t.strict} if t.strict is not None else {}),
                },
            }
            for t in req.tools
        ]
    if req.tool_choice is not None:
        body["tool_choice"] = (
            req.tool_choice
            if req.tool_choice in ("auto", "none", "required")
            else {"type": "function", "function": {"name": req.tool_choice}}
        )
    if req.parallel_tool_calls is not None and req.tools:
        body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.reasoning_effort is not None:
        body["reasoning_effort"] = req.reasoning_effort
    elif req.reasoning_budget is not None:
        body["reasoning_effort"] = effort_for_budget(req.reasoning_budget)
    fmt = req.response_format
    if fmt is not None:
        body["response_format"] = (
            {"type": "json_schema", "json_schema": json_schema_spec(fmt)}
            if fmt.type == "json_schema"
            else {"type": "json_object"}
        )
    if req.metadata:
        body["metadata"] = dict(req.metadata)
    if req.seed is not None:
        body["seed"] = req.seed
    if req.stream:
        body["stream"] = True
        if req.include_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def _openai_part(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    url = part.url or f"data:{part.media_type};base64,{part.data}"
    return {"type": "image_url", "image_url": {"url": url}}


# --- Anthropic messages --------------------------------------------------------


def _anthropic_blocks(content: Any, where: str) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    if not isinstance(content, list):
        raise RequestError(f"{where} must be a string or a list of content blocks", param=where)
    parts: list[Part] = []
    for i, raw in enumerate(content):
        bwhere = f"{where}[{i}]"
        block = read_object(raw, bwhere)
        kind = block.get("type")
        if kind == "text":
            parts.append(TextPart(read_str(block.get("text"), f"{bwhere}.text")))
        elif kind == "image":
            source = read_object(block.get("source"), f"{bwhere}.source")
            if source.get("type") == "url":
                parts.append(ImagePart(url=read_str(source.get("url"), f"{bwhere}.source.url")))
            else:
                parts.append(
                    ImagePart(
                        media_type=read_str(
                            source.get("media_type"), f"{bwhere}.source.media_type"
                        ),
                        data=read_str(source.get("data"), f"{bwhere}.source.data"),
                    )
                )
        elif kind == "tool_use":
            parts.append(
                ToolCallPart(
                    id=read_str(block.get("id"), f"{bwhere}.id"),
                    name=read_str(block.get("name"), f"{bwhere}.name"),
                    arguments=_json_text(block.get("input", {})),
                )
            )
        elif kind == "tool_result":
            inner = block.get("content", "")
            text = (
                inner
                if isinstance(inner, str)
                else "".join(
                    p.text
                    for p in _anthropic_blocks(inner, f"{bwhere}.content")
                    if isinstance(p, TextPart)
                )
            )
            parts.append(
                ToolResultPart(
                    tool_call_id=read_str(block.get("tool_use_id"), f"{bwhere}.tool_use_id"),
                    content=text,
                    is_error=bool(block.get("is_error", False)),
                )
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # earlier reasoning is not replayed across protocols
        else:
            raise RequestError(f"{bwhere}.type {kind!r} is not supported", param=bwhere)
    return parts


def from_anthropic(body: Mapping[str, Any]) -> ChatRequest:
    """Read an Anthropic messages request body."""
    body = read_object(body, "body")
    model = _model(body)
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise RequestError("messages must be a non-empty list", param="messages")
    max_tokens = opt_positive_int(body, "max_tokens")
    if max_tokens is None:
        raise RequestError("max_tokens is required", param="max_tokens")
    messages: list[ChatMessage] = []
    for i, raw in enumerate(raw_messages):
        where = f"messages[{i}]"
        msg = read_object(raw, where)
        role = msg.get("role")
        if role not in ("user", "assistant"):
            raise RequestError(f"{where}.role must be 'user' or 'assistant'", param=f"{where}.role")
        messages.append(
            ChatMessage(role, _anthropic_blocks(msg.get("content"), f"{where}.content"))
        )
    raw_system = body.get("system")
    system: str | None = None
    if isinstance(raw_system, str):
        system = raw_system or None
    elif raw_system is not None:
        system = "".join(
            p.text for p in _anthropic_blocks(raw_system, "system") if isinstance(p, TextPart)
        )
    tools: list[ToolSpec] = []
    for i, raw_tool in enumerate(body.get("tools") or []):
        where = f"tools[{i}]"
        tool = read_object(raw_tool, where)
        schema = tool.get("input_schema") or {"type": "object", "properties": {}}
        tools.append(
            ToolSpec(
                name=read_str(tool.get("name"), f"{where}.name"),
                description=tool.get("description"),
                parameters=dict(read_object(schema, f"{where}.input_schema")),
            )
        )
    tool_choice: str | None = None
    parallel: bool | None = None
    if body.get("tool_choice") is not None:
        choice = read_object(body.get("tool_choice"), "tool_choice")
        kind = choice.get("type")
        mapping = {"auto": "auto", "any": "required", "none": "none"}
        if kind in mapping:
            tool_choice = mapping[kind]
        elif kind == "tool":
            tool_choice = read_str(choice.get("name"), "tool_choice.name")
        else:
            raise RequestError(
                "tool_choice.type must be auto, any, tool or none", param="tool_choice"
            )
        disable = opt_bool(choice, "disable_parallel_tool_use")
        parallel = None if disable is None else not disable
    budget: int | None = None
    if body.get("thinking") is not None:
        thinking = read_object(body.get("thinking"), "thinking")
        if thinking.get("type") == "enabled":
            budget = opt_positive_int(thinking, "budget_tokens")
            if budget is None:
                raise RequestError("thinking.budget_tokens is required", param="thinking")
    metadata = read_metadata(body.get("metadata"))
    return ChatRequest(
        model=model,
        messages=messages,
        system=system,
        max_tokens=max_tokens,
        temperature=opt_number(body, "temperature", 0, 1),
        top_p=opt_number(body, "top_p", 0, 1),
        stop=_stop_list(body.get("stop_sequences"), "stop_sequences"),
        tools=tools,
        tool_choice=tool_choice,
        stream=bool(body.get("stream", False)),
        include_usage=True,  # Anthropic streams always carry usage
        parallel_tool_calls=parallel,
        reasoning_budget=budget,
        reasoning_effort=effort_for_budget(budget) if budget is not None else None,
        metadata=metadata,
    )


def to_anthropic(req: ChatRequest) -> dict[str, Any]:
    """Write an Anthropic messages request body."""
    messages: list[dict[str, Any]] = []
    for msg in req.messages:
        blocks = [_anthropic_block(p) for p in msg.parts]
        if not blocks:
            blocks = [{"type": "text", "text": ""}]
        # The Messages API wants user and assistant turns to alternate.
        if messages and messages[-1]["role"] == msg.role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": msg.role, "content": blocks})
    body: dict[str, Any] = {
        "model": req.model,
        "max_tokens": req.max_tokens or DEFAULT_ANTHROPIC_MAX_TOKENS,
        "messages": messages,
    }
    if req.system:
        body["system"] = req.system
    if req.temperature is not None:
        # OpenAI's range is 0..2, Anthropic's 0..1.
        body["temperature"] = min(req.temperature, 1.0)
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stop:
        body["stop_sequences"] = list(req.stop)
    if req.tools and req.tool_choice != "none":
        body["tools"] = [
            {
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "input_schema": t.parameters,
            }
            for t in req.tools
        ]
    if req.tools and req.tool_choice != "none":
        choice: dict[str, Any] | None = None
        if req.tool_choice in (None, "auto"):
            choice = (
                {"type": "auto"} if req.tool_choice or req.parallel_tool_calls is False else None
            )
        elif req.tool_choice == "required":
            choice = {"type": "any"}
        else:
            choice = {"type": "tool", "name": req.tool_choice}
        if choice is not None:
            if req.parallel_tool_calls is False:
                choice["disable_parallel_tool_use"] = True
            body["tool_choice"] = choice
    budget = req.reasoning_budget
    if budget is None and req.reasoning_effort is not None:
        budget = EFFORT_BUDGETS[req.reasoning_effort]
    if budget is not None:
        # The Messages API needs the budget below max_tokens and temperature unset.
        budget = max(1024, budget)
        body["max_tokens"] = max(body["max_tokens"], budget + 1024)
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
        body.pop("temperature", None)
        body.pop("top_p", None)
    if req.response_format is not None:
        raise RequestError(
            "response_format (structured output) cannot be sent to an Anthropic upstream",
            param="response_format",
        )
    if req.metadata and "user_id" in req.metadata:
        body["metadata"] = {"user_id": req.metadata["user_id"]}  # its only field
    if req.stream:
        body["stream"] = True
    return body


def _anthropic_block(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        if part.url is not None:
            return {"type": "image", "source": {"type": "url", "url": part.url}}
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": part.media_type, "data": part.data},
        }
    if isinstance(part, ToolCallPart):
        return {
            "type": "tool_use",
            "id": part.id,
            "name": part.name,
            "input": _parse_arguments(part.arguments, f"tool call {part.id} arguments"),
        }
    return {
        "type": "tool_result",
        "tool_use_id": part.tool_call_id,
        "content": part.content,
        **({"is_error": True} if part.is_error else {}),
    }


# --- the neutral conversation, serialized (for a response store) ------------------

_PART_TYPES: dict[str, type[Part]] = {
    "text": TextPart,
    "image": ImagePart,
    "tool_call": ToolCallPart,
    "tool_result": ToolResultPart,
}
_PART_NAMES = {cls: name for name, cls in _PART_TYPES.items()}


def dump_messages(messages: list[ChatMessage]) -> bytes:
    """``messages`` as JSON (see :func:`load_messages`)."""
    return orjson.dumps(
        [
            {
                "role": m.role,
                "parts": [
                    {"kind": _PART_NAMES[type(p)], **{f: getattr(p, f) for f in p.__slots__}}
                    for p in m.parts
                ],
            }
            for m in messages
        ]
    )


def load_messages(data: bytes) -> list[ChatMessage]:
    """The messages :func:`dump_messages` wrote."""
    out: list[ChatMessage] = []
    for raw in orjson.loads(data):
        parts: list[Part] = []
        for item in raw["parts"]:
            fields = dict(item)
            parts.append(_PART_TYPES[fields.pop("kind")](**fields))
        out.append(ChatMessage(raw["role"], parts))
    return out
