"""JSON values that conform to a JSON Schema, for the demo model's tool calls and
structured output.

Covers what tool and response schemas use in practice (OpenAI strict schemas, pydantic's
``model_json_schema()``): ``type`` (one or a list), ``properties`` (all of them are
filled, so required ones always are), ``items`` and ``prefixItems``, ``minItems`` /
``maxItems``, ``enum``, ``const``, ``anyOf`` / ``oneOf`` / ``allOf``, local ``$ref``
(``#/$defs/...``, ``#/definitions/...``), numeric bounds (``minimum``, ``maximum``,
``exclusiveMinimum``, ``exclusiveMaximum``, ``multipleOf``), string lengths and the
common ``format`` values. ``pattern`` is not honoured (a value for an arbitrary
regular expression is out of scope). Recursive schemas end at a fixed depth with the
smallest value the schema allows. The same ``rng`` state gives the same value.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["value_for_schema"]

Words = Callable[[random.Random, int], str]
"""A phrase of about ``n`` words (the demo model passes its corpus)."""

_MAX_DEPTH = 6
_FORMATS: dict[str, Callable[[random.Random], str]] = {
    "date-time": lambda r: (
        f"2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T"
        f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00Z"
    ),
    "date": lambda r: f"2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
    "time": lambda r: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00",
    "email": lambda r: f"reader{r.randint(1, 999)}@example.com",
    "uri": lambda r: f"https://example.com/fables/{r.randint(1, 999)}",
    "url": lambda r: f"https://example.com/fables/{r.randint(1, 999)}",
    "uuid": lambda r: (
        f"{r.getrandbits(32):08x}-{r.getrandbits(16):04x}-4{r.getrandbits(12):03x}-8{r.getrandbits(12):03x}-{r.getrandbits(48):012x}"
    ),
    "ipv4": lambda r: f"192.0.2.{r.randint(1, 254)}",
}


def value_for_schema(schema: Mapping[str, Any], rng: random.Random, words: Words) -> Any:
    """A value that ``schema`` accepts (see the module docstring for what is covered)."""
    return _Filler(schema, rng, words).value(schema, 0)


class _Filler:
    def __init__(self, root: Mapping[str, Any], rng: random.Random, words: Words) -> None:
        self.root = root
        self.rng = rng
        self.words = words

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        seen = 0
        while isinstance(ref := schema.get("$ref"), str) and seen < 32:
            seen += 1
            node: Any = self.root
            if not ref.startswith("#"):
                break  # a remote reference: fill in what the rest of the schema says
            for part in ref.lstrip("#").strip("/").split("/"):
                if not part:
                    continue
                part = part.replace("~1", "/").replace("~0", "~")
                node = node.get(part) if isinstance(node, Mapping) else None
            if not isinstance(node, Mapping):
                break
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**node, **rest}
        return schema

    def value(self, schema: Any, depth: int) -> Any:
        if not isinstance(schema, Mapping):
            return self.words(self.rng, 3)  # `true` or a malformed node: anything goes
        schema = self.resolve(schema)
        rng = self.rng
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[rng.randrange(len(enum))]
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                # Past the depth limit a null option ends a recursion; else any option.
                if depth >= _MAX_DEPTH:
                    for option in options:
                        if isinstance(option, Mapping) and option.get("type") == "null":
                            return None
                non_null = [
                    o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")
                ]
                pick = (non_null or options)[rng.randrange(len(non_null or options))]
                return self.value({**_without(schema, key), **self.resolve(pick)}, depth)
        parts = schema.get("allOf")
        if isinstance(parts, list) and parts:
            merged: dict[str, Any] = dict(_without(schema, "allOf"))
            for part in parts:
                if isinstance(part, Mapping):
                    part = self.resolve(part)
                    props = {**merged.get("properties", {}), **part.get("properties", {})}
                    required = [*merged.get("required", []), *part.get("required", [])]
                    merged.update(part)
                    if props:
                        merged["properties"] = props
                    if required:
                        merged["required"] = required
            return self.value(merged, depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"]
            if not kinds or (depth >= _MAX_DEPTH and "null" in kind):
                return None
            kind = kinds[rng.randrange(len(kinds))]
        if kind is None:
            if "properties" in schema:
                kind = "object"
            elif "items" in schema or "prefixItems" in schema:
                kind = "array"
            else:
                kind = "string"
        if kind == "object":
            return self.object(schema, depth)
        if kind == "array":
            return self.array(schema, depth)
        if kind == "integer":
            return self.integer(schema)
        if kind == "number":
            return self.number(schema)
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "null":
            return None
        return self.string(schema)

    def object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        props = schema.get("properties")
        out: dict[str, Any] = {}
        required = schema.get("required")
        required_names = set(required) if isinstance(required, list) else set()
        if isinstance(props, Mapping):
            for name, sub in props.items():
                # Deep in a recursive schema, only what must be there.
                if depth >= _MAX_DEPTH and name not in required_names:
                    continue
                out[name] = self.value(sub, depth + 1)
        for name in required_names - out.keys():
            out[name] = self.words(self.rng, 2)  # required but not described
        if (
            not out
            and not isinstance(props, Mapping)
            and schema.get("additionalProperties") is not False
        ):
            out["answer"] = self.words(self.rng, 8)  # a free-form object (JSON mode)
        return out

    def array(self, schema: Mapping[str, Any], depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        out = [self.value(s, depth + 1) for s in prefix] if isinstance(prefix, list) else []
        low = _int(schema.get("minItems"), 0)
        high = _int(schema.get("maxItems"), max(low, 3))
        count = low if depth >= _MAX_DEPTH else self.rng.randint(low, max(low, min(high, low + 3)))
        items = schema.get("items")
        if items is False:
            return out
        values: list[Any] = []
        attempts = 0
        while len(out) + len(values) < max(count, low) and attempts < count * 4 + 8:
            attempts += 1
            value = self.value(items if isinstance(items, Mapping) else {}, depth + 1)
            if schema.get("uniqueItems") and value in values:
                continue
            values.append(value)
        return out + values

    def integer(self, schema: Mapping[str, Any]) -> int:
        low, high = _bounds(schema, 0, 100)
        low_i = int(low) if float(low).is_integer() else int(low) + 1
        if "exclusiveMinimum" in schema and isinstance(schema["exclusiveMinimum"], int | float):
            low_i = max(low_i, int(schema["exclusiveMinimum"]) + 1)
        high_i = int(high)
        if "exclusiveMaximum" in schema and isinstance(schema["exclusiveMaximum"], int | float):
            bound = schema["exclusiveMaximum"]
            high_i = min(high_i, int(bound) - 1 if float(bound).is_integer() else int(bound))
        high_i = max(low_i, high_i)
        step = schema.get("multipleOf")
        value = self.rng.randint(low_i, high_i)
        if isinstance(step, int) and step > 0:
            value = -(-low_i // step) * step + (value - low_i) // step * step
            if value > high_i:
                value -= step
        return value

    def number(self, schema: Mapping[str, Any]) -> float | int:
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            return self.integer(schema)
        ex_low, ex_high = (
            _number(schema.get("exclusiveMinimum")),
            _number(schema.get("exclusiveMaximum")),
        )
        inclusive = dict(schema)
        if ex_low is not None and _number(schema.get("minimum")) is None:
            inclusive["minimum"] = ex_low
        if ex_high is not None and _number(schema.get("maximum")) is None:
            inclusive["maximum"] = ex_high
        low, high = _bounds(inclusive, 0.0, 100.0)
        high = max(low, high)
        value = round(self.rng.uniform(low, high), 2)

        def inside(v: float) -> bool:
            return (
                low <= v <= high
                and (ex_low is None or v > ex_low)
                and (ex_high is None or v < ex_high)
            )

        return value if inside(value) else (low + high) / 2

    def string(self, schema: Mapping[str, Any]) -> str:
        fmt = schema.get("format")
        maker = _FORMATS.get(fmt) if isinstance(fmt, str) else None
        text = maker(self.rng) if maker else self.words(self.rng, self.rng.randint(2, 6))
        low = _int(schema.get("minLength"), 0)
        high = _int(schema.get("maxLength"), max(len(text), low))
        while len(text) < low:
            text += " " + self.words(self.rng, 4)
        return text[: max(high, low)]


def _without(schema: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != key}


def _int(value: Any, default: int) -> int:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _bounds(schema: Mapping[str, Any], low: float, high: float) -> tuple[float, float]:
    """The schema's inclusive bounds, the default range (``low``..``high``) moved to
    fit where only one is given."""
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if isinstance(lo, bool) or not isinstance(lo, int | float):
        lo = None
    if isinstance(hi, bool) or not isinstance(hi, int | float):
        hi = None
    if lo is not None and hi is not None:
        return float(lo), float(hi)
    if lo is not None:
        return float(lo), float(lo) + (high - low)
    if hi is not None:
        return (float(hi) - (high - low) if hi < low else low), float(hi)
    return low, high
