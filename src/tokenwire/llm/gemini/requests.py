"""Gemini ``generateContent`` request bodies to and from
:class:`~tokenwire.llm.requests.ChatRequest` (:func:`from_gemini` reads what a client
sends, :func:`to_gemini` writes what an upstream gets).

Fields are read in camelCase (the REST API's spelling) or snake_case (which the API's
JSON parser also takes, and which the ``google-genai`` SDK sends for some nested
fields); they are written in camelCase.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from tokenwire.llm.gemini.objects import SYNTHETIC_ID, synthetic_id
from tokenwire.llm.requests import (
    EFFORT_BUDGETS,
    REASONING_EFFORTS,
    ChatMessage,
    ChatRequest,
    Check,
    ImagePart,
    Part,
    RequestError,
    ResponseFormat,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    ToolSpec,
    check_tool_choice,
    effort_for_budget,
    json_kind,
    opt_bool,
    opt_int,
    opt_number,
    opt_positive_int,
    opt_str,
    read_list,
    read_object,
    read_str,
    read_tool_name,
)

__all__ = [
    "GEMINI_MAX_STOP",
    "GEMINI_TOOL_NAME",
    "SKIP_SIGNATURE",
    "from_gemini",
    "json_schema",
    "to_gemini",
]

GEMINI_MAX_STOP = 5
"""The API takes at most this many stop sequences."""
GEMINI_TOOL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}")
"""What the API accepts as a function name."""
SKIP_SIGNATURE = "skip_thought_signature_validator"
"""The ``thoughtSignature`` Google documents for function calls whose real signature
is not at hand (Gemini 3 models refuse earlier calls without one)."""
_SIGNED_MODELS = re.compile(r"(?:models/)?gemini-(?:[3-9]|[1-9][0-9])")

_SNAKE = re.compile(r"(?<!^)([A-Z])")


def _snake(name: str) -> str:
    return _SNAKE.sub(r"_\1", name).lower()


def _key(obj: Mapping[str, Any], name: str) -> str:
    """The spelling of field ``name`` (camelCase) that ``obj`` uses: ``name``, else its
    snake_case form if present, else ``name``."""
    if name in obj:
        return name
    snake = _snake(name)
    return snake if snake in obj else name


def _get(obj: Mapping[str, Any], name: str, where: str) -> tuple[Any, str]:
    """The value of field ``name`` in either spelling, and its path for messages."""
    key = _key(obj, name)
    return obj.get(key), f"{where}.{key}" if where else key


def _both(*names: str) -> frozenset[str]:
    return frozenset(n for name in names for n in (name, _snake(name)))


# --- reading -------------------------------------------------------------------------

_TOP_KNOWN = _both(
    "model", "contents", "systemInstruction", "tools", "toolConfig", "generationConfig"
)
_GEN_MODELLED = _both(
    "temperature",
    "topP",
    "maxOutputTokens",
    "stopSequences",
    "candidateCount",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "seed",
    "thinkingConfig",
)


def _number(low: float, high: float) -> Check:
    return lambda body, key, where: opt_number(body, key, low, high, where)


def _integer(low: int | None = None, high: int | None = None) -> Check:
    return lambda body, key, where: opt_int(body, key, low, high, where)


def _boolean(body: Mapping[str, Any], key: str, where: str) -> None:
    opt_bool(body, key, where)


def _string(body: Mapping[str, Any], key: str, where: str) -> None:
    opt_str(body, key, where)


def _obj(body: Mapping[str, Any], key: str, where: str) -> None:
    read_object(body[key], where)


def _strings(body: Mapping[str, Any], key: str, where: str) -> None:
    for i, item in enumerate(read_list(body[key], where)):
        read_str(item, f"{where}[{i}]")


def _objects(body: Mapping[str, Any], key: str, where: str) -> None:
    for i, item in enumerate(read_list(body[key], where)):
        read_object(item, f"{where}[{i}]")


# Fields ChatRequest does not model, checked as the API checks them, then carried in
# ChatRequest.extra (generationConfig's under extra["generationConfig"]).
_TOP_CHECKS: dict[str, Check] = {
    "safetySettings": _objects,
    "cachedContent": _string,
    "labels": _obj,
}
_GEN_CHECKS: dict[str, Check] = {
    "topK": _integer(1),
    "presencePenalty": _number(-2, 2),
    "frequencyPenalty": _number(-2, 2),
    "responseLogprobs": _boolean,
    "logprobs": _integer(0, 20),
    "responseModalities": _strings,
    "mediaResolution": _string,
    "speechConfig": _obj,
    "enableEnhancedCivicAnswers": _boolean,
    "audioTimestamp": _boolean,
}


def _unmodelled(
    obj: Mapping[str, Any], known: frozenset[str], checks: Mapping[str, Check], where: str
) -> dict[str, Any]:
    """The fields of ``obj`` outside ``known``, checked by ``checks`` (fields named there
    are returned in camelCase, others as written)."""
    out: dict[str, Any] = {}
    for name, check in checks.items():
        key = _key(obj, name)
        if obj.get(key) is not None:
            check(obj, key, f"{where}.{key}" if where else key)
            out[name] = obj[key]
    spelled = {_snake(name) for name in checks} | set(checks)
    for key, value in obj.items():
        if key not in known and key not in spelled:
            out[key] = value
    return out


@dataclass(slots=True)
class _Call:
    id: str
    name: str
    answered: bool = False


@dataclass(slots=True)
class _Calls:
    """The function calls of the conversation so far, to pair responses with."""

    turns: list[list[_Call]] = field(default_factory=list)
    count: int = 0  # calls so far (a call without an id is named by its number)

    def answer(self, name: str, id: str | None, where: str) -> str:
        """The id of the call a ``functionResponse`` answers: by ``id`` when given, else
        the first unanswered call named ``name``, latest model turn first."""
        for turn in reversed(self.turns):
            for call in turn:
                if (call.id == id) if id is not None else (call.name == name and not call.answered):
                    call.answered = True
                    return call.id
        if id is not None:
            raise RequestError(
                f"{where}.id {id[:40]!r} answers no earlier functionCall", param=f"{where}.id"
            )
        raise RequestError(
            f"{where}.name {name[:64]!r}: no earlier functionCall of that name is left to answer",
            param=f"{where}.name",
        )


def _image(mime: Any, mime_where: str) -> str | None:
    if mime is None:
        return None
    text = read_str(mime, mime_where)
    if not text.startswith("image/"):
        raise RequestError(
            f"{mime_where} {text[:60]!r} cannot be carried: only images can",
            param=mime_where,
        )
    return text


def _response_text(response: Mapping[str, Any]) -> tuple[str, bool]:
    """A ``functionResponse.response`` as a tool result's text: the ``output`` (or, for a
    failure, ``error``) string when that is all it holds, else the object as JSON."""
    if len(response) == 1:
        ((key, value),) = response.items()
        if key in ("output", "error") and isinstance(value, str):
            return value, key == "error"
    return orjson.dumps(dict(response)).decode(), False


# Part fields that only say something about a part (not what it is).
_PART_META = _both("thought", "thoughtSignature", "partMetadata", "mediaResolution")


def _parts(
    raw: list[Any], where: str, model: bool, calls: _Calls
) -> tuple[list[Part], list[_Call]]:
    parts: list[Part] = []
    made: list[_Call] = []
    for j, raw_part in enumerate(raw):
        pwhere = f"{where}[{j}]"
        part = read_object(raw_part, pwhere)
        thought, twhere = _get(part, "thought", pwhere)
        if thought is not None and not isinstance(thought, bool):
            raise RequestError(
                f"{twhere} must be a boolean, not {json_kind(thought)}", param=twhere
            )
        signature, swhere = _get(part, "thoughtSignature", pwhere)
        if signature is not None:
            read_str(signature, swhere)
        kinds = [key for key, v in part.items() if v is not None and key not in _PART_META]
        if len(kinds) > 1:
            raise RequestError(
                f"{pwhere} must hold one kind of data, not {', '.join(sorted(kinds))}",
                param=pwhere,
            )
        if not kinds:
            continue  # nothing but a signature
        key = kinds[0]
        kwhere = f"{pwhere}.{key}"
        value = part[key]
        if key == "text":
            text = read_str(value, kwhere)
            if text and not thought:  # earlier thoughts are not replayed
                parts.append(TextPart(text))
        elif key in ("inlineData", "inline_data"):
            blob = read_object(value, kwhere)
            mime, mwhere = _get(blob, "mimeType", kwhere)
            data, dwhere = _get(blob, "data", kwhere)
            if mime is None:
                raise RequestError(f"{mwhere} is required", param=mwhere)
            parts.append(ImagePart(media_type=_image(mime, mwhere), data=read_str(data, dwhere)))
        elif key in ("fileData", "file_data"):
            ref = read_object(value, kwhere)
            uri, uwhere = _get(ref, "fileUri", kwhere)
            mime, mwhere = _get(ref, "mimeType", kwhere)
            _image(mime, mwhere)
            parts.append(ImagePart(url=read_str(uri, uwhere)))
        elif key in ("functionCall", "function_call"):
            if not model:
                raise RequestError(f"{kwhere}: function calls belong in model turns", param=kwhere)
            call = read_object(value, kwhere)
            name, nwhere = _get(call, "name", kwhere)
            args, awhere = _get(call, "args", kwhere)
            id, iwhere = _get(call, "id", kwhere)
            name = read_str(name, nwhere)
            if args is not None and not isinstance(args, Mapping):
                raise RequestError(
                    f"{awhere} must be an object, not {json_kind(args)}", param=awhere
                )
            call_id = synthetic_id(calls.count) if id is None else read_str(id, iwhere)
            calls.count += 1
            made.append(_Call(call_id, name))
            parts.append(ToolCallPart(call_id, name, orjson.dumps(dict(args or {})).decode()))
        elif key in ("functionResponse", "function_response"):
            if model:
                raise RequestError(
                    f"{kwhere}: function responses belong in user turns", param=kwhere
                )
            response = read_object(value, kwhere)
            name, nwhere = _get(response, "name", kwhere)
            id, iwhere = _get(response, "id", kwhere)
            body, bwhere = _get(response, "response", kwhere)
            inner, pw = _get(response, "parts", kwhere)
            if inner:
                raise RequestError(f"{pw} cannot be carried: a tool result is text", param=pw)
            name = read_str(name, nwhere)
            if id is not None:
                read_str(id, iwhere)
            text, is_error = _response_text(read_object({} if body is None else body, bwhere))
            parts.append(ToolResultPart(calls.answer(name, id, kwhere), text, is_error))
        else:
            raise RequestError(
                f"{kwhere} is not supported: parts carry text, inlineData, fileData (images),"
                " functionCall and functionResponse",
                param=kwhere,
            )
    return parts, made


def _contents(raw: Any) -> list[ChatMessage]:
    if not isinstance(raw, list) or not raw:
        raise RequestError("contents must be a non-empty list", param="contents")
    messages: list[ChatMessage] = []
    calls = _Calls()
    for i, raw_content in enumerate(raw):
        where = f"contents[{i}]"
        content = read_object(raw_content, where)
        role = content.get("role") or "user"
        if role not in ("user", "model", "function"):
            raise RequestError(
                f"{where}.role must be user or model, not {json_kind(role)}",
                param=f"{where}.role",
            )
        raw_parts = content.get("parts")
        if raw_parts is None:
            raise RequestError(f"{where}.parts is required", param=f"{where}.parts")
        parts, made = _parts(
            read_list(raw_parts, f"{where}.parts"), f"{where}.parts", role == "model", calls
        )
        if made:
            calls.turns.append(made)
        messages.append(ChatMessage("assistant" if role == "model" else "user", parts))
    return messages


def _system(raw: Any) -> str | None:
    if raw is None:
        return None
    where = "systemInstruction"
    content = read_object(raw, where)
    texts = []
    for j, raw_part in enumerate(read_list(content.get("parts") or [], f"{where}.parts")):
        part = read_object(raw_part, f"{where}.parts[{j}]")
        texts.append(read_str(part.get("text"), f"{where}.parts[{j}].text"))
    return "\n\n".join(texts) or None


_OPENAPI_TYPES = frozenset(
    {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL", "TYPE_UNSPECIFIED"}
)


def json_schema(schema: Any) -> Any:
    """A Gemini ``Schema`` (the OpenAPI subset of ``parameters`` and ``responseSchema``)
    as JSON Schema: type names in lower case, ``nullable`` as a ``"null"`` type,
    ``propertyOrdering`` and ``format: enum`` left out."""
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("propertyOrdering", "property_ordering", "nullable"):
            continue
        if key == "type" and isinstance(value, str) and value.upper() in _OPENAPI_TYPES:
            if value.upper() != "TYPE_UNSPECIFIED":
                out["type"] = value.lower()
        elif key == "format" and value == "enum":
            continue
        elif key == "properties" and isinstance(value, Mapping):
            out[key] = {name: json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "not"):
            out[key] = json_schema(value)
        elif key in ("anyOf", "any_of", "oneOf", "allOf") and isinstance(value, list):
            out["anyOf" if key == "any_of" else key] = [json_schema(sub) for sub in value]
        else:
            name, value = _schema_field(key, value)
            out[name] = value
    if schema.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


_SCHEMA_CAMEL = {
    "max_items": "maxItems",
    "min_items": "minItems",
    "max_length": "maxLength",
    "min_length": "minLength",
    "max_properties": "maxProperties",
    "min_properties": "minProperties",
}
_SCHEMA_COUNTS = frozenset(_SCHEMA_CAMEL.values())


def _schema_field(key: str, value: Any) -> tuple[str, Any]:
    """A schema field in JSON Schema's spelling; counts (int64, which protobuf JSON
    writes as strings) as numbers."""
    key = _SCHEMA_CAMEL.get(key, key)
    if key in _SCHEMA_COUNTS and isinstance(value, str) and value.isdigit():
        return key, int(value)
    return key, value


def _schema(owner: Mapping[str, Any], where: str, names: tuple[str, str]) -> dict[str, Any] | None:
    """The JSON Schema of ``owner``: its ``names[1]`` (JSON Schema) or ``names[0]``
    (a Gemini Schema, converted), which exclude each other."""
    openapi, owhere = _get(owner, names[0], where)
    direct, dwhere = _get(owner, names[1], where)
    if openapi is not None and direct is not None:
        raise RequestError(f"{owhere} and {dwhere} cannot both be given", param=dwhere)
    if direct is not None:
        return dict(read_object(direct, dwhere))
    if openapi is not None:
        return dict(json_schema(read_object(openapi, owhere)))
    return None


def _tools(raw: Any) -> list[ToolSpec]:
    tools: list[ToolSpec] = []
    for i, raw_tool in enumerate(read_list(raw, "tools") if raw is not None else []):
        where = f"tools[{i}]"
        tool = read_object(raw_tool, where)
        for key, value in tool.items():
            if key not in ("functionDeclarations", "function_declarations"):
                if value is None:
                    continue
                raise RequestError(
                    f"{where}.{key} is not supported: only functionDeclarations can be"
                    " carried (Google's own tools run inside the API)",
                    param=f"{where}.{key}",
                )
        decls, dwhere = _get(tool, "functionDeclarations", where)
        for j, raw_decl in enumerate(read_list(decls, dwhere) if decls is not None else []):
            fwhere = f"{dwhere}[{j}]"
            decl = read_object(raw_decl, fwhere)
            parameters = _schema(decl, fwhere, ("parameters", "parametersJsonSchema"))
            tools.append(
                ToolSpec(
                    name=read_tool_name(decl.get("name"), f"{fwhere}.name", GEMINI_TOOL_NAME),
                    description=opt_str(decl, "description", f"{fwhere}.description"),
                    parameters=(
                        {"type": "object", "properties": {}} if parameters is None else parameters
                    ),
                )
            )
    return tools


_MODES = ("AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED")


def _tool_choice(raw: Any, tools: list[ToolSpec]) -> tuple[str | None, list[ToolSpec]]:
    """The tool choice of ``toolConfig``, and the tools it leaves to choose from
    (``allowedFunctionNames`` of several tools narrows the tools down to them)."""
    if raw is None:
        return None, tools
    config = read_object(raw, "toolConfig")
    raw_fc, fwhere = _get(config, "functionCallingConfig", "toolConfig")
    if raw_fc is None:
        return None, tools
    fc = read_object(raw_fc, fwhere)
    mode, mwhere = _get(fc, "mode", fwhere)
    if mode is not None and (not isinstance(mode, str) or mode.upper() not in _MODES):
        raise RequestError(
            f"{mwhere} must be AUTO, ANY, NONE or VALIDATED, not {json_kind(mode)}", param=mwhere
        )
    mode = None if mode is None or mode.upper() == "MODE_UNSPECIFIED" else mode.upper()
    raw_names, nwhere = _get(fc, "allowedFunctionNames", fwhere)
    names = (
        [read_str(n, f"{nwhere}[{k}]") for k, n in enumerate(read_list(raw_names, nwhere))]
        if (raw_names is not None)
        else []
    )
    choice = {None: None, "AUTO": "auto", "VALIDATED": "auto", "ANY": "required", "NONE": "none"}[
        mode
    ]
    if not names:
        check_tool_choice(choice, tools, mwhere)
        return choice, tools
    if mode not in ("ANY", "VALIDATED"):
        raise RequestError(f"{nwhere} is only allowed with mode ANY or VALIDATED", param=nwhere)
    known = {t.name for t in tools}
    for k, name in enumerate(names):
        if name not in known:
            raise RequestError(
                f"{nwhere}[{k}] names {name[:64]!r}, which is not one of the functions",
                param=f"{nwhere}[{k}]",
            )
    if mode == "ANY" and len(set(names)) == 1:
        return names[0], tools
    return choice, [t for t in tools if t.name in names]


_LEVELS = {level.upper(): level for level in REASONING_EFFORTS}


def _thinking(raw: Any, where: str) -> tuple[int | None, str | None]:
    """``thinkingConfig`` as a thinking budget and a reasoning effort."""
    config = read_object(raw, where)
    budget_key = _key(config, "thinkingBudget")
    budget = opt_int(config, budget_key, -1, where=f"{where}.{budget_key}")
    include_key = _key(config, "includeThoughts")
    opt_bool(config, include_key, f"{where}.{include_key}")
    level, lwhere = _get(config, "thinkingLevel", where)
    effort = None
    if level is not None:
        if not isinstance(level, str) or level.upper() not in _LEVELS:
            raise RequestError(
                f"{lwhere} must be one of MINIMAL, LOW, MEDIUM, HIGH, not {json_kind(level)}",
                param=lwhere,
            )
        effort = _LEVELS[level.upper()]
    if budget is not None and budget > 0:
        return budget, effort or effort_for_budget(budget)
    return None, effort


def _thinking_config(budget: int | None, effort: str | None) -> dict[str, Any] | None:
    """What :func:`to_gemini` writes as ``thinkingConfig`` for a budget and effort."""
    if budget is None and effort is not None:
        budget = EFFORT_BUDGETS[effort]
    if budget is None:
        return None
    return {"thinkingBudget": budget, "includeThoughts": True}


_THINKING_CAMEL = {
    "thinking_budget": "thinkingBudget",
    "include_thoughts": "includeThoughts",
    "thinking_level": "thinkingLevel",
}


@dataclass(slots=True)
class _Generation:
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    response_format: ResponseFormat | None = None
    seed: int | None = None
    budget: int | None = None
    effort: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _generation(raw: Any, key: str) -> _Generation:
    out = _Generation()
    if raw is None:
        return out
    config = read_object(raw, key)

    def path(name: str) -> tuple[str, str]:
        k = _key(config, name)
        return k, f"{key}.{k}"

    k, w = path("temperature")
    out.temperature = opt_number(config, k, 0, 2, w)
    k, w = path("topP")
    out.top_p = opt_number(config, k, 0, 1, w)
    k, w = path("maxOutputTokens")
    out.max_tokens = opt_positive_int(config, k, w)
    k, w = path("candidateCount")
    if opt_int(config, k, 1, where=w) not in (None, 1):
        raise RequestError(f"only {w} 1 is supported", param=w)
    k, w = path("seed")
    out.seed = opt_int(config, k, where=w)
    k, w = path("stopSequences")
    if config.get(k) is not None:
        out.stop = [read_str(s, f"{w}[{n}]") for n, s in enumerate(read_list(config[k], w))]
        if len(out.stop) > GEMINI_MAX_STOP:
            raise RequestError(
                f"{w} takes at most {GEMINI_MAX_STOP} sequences, not {len(out.stop)}", param=w
            )
    k, w = path("responseMimeType")
    mime = opt_str(config, k, w)
    schema = _schema(config, key, ("responseSchema", "responseJsonSchema"))
    if mime not in (None, "text/plain", "application/json"):
        raise RequestError(
            f"{w} {mime[:60]!r} is not supported: text/plain or application/json", param=w
        )
    if mime == "application/json":
        out.response_format = (
            ResponseFormat("json_object")
            if schema is None
            else ResponseFormat("json_schema", schema=schema)
        )
    elif schema is not None:
        raise RequestError(f"a response schema needs {w} application/json", param=w)
    k, w = path("thinkingConfig")
    thinking = config.get(k)
    if thinking is not None:
        out.budget, out.effort = _thinking(thinking, w)
        given = {_THINKING_CAMEL.get(name, name): v for name, v in read_object(thinking, w).items()}
        if given != _thinking_config(out.budget, out.effort):
            # What the neutral fields do not say (no thoughts shown, dynamic or no
            # thinking, a level): forwarded as sent to a Gemini upstream.
            out.extra["thinkingConfig"] = given
    out.extra.update(_unmodelled(config, _GEN_MODELLED, _GEN_CHECKS, key))
    return out


def from_gemini(
    body: Mapping[str, Any], *, model: str | None = None, stream: bool = False
) -> ChatRequest:
    """Read a Gemini ``generateContent`` / ``streamGenerateContent`` request body.

    ``model`` is the one named in the URL (a leading ``models/`` is dropped; the body's
    own ``model`` is used without one), ``stream`` whether the method called was
    ``streamGenerateContent`` (the body does not say). ``contents``
    are the turns (roles ``user`` / ``model``; parts ``text``, ``inlineData`` and
    ``fileData`` images, ``functionCall``, ``functionResponse``; ``thought`` parts and
    signatures are skipped); a function call without an ``id`` gets a made-up one
    (``call_<n>``: the n-th call of the conversation, counting from 0) and a response
    without one answers the first unanswered earlier call of its name.
    ``systemInstruction`` is the system prompt, ``tools[].functionDeclarations`` the
    tools (``parameters`` is converted to JSON Schema, ``parametersJsonSchema`` taken as
    it is), ``toolConfig`` the tool choice (``ANY`` with one allowed name: that tool),
    ``generationConfig`` the sampling, stop sequences, structured output
    (``responseMimeType`` ``application/json``, with ``responseJsonSchema`` or
    ``responseSchema``) and thinking (``thinkingBudget`` -> budget and effort,
    ``thinkingLevel`` -> effort). Other fields (``safetySettings``,
    ``cachedContent``, ``topK``, penalties, ...) are checked and carried in
    :attr:`~ChatRequest.extra`, the unmodelled part of ``generationConfig`` under
    ``extra["generationConfig"]``. Raises :class:`RequestError` naming the field for
    wrong types and ranges and for what cannot be carried (Google's own tools, other
    part kinds, media other than images, more than one candidate)."""
    body = read_object(body, "body")
    if model is None:
        model = body.get("model")
    if isinstance(model, str) and model.startswith("models/"):
        model = model[len("models/") :]
    if not isinstance(model, str) or not model:
        raise RequestError("model is required and must be a non-empty string", param="model")
    contents, _ = _get(body, "contents", "")
    messages = _contents(contents)
    system_instruction, _ = _get(body, "systemInstruction", "")
    system = _system(system_instruction)
    raw_tools, _ = _get(body, "tools", "")
    tools = _tools(raw_tools)
    raw_config, _ = _get(body, "toolConfig", "")
    tool_choice, tools = _tool_choice(raw_config, tools)
    gen_key = _key(body, "generationConfig")
    gen = _generation(body.get(gen_key), gen_key)
    extra = _unmodelled(body, _TOP_KNOWN, _TOP_CHECKS, "")
    if gen.extra:
        extra["generationConfig"] = gen.extra
    return ChatRequest(
        model=model,
        messages=messages,
        system=system,
        max_tokens=gen.max_tokens,
        temperature=gen.temperature,
        top_p=gen.top_p,
        stop=gen.stop,
        tools=tools,
        tool_choice=tool_choice,
        stream=stream,
        include_usage=True,  # Gemini streams always carry usage
        reasoning_effort=gen.effort,
        reasoning_budget=gen.budget,
        response_format=gen.response_format,
        seed=gen.seed,
        extra=extra,
        extra_protocol="gemini",
    )


# --- writing -------------------------------------------------------------------------


def _media(part: ImagePart) -> dict[str, Any]:
    if part.url is None:
        return {"inlineData": {"mimeType": part.media_type, "data": part.data}}
    if part.url.startswith("data:") and ";base64," in part.url:
        media_type, _, data = part.url[5:].partition(";base64,")
        return {"inlineData": {"mimeType": media_type, "data": data}}
    ref: dict[str, Any] = {"fileUri": part.url}
    guessed, _ = mimetypes.guess_type(part.url.split("?", 1)[0])
    if guessed is not None and guessed.startswith("image/"):
        ref["mimeType"] = guessed
    return {"fileData": ref}


def _call_names(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """For each message, the names of the tool calls made before it, by call id (the
    latest call with an id wins)."""
    names: dict[str, str] = {}
    out = []
    for msg in messages:
        out.append(dict(names))
        for part in msg.parts:
            if isinstance(part, ToolCallPart):
                names[part.id] = part.name
    return out


def _gemini_part(part: Part, where: str, names: Mapping[str, str]) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"text": part.text}
    if isinstance(part, ImagePart):
        return _media(part)
    if isinstance(part, ToolCallPart):
        try:
            args = orjson.loads(part.arguments) if part.arguments.strip() else {}
        except orjson.JSONDecodeError:
            raise RequestError(
                f"{where}: the arguments of tool call {part.id[:40]!r} are not valid JSON",
                param=where,
            ) from None
        if type(args) is not dict:
            raise RequestError(
                f"{where}: the arguments of tool call {part.id[:40]!r} must be a JSON object",
                param=where,
            )
        call: dict[str, Any] = {"name": part.name, "args": args}
        if SYNTHETIC_ID.fullmatch(part.id) is None:
            call["id"] = part.id
        return {"functionCall": call}
    name = names.get(part.tool_call_id)
    if name is None:
        raise RequestError(
            f"{where}: tool result {part.tool_call_id[:40]!r} answers no earlier tool call"
            " (Gemini needs the function's name)",
            param=where,
        )
    response: dict[str, Any] = {
        "name": name,
        "response": {"error" if part.is_error else "output": part.content},
    }
    if SYNTHETIC_ID.fullmatch(part.tool_call_id) is None:
        response["id"] = part.tool_call_id
    return {"functionResponse": response}


def _contents_out(req: ChatRequest) -> list[dict[str, Any]]:
    signed = _SIGNED_MODELS.match(req.model) is not None
    contents: list[dict[str, Any]] = []
    for i, (msg, names) in enumerate(zip(req.messages, _call_names(req.messages), strict=True)):
        where = f"messages[{i}]"
        parts = [_gemini_part(p, where, names) for p in msg.parts]
        role = "model" if msg.role == "assistant" else "user"
        # Consecutive turns of one role go as one (the API wants them to alternate).
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    for content in contents:
        if not content["parts"]:
            content["parts"].append({"text": ""})  # the API refuses a turn without parts
        elif signed and content["role"] == "model":
            # Gemini 3 refuses earlier function calls without their thought signature,
            # which no other protocol keeps: Google's placeholder for that case.
            for part in content["parts"]:
                if "functionCall" in part:
                    part["thoughtSignature"] = SKIP_SIGNATURE
                    break
    return contents


def to_gemini(req: ChatRequest) -> dict[str, Any]:
    """Write a Gemini ``generateContent`` request body (the model and whether it streams
    go in the URL, not here). User and assistant turns become ``user`` / ``model``
    contents (consecutive turns of one role are merged), images ``inlineData`` (or
    ``fileData`` for a URL), tool calls ``functionCall`` parts and tool results
    ``functionResponse`` parts named after the call they answer, with the result as
    ``{"output": ...}`` (``{"error": ...}`` for a failure); made-up call ids (see
    :func:`from_gemini`) are left out. For Gemini 3 and later models the first function
    call of each model turn carries Google's placeholder thought signature. Tools go as
    ``functionDeclarations`` with ``parametersJsonSchema``; the tool choice as
    ``toolConfig.functionCallingConfig``; the rest in ``generationConfig`` (a reasoning
    effort as its thinking budget, with thoughts included). A request read from Gemini
    gets its unmodelled ``generationConfig`` fields back. ``parallel_tool_calls`` and
    ``metadata`` have no place and are left out. Raises :class:`RequestError` for more
    than five stop sequences and for a tool result no earlier tool call explains."""
    body: dict[str, Any] = {"contents": _contents_out(req)}
    if req.system:
        body["systemInstruction"] = {"parts": [{"text": req.system}]}
    if req.tools:
        declarations = []
        for tool in req.tools:
            decl: dict[str, Any] = {"name": tool.name}
            if tool.description:
                decl["description"] = tool.description
            decl["parametersJsonSchema"] = tool.parameters
            declarations.append(decl)
        body["tools"] = [{"functionDeclarations": declarations}]
    choice = req.tool_choice
    if choice is not None and (req.tools or choice != "none"):
        modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
        fc: dict[str, Any] = {"mode": modes.get(choice, "ANY")}
        if choice not in modes:
            fc["allowedFunctionNames"] = [choice]
        body["toolConfig"] = {"functionCallingConfig": fc}
    gen: dict[str, Any] = {}
    if req.stop:
        if len(req.stop) > GEMINI_MAX_STOP:
            raise RequestError(
                f"Gemini takes at most {GEMINI_MAX_STOP} stop sequences, not {len(req.stop)}",
                param="stop",
            )
        gen["stopSequences"] = list(req.stop)
    if req.max_tokens is not None:
        gen["maxOutputTokens"] = req.max_tokens
    if req.temperature is not None:
        gen["temperature"] = req.temperature
    if req.top_p is not None:
        gen["topP"] = req.top_p
    if req.seed is not None:
        gen["seed"] = req.seed
    fmt = req.response_format
    if fmt is not None:
        gen["responseMimeType"] = "application/json"
        if fmt.type == "json_schema" and fmt.schema is not None:
            gen["responseJsonSchema"] = fmt.schema
    thinking = _thinking_config(req.reasoning_budget, req.reasoning_effort)
    if thinking is not None:
        gen["thinkingConfig"] = thinking
    if req.extra_protocol == "gemini":
        extra = req.extra.get("generationConfig")
        if isinstance(extra, Mapping):
            gen.update(extra)
    if gen:
        body["generationConfig"] = gen
    return body
