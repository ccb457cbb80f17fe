"""Per-call options of an agent stream, validated once when they are made."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = ["StreamOptions"]


def _number(name: str, value: object, low: float, high: float | None) -> float:
    # bool is an int subclass, but `temperature=True` is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"invalid option {name}={value!r}: must be a number")
    if math.isnan(value) or value < low or (high is not None and value > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise ValueError(f"invalid option {name}={value!r}: must be {bound}")
    return float(value)


def _timeout(name: str, value: object) -> float | None:
    if value is None:
        return None
    number = _number(name, value, 0.0, None)
    if number == 0:
        raise ValueError(f"invalid option {name}={value!r}: must be > 0 (or None for no limit)")
    return number


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """Options for one agent call; every field is optional (``None`` = the agent's default).

    - ``temperature``: sampling temperature, 0..2 (0 = most likely reply every time).
    - ``max_tokens``: upper bound on the reply length, passed to the provider (> 0).
    - ``stop_sequences``: the reply ends *before* the first of these strings; also
      enforced by tokenwire itself, so the text of a stop sequence is never emitted.
    - ``seed``: makes sampling repeatable where the provider supports it.
    - ``timeout`` / ``first_token_timeout`` / ``idle_timeout``: seconds for the whole
      call, until the first chunk, and between chunks (> 0). Never sent upstream.

    Invalid values raise :class:`ValueError` naming the option, e.g.
    ``invalid option temperature=3: must be between 0 and 2``. A plain dict with the
    same keys is accepted wherever a ``StreamOptions`` is (see :meth:`coerce`).
    """

    temperature: float | None = None
    max_tokens: int | None = None
    stop_sequences: Sequence[str] | None = None  # stored as a tuple
    seed: int | None = None
    timeout: float | None = None
    first_token_timeout: float | None = None
    idle_timeout: float | None = None

    def __post_init__(self) -> None:
        # Validation normalises too (list -> tuple, int -> float); frozen, hence setattr.
        set_ = object.__setattr__
        if self.temperature is not None:
            set_(self, "temperature", _number("temperature", self.temperature, 0.0, 2.0))
        if self.max_tokens is not None:
            value = self.max_tokens
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"invalid option max_tokens={value!r}: must be an integer >= 1")
        if self.stop_sequences is not None:
            set_(self, "stop_sequences", _stops(self.stop_sequences))
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ValueError(f"invalid option seed={self.seed!r}: must be an integer")
        for name in ("timeout", "first_token_timeout", "idle_timeout"):
            set_(self, name, _timeout(name, getattr(self, name)))

    @classmethod
    def coerce(cls, value: StreamOptions | Mapping[str, Any] | None) -> StreamOptions:
        """``value`` as a ``StreamOptions``: itself, built from a mapping, or empty for
        ``None``. Unknown keys raise :class:`ValueError` listing the known ones."""
        if value is None:
            return _EMPTY
        if isinstance(value, StreamOptions):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(
                f"options must be a StreamOptions or a mapping, not {type(value).__name__}"
            )
        unknown = sorted(set(value) - _NAMES)
        if unknown:
            raise ValueError(
                f"unknown option {', '.join(map(repr, unknown))} "
                f"(known options: {', '.join(sorted(_NAMES))})"
            )
        return cls(**value)

    def merged(self, overrides: StreamOptions | Mapping[str, Any] | None) -> StreamOptions:
        """These options with every non-``None`` field of ``overrides`` taking precedence."""
        other = StreamOptions.coerce(overrides)
        changes = {
            f.name: getattr(other, f.name)
            for f in fields(other)
            if getattr(other, f.name) is not None
        }
        return replace(self, **changes) if changes else self

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set, as a plain dict (``stop_sequences`` as a list)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if f.name == "stop_sequences" else value
        return out


def _stops(value: Iterable[str] | str) -> tuple[str, ...]:
    # A lone string is almost always meant as one sequence, not as its characters.
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise ValueError(f"invalid option stop_sequences: {item!r} is not a non-empty string")
        if item not in out:
            out.append(item)
    return tuple(out)


_NAMES = frozenset(f.name for f in fields(StreamOptions))
_EMPTY = StreamOptions()
