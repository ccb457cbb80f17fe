"""Chat requests in one neutral shape, read from and written to both protocols.

An OpenAI ``/v1/chat/completions`` body and an Anthropic ``/v1/messages`` body say the
same things in different words (system prompt placement, tool calls and results, stop
sequences, tool choice). :class:`ChatRequest` holds what they share, so a gateway can
accept either and call an upstream of either kind. Pure data in, data out.

Invalid input raises :class:`RequestError`, whose message names the offending field
(a gateway answers it with a 400 in the caller's protocol).
"""

from __future__ import annotations

import re
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
    #: Request fields this shape does not model (vendor extensions such as vLLM's
    #: ``top_k``, or fields like ``user``), as the client sent them, and the protocol
    #: they were written in: forwarded untouched to an upstream of that protocol,
    #: dropped when the request is translated (:func:`dropped_fields` names them).
    extra: dict[str, Any] = field(default_factory=dict)
    extra_protocol: str | None = None


# --- validation helpers --------------------------------------------------------

MAX_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
"""What the OpenAI APIs accept as a function name."""


def json_kind(value: Any) -> str:
    """How a JSON value is described in an error message (``a string ('false')``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:40] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, list):
        return "a list"
    return "an object"


def read_object(value: Any, where: str) -> Mapping[str, Any]:
    """``value`` as an object, or a 400 naming ``where``."""
    if not isinstance(value, Mapping):
        raise RequestError(f"{where} must be an object, not {json_kind(value)}", param=where)
    return value


def read_str(value: Any, where: str) -> str:
    """``value`` as a string, or a 400 naming ``where``."""
    if not isinstance(value, str):
        raise RequestError(f"{where} must be a string, not {json_kind(value)}", param=where)
    return value


def read_list(value: Any, where: str) -> list[Any]:
    """``value`` as a list, or a 400 naming ``where``."""
    if not isinstance(value, list):
        raise RequestError(f"{where} must be a list, not {json_kind(value)}", param=where)
    return value


def opt_number(
    body: Mapping[str, Any], key: str, low: float, high: float, where: str | None = None
) -> float | None:
    """``body[key]`` as a number from ``low`` to ``high``, ``None`` if absent."""
    value = body.get(key)
    if value is None:
        return None
    where = where or key
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"{where} must be a number, not {json_kind(value)}", param=where)
    if not low <= value <= high:
        raise RequestError(f"{where} must be from {low:g} to {high:g}, not {value!r}", param=where)
    return float(value)


def opt_int(
    body: Mapping[str, Any],
    key: str,
    low: int | None = None,
    high: int | None = None,
    where: str | None = None,
) -> int | None:
    """``body[key]`` as an integer from ``low`` to ``high`` (either may be open),
    ``None`` if absent. Too large says so (not "must be a positive integer")."""
    value = body.get(key)
    if value is None:
        return None
    where = where or key
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 100.0 is the integer 100 in JSON, as the APIs read it
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{where} must be an integer, not {json_kind(value)}", param=where)
    if low is not None and value < low:
        raise RequestError(f"{where} must be at least {low}, not {value}", param=where)
    if high is not None and value > high:
        raise RequestError(f"{where} is too large: {value} (at most {high})", param=where)
    return value


def opt_positive_int(body: Mapping[str, Any], key: str, where: str | None = None) -> int | None:
    """``body[key]`` as an integer >= 1, ``None`` if absent."""
    return opt_int(body, key, 1, where=where)


def opt_bool(body: Mapping[str, Any], key: str, where: str | None = None) -> bool | None:
    """``body[key]`` if it is a boolean (``None`` if absent); else RequestError.
    ``"false"`` and ``1`` are not booleans: the APIs answer them with a 400."""
    value = body.get(key)
    if value is None or isinstance(value, bool):
        return value
    where = where or key
    raise RequestError(f"{where} must be a boolean, not {json_kind(value)}", param=where)


def opt_str(body: Mapping[str, Any], key: str, where: str | None = None) -> str | None:
    """``body[key]`` as a string, ``None`` if absent."""
    value = body.get(key)
    return None if value is None else read_str(value, where or key)


def read_tool_name(value: Any, where: str, pattern: re.Pattern[str] = MAX_TOOL_NAME) -> str:
    """A function name: letters, digits, ``_`` and ``-`` (``pattern``: how many)."""
    name = read_str(value, where)
    if pattern.fullmatch(name) is None:
        raise RequestError(
            f"{where} must match {pattern.pattern} (letters, digits, _ and -), not {name!r}",
            param=where,
        )
    return name


Check = Any  # (body, key) -> None: raises RequestError for a bad value


def check_fields(body: Mapping[str, Any], checks: Mapping[str, Check]) -> None:
    """Validate fields a protocol defines but :class:`ChatRequest` does not model (they
    travel in :attr:`ChatRequest.extra`): each present key's check raises
    :class:`RequestError` for a wrong type or range."""
    for key, check in checks.items():
        if body.get(key) is not None:
            check(body, key)


def number_check(low: float, high: float) -> Check:
    """A :func:`check_fields` check: a number from ``low`` to ``high``."""
    return lambda body, key: opt_number(body, key, low, high)


def int_check(low: int | None = None, high: int | None = None) -> Check:
    """A :func:`check_fields` check: an integer from ``low`` to ``high``."""
    return lambda body, key: opt_int(body, key, low, high)


def bool_check(body: Mapping[str, Any], key: str) -> None:
    """A :func:`check_fields` check: a boolean."""
    opt_bool(body, key)


def str_check(body: Mapping[str, Any], key: str) -> None:
    """A :func:`check_fields` check: a string."""
    opt_str(body, key)


def object_check(body: Mapping[str, Any], key: str) -> None:
    """A :func:`check_fields` check: an object."""
    read_object(body[key], key)


def extra_fields(body: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    """The fields of ``body`` outside ``known`` (what :class:`ChatRequest` models)."""
    return {k: v for k, v in body.items() if k not in known}


def dropped_fields(request: ChatRequest, protocol: str) -> list[str]:
    """The request fields lost when ``request`` goes to an upstream of ``protocol``:
    its :attr:`~ChatRequest.extra` fields, unless they were written in that protocol."""
    if not request.extra or request.extra_protocol == protocol:
        return []
    return sorted(request.extra)


# Fields whose loss changes what the client gets back, not just how the reply is
# sampled (log probabilities, audio, extra output): a translated request refuses them.
_SHAPING = frozenset({"logprobs", "top_logprobs", "logit_bias", "audio", "prediction", "include"})


def refused_fields(request: ChatRequest, protocol: str) -> list[str]:
    """The :func:`dropped_fields` whose loss the client would notice in the reply (a
    gateway answers them with a 400 rather than dropping them)."""
    return [
        key
        for key in dropped_fields(request, protocol)
        if (key in _SHAPING and request.extra[key] not in (None, False, [], {}, 0))
        or (key == "modalities" and request.extra[key] not in (None, ["text"]))
    ]


def with_extra(body: dict[str, Any], request: ChatRequest, protocol: str) -> dict[str, Any]:
    """``body`` (``request`` written in ``protocol``) with the request's extra fields
    added, when they were written in that protocol: vendor extensions reach the server
    that understands them."""
    if request.extra and request.extra_protocol == protocol:
        for key, value in request.extra.items():
            body.setdefault(key, value)
    return body


def check_tool_choice(choice: str | None, tools: list[ToolSpec], where: str) -> None:
    """A tool choice must have tools to choose from, and a named tool must be one."""
    if choice is None or (choice == "none" and not tools):
        return
    if not tools:
        raise RequestError(f"{where} is only allowed when tools are given", param=where)
    if choice not in ("auto", "none", "required") and all(t.name != choice for t in tools):
        raise RequestError(f"{where} names {choice!r}, which is not one of the tools", param=where)


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


def _openai_content(content: Any, where: str, *, images: bool = True) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    if not isinstance(content, list):
        raise RequestError(
            f"{where} must be a string or a list of content parts, not {json_kind(content)}",
            param=where,
        )
    parts: list[Part] = []
    for i, raw in enumerate(content):
        pwhere = f"{where}[{i}]"
        item = read_object(raw, pwhere)
        kind = item.get("type")
        if kind == "text":
            parts.append(TextPart(read_str(item.get("text"), f"{pwhere}.text")))
        elif kind == "image_url" and images:
            image = read_object(item.get("image_url"), f"{pwhere}.image_url")
            url = read_str(image.get("url"), f"{pwhere}.image_url.url")
            if url.startswith("data:") and ";base64," in url:
                media_type, _, data = url[5:].partition(";base64,")
                parts.append(ImagePart(media_type=media_type, data=data))
            else:
                parts.append(ImagePart(url=url))
        elif kind == "refusal" and not images:  # an assistant turn's earlier refusal
            parts.append(TextPart(read_str(item.get("refusal"), f"{pwhere}.refusal")))
        else:
            allowed = "text or image_url" if images else "text or refusal"
            raise RequestError(
                f"{pwhere}.type must be {allowed} here, not {json_kind(kind)}",
                param=f"{pwhere}.type",
            )
    return parts


def _openai_text(content: Any, where: str) -> str:
    return "".join(
        p.text for p in _openai_content(content, where, images=False) if isinstance(p, TextPart)
    )


def _required(msg: Mapping[str, Any], key: str, where: str) -> Any:
    value = msg.get(key)
    if value is None:
        raise RequestError(f"{where}.{key} is required", param=f"{where}.{key}")
    return value


_OPENAI_ROLES = ("system", "developer", "user", "assistant", "tool")


def _openai_message(
    msg: Mapping[str, Any], where: str, system: list[str], messages: list[ChatMessage]
) -> None:
    role = msg.get("role")
    if role in ("system", "developer"):
        system.append(_openai_text(_required(msg, "content", where), f"{where}.content"))
    elif role == "user":
        content = _required(msg, "content", where)
        messages.append(ChatMessage("user", _openai_content(content, f"{where}.content")))
    elif role == "assistant":
        raw_calls = msg.get("tool_calls")
        content = msg.get("content")
        if content is None and not raw_calls:
            raise RequestError(
                f"{where}.content is required unless tool_calls are given",
                param=f"{where}.content",
            )
        parts: list[Part] = []
        if content is not None:
            parts.extend(_openai_content(content, f"{where}.content", images=False))
        for j, raw_call in enumerate(read_list(raw_calls or [], f"{where}.tool_calls")):
            cwhere = f"{where}.tool_calls[{j}]"
            call = read_object(raw_call, cwhere)
            if call.get("type", "function") != "function":
                raise RequestError(f"{cwhere}.type must be 'function'", param=f"{cwhere}.type")
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
        content = _required(msg, "content", where)
        text = content if isinstance(content, str) else _openai_text(content, f"{where}.content")
        part = ToolResultPart(read_str(msg.get("tool_call_id"), f"{where}.tool_call_id"), text)
        # Results of parallel calls travel together in one user turn.
        last = messages[-1] if messages else None
        if last and last.role == "user" and all(isinstance(p, ToolResultPart) for p in last.parts):
            last.parts.append(part)
        else:
            messages.append(ChatMessage("user", [part]))
    else:
        raise RequestError(
            f"{where}.role must be one of {', '.join(_OPENAI_ROLES)}, not {json_kind(role)}",
            param=f"{where}.role",
        )


def _openai_tools(raw: Any) -> list[ToolSpec]:
    tools: list[ToolSpec] = []
    for i, raw_tool in enumerate(read_list(raw, "tools") if raw is not None else []):
        where = f"tools[{i}]"
        tool = read_object(raw_tool, where)
        if tool.get("type") != "function":
            raise RequestError(
                f"{where}.type must be 'function', not {json_kind(tool.get('type'))}",
                param=f"{where}.type",
            )
        function = read_object(tool.get("function"), f"{where}.function")
        params = function.get("parameters")
        tools.append(
            ToolSpec(
                name=read_tool_name(function.get("name"), f"{where}.function.name"),
                description=opt_str(function, "description", f"{where}.function.description"),
                parameters=(
                    {"type": "object", "properties": {}}
                    if params is None
                    else dict(read_object(params, f"{where}.function.parameters"))
                ),
                strict=opt_bool(function, "strict", f"{where}.function.strict"),
            )
        )
    return tools


def _openai_tool_choice(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        if raw not in ("auto", "none", "required"):
            raise RequestError(
                f"tool_choice must be auto, none, required or a function, not {raw[:40]!r}",
                param="tool_choice",
            )
        return raw
    choice = read_object(raw, "tool_choice")
    if choice.get("type") != "function":
        raise RequestError("tool_choice.type must be 'function'", param="tool_choice.type")
    return read_str(
        read_object(choice.get("function"), "tool_choice.function").get("name"),
        "tool_choice.function.name",
    )


def _logit_bias(body: Mapping[str, Any], key: str) -> None:
    for token, bias in read_object(body[key], key).items():
        opt_number({token: bias}, token, -100, 100, f"{key}[{token[:20]}]")


# Fields of the chat-completions API that ChatRequest does not model: checked as the
# API checks them, then carried in ChatRequest.extra.
_OPENAI_CHECKS: dict[str, Check] = {
    "frequency_penalty": number_check(-2, 2),
    "presence_penalty": number_check(-2, 2),
    "logprobs": bool_check,
    "top_logprobs": int_check(0, 20),
    "logit_bias": _logit_bias,
    "user": str_check,
    "store": bool_check,
    "service_tier": str_check,
    "prediction": object_check,
    "audio": object_check,
}
_OPENAI_KNOWN = frozenset(
    {
        "model",
        "messages",
        "n",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "tools",
        "tool_choice",
        "stream",
        "stream_options",
        "parallel_tool_calls",
        "reasoning_effort",
        "response_format",
        "metadata",
        "seed",
    }
)
OPENAI_MAX_STOP = 4
"""The chat-completions API takes at most this many stop sequences."""


def _stream_options(body: Mapping[str, Any], stream: bool) -> bool:
    """Whether ``stream_options`` asks for usage (allowed only on a streamed request)."""
    raw = body.get("stream_options")
    if raw is None:
        return False
    options = read_object(raw, "stream_options")
    if not stream:
        raise RequestError(
            "stream_options is only allowed when stream is true", param="stream_options"
        )
    return bool(opt_bool(options, "include_usage", "stream_options.include_usage"))


def from_openai(body: Mapping[str, Any]) -> ChatRequest:
    """Read an OpenAI chat-completions request body, checking types and ranges as the
    API does (a :class:`RequestError` names the parameter). Fields outside
    :class:`ChatRequest` go to :attr:`ChatRequest.extra`."""
    body = read_object(body, "body")
    model = _model(body)
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise RequestError("messages must be a non-empty list", param="messages")
    n = opt_int(body, "n", 1, 128)
    if n not in (None, 1):
        raise RequestError("only n=1 is supported", param="n")
    system: list[str] = []
    messages: list[ChatMessage] = []
    for i, raw in enumerate(raw_messages):
        _openai_message(read_object(raw, f"messages[{i}]"), f"messages[{i}]", system, messages)
    tools = _openai_tools(body.get("tools"))
    tool_choice = _openai_tool_choice(body.get("tool_choice"))
    check_tool_choice(tool_choice, tools, "tool_choice")
    stream = bool(opt_bool(body, "stream"))
    include_usage = _stream_options(body, stream)
    completion_tokens = opt_positive_int(body, "max_completion_tokens")
    max_tokens = completion_tokens or opt_positive_int(body, "max_tokens")
    stop = _stop_list(body.get("stop"), "stop")
    if len(stop) > OPENAI_MAX_STOP:
        raise RequestError(
            f"stop takes at most {OPENAI_MAX_STOP} sequences, not {len(stop)}", param="stop"
        )
    raw_format = body.get("response_format")
    response_format = None
    if raw_format is not None:
        fmt = read_object(raw_format, "response_format")
        response_format = read_json_format(
            fmt.get("type"), fmt.get("json_schema"), "response_format"
        )
    check_fields(body, _OPENAI_CHECKS)
    return ChatRequest(
        model=model,
        messages=messages,
        system="\n\n".join(system) if system else None,
        max_tokens=max_tokens,
        temperature=opt_number(body, "temperature", 0, 2),
        top_p=opt_number(body, "top_p", 0, 1),
        stop=stop,
        tools=tools,
        tool_choice=tool_choice,
        stream=stream,
        include_usage=include_usage,
        parallel_tool_calls=opt_bool(body, "parallel_tool_calls"),
        reasoning_effort=read_effort(body.get("reasoning_effort"), "reasoning_effort"),
        response_format=response_format,
        metadata=read_metadata(body.get("metadata")),
        seed=opt_int(body, "seed"),
        extra=extra_fields(body, _OPENAI_KNOWN),
        extra_protocol="openai",
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
        raise RequestError(
            f"{where} must be a string or a list of content blocks, not {json_kind(content)}",
            param=where,
        )
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
                    is_error=bool(opt_bool(block, "is_error", f"{bwhere}.is_error")),
                )
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # earlier reasoning is not replayed across protocols
        else:
            raise RequestError(
                f"{bwhere}.type must be text, image, tool_use, tool_result or thinking,"
                f" not {json_kind(kind)}",
                param=f"{bwhere}.type",
            )
    return parts


ANTHROPIC_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")
"""What the Messages API accepts as a tool name."""
ANTHROPIC_MIN_THINKING = 1024
"""The smallest thinking budget the Messages API takes."""

_ANTHROPIC_CHECKS: dict[str, Check] = {
    "top_k": int_check(0),
    "service_tier": str_check,
    "container": str_check,
}
_ANTHROPIC_KNOWN = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "temperature",
        "top_p",
        "stop_sequences",
        "tools",
        "tool_choice",
        "stream",
        "thinking",
        "metadata",
    }
)


def _anthropic_tools(raw: Any) -> list[ToolSpec]:
    tools: list[ToolSpec] = []
    for i, raw_tool in enumerate(read_list(raw, "tools") if raw is not None else []):
        where = f"tools[{i}]"
        tool = read_object(raw_tool, where)
        if tool.get("type", "custom") != "custom":
            raise RequestError(
                f"{where}.type {str(tool.get('type'))[:60]!r} is not supported: only custom"
                " tools can be carried (server tools run inside the API)",
                param=f"{where}.type",
            )
        tools.append(
            ToolSpec(
                name=read_tool_name(tool.get("name"), f"{where}.name", ANTHROPIC_TOOL_NAME),
                description=opt_str(tool, "description", f"{where}.description"),
                parameters=dict(
                    read_object(_required(tool, "input_schema", where), f"{where}.input_schema")
                ),
            )
        )
    return tools


def _anthropic_tool_choice(raw: Any) -> tuple[str | None, bool | None]:
    """The tool choice and whether parallel calls are allowed (None: unsaid)."""
    if raw is None:
        return None, None
    choice = read_object(raw, "tool_choice")
    kind = choice.get("type")
    mapping = {"auto": "auto", "any": "required", "none": "none"}
    if kind in mapping:
        tool_choice = mapping[kind]
    elif kind == "tool":
        tool_choice = read_str(choice.get("name"), "tool_choice.name")
    else:
        raise RequestError(
            f"tool_choice.type must be auto, any, tool or none, not {json_kind(kind)}",
            param="tool_choice.type",
        )
    disable = opt_bool(choice, "disable_parallel_tool_use", "tool_choice.disable_parallel_tool_use")
    return tool_choice, None if disable is None else not disable


def _thinking_budget(raw: Any, max_tokens: int) -> int | None:
    if raw is None:
        return None
    thinking = read_object(raw, "thinking")
    kind = thinking.get("type")
    if kind == "disabled":
        return None
    if kind != "enabled":
        raise RequestError(
            f"thinking.type must be enabled or disabled, not {json_kind(kind)}",
            param="thinking.type",
        )
    budget = opt_int(
        thinking, "budget_tokens", ANTHROPIC_MIN_THINKING, where="thinking.budget_tokens"
    )
    if budget is None:
        raise RequestError("thinking.budget_tokens is required", param="thinking.budget_tokens")
    if budget >= max_tokens:
        raise RequestError(
            f"max_tokens must be greater than thinking.budget_tokens ({budget})",
            param="max_tokens",
        )
    return budget


def _anthropic_metadata(raw: Any) -> dict[str, str] | None:
    metadata = read_metadata(raw)
    if metadata is not None:
        unknown = sorted(set(metadata) - {"user_id"})
        if unknown:
            raise RequestError(
                f"metadata takes only user_id, not {unknown[0][:40]!r}", param="metadata"
            )
    return metadata


def from_anthropic(body: Mapping[str, Any]) -> ChatRequest:
    """Read an Anthropic messages request body, checking types and ranges as the API
    does (a :class:`RequestError` names the parameter). Fields outside
    :class:`ChatRequest` go to :attr:`ChatRequest.extra`."""
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
            raise RequestError(
                f"{where}.role must be user or assistant, not {json_kind(role)}",
                param=f"{where}.role",
            )
        content = _required(msg, "content", where)
        messages.append(ChatMessage(role, _anthropic_blocks(content, f"{where}.content")))
    raw_system = body.get("system")
    system: str | None = None
    if isinstance(raw_system, str):
        system = raw_system or None
    elif raw_system is not None:
        blocks = _anthropic_blocks(read_list(raw_system, "system"), "system")
        if not all(isinstance(p, TextPart) for p in blocks):
            raise RequestError("system takes only text blocks", param="system")
        system = "".join(p.text for p in blocks if isinstance(p, TextPart))
    tools = _anthropic_tools(body.get("tools"))
    tool_choice, parallel = _anthropic_tool_choice(body.get("tool_choice"))
    check_tool_choice(tool_choice, tools, "tool_choice")
    raw_stop = body.get("stop_sequences")
    stop = (
        []
        if raw_stop is None
        else _stop_list(read_list(raw_stop, "stop_sequences"), "stop_sequences")
    )
    budget = _thinking_budget(body.get("thinking"), max_tokens)
    check_fields(body, _ANTHROPIC_CHECKS)
    return ChatRequest(
        model=model,
        messages=messages,
        system=system,
        max_tokens=max_tokens,
        temperature=opt_number(body, "temperature", 0, 1),
        top_p=opt_number(body, "top_p", 0, 1),
        stop=stop,
        tools=tools,
        tool_choice=tool_choice,
        stream=bool(opt_bool(body, "stream")),
        include_usage=True,  # Anthropic streams always carry usage
        parallel_tool_calls=parallel,
        reasoning_budget=budget,
        reasoning_effort=effort_for_budget(budget) if budget is not None else None,
        metadata=_anthropic_metadata(body.get("metadata")),
        extra=extra_fields(body, _ANTHROPIC_KNOWN),
        extra_protocol="anthropic",
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
