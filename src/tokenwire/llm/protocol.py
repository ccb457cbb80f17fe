"""Wire protocols as objects: one :class:`WireProtocol` per LLM API, looked up by name.

Everything that differs between OpenAI chat completions, Anthropic Messages, the OpenAI
Responses API (and any protocol added later) lives behind this interface: reading and
writing requests (to and from the neutral :class:`~tokenwire.llm.requests.ChatRequest`),
the stream decoder and encoder, the whole (non-streamed) reply, errors (in-band event,
HTTP body and status), HTTP paths and authentication headers, and how to tell the
protocol's events and requests apart from others'. The gateway, the client's
auto-detection, :func:`~tokenwire.llm.accumulate`, :meth:`StreamError.to_sse_event
<tokenwire.errors.StreamError.to_sse_event>` and the providers loop over the registry
instead of naming protocols, so adding one is one module under ``tokenwire.llm`` that
calls :func:`register` (and a line in ``_BUILTIN``), plus its tests.

Sans-I/O: nothing here opens a socket or awaits.
"""

from __future__ import annotations

import importlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import orjson

from tokenwire.llm.model import Delta, ErrorDelta, Message
from tokenwire.sse import ServerSentEvent

if TYPE_CHECKING:
    from tokenwire.errors import StreamError
    from tokenwire.llm.requests import ChatRequest

__all__ = [
    "EventDecoder",
    "EventEncoder",
    "WireProtocol",
    "get_protocol",
    "protocol_names",
    "protocols",
    "register",
]


@runtime_checkable
class EventDecoder(Protocol):
    """A protocol's incremental decoder: SSE events in, deltas out (see
    :class:`~tokenwire.llm.decode.StreamDecoder` for the contract)."""

    protocol: str

    def feed(self, event: ServerSentEvent) -> list[Delta]: ...

    def close(self) -> list[Delta]: ...

    @property
    def done(self) -> bool: ...

    @property
    def error(self) -> ErrorDelta | None: ...

    @property
    def message(self) -> Message: ...

    @property
    def messages(self) -> dict[int, Message]: ...


@runtime_checkable
class EventEncoder(Protocol):
    """A protocol's encoder: deltas in, the protocol's SSE bytes out. ``encode`` returns
    ``b""`` when a delta makes no event; ``done`` ends the stream properly; ``error``
    ends it with the protocol's in-band error; ``ended`` says one of them happened."""

    def encode(self, delta: Delta) -> bytes: ...

    def done(self) -> bytes: ...

    def error(self, exc: BaseException) -> bytes: ...

    @property
    def ended(self) -> bool: ...


class WireProtocol(ABC):
    """One LLM wire protocol. Subclasses set the class attributes and implement the
    abstract methods; one instance of each is registered with :func:`register`."""

    #: Registry key, used everywhere a protocol is named (``StreamDecoder("openai")``,
    #: ``StreamError.to_sse_event("anthropic")``, ``tokenwire chat --protocol``).
    name: ClassVar[str]
    #: Human-readable name.
    title: ClassVar[str]
    #: ``type`` of a ``[providers.X]`` table whose upstream speaks this protocol.
    provider_type: ClassVar[str]
    #: The gateway's endpoints for it (POST; Starlette path syntax).
    endpoints: ClassVar[tuple[str, ...]]
    #: Appended to a provider's ``base_url`` to reach the streaming endpoint.
    upstream_path: ClassVar[str]
    #: Built-in provider defaults for this protocol, if any (base URL, key variable).
    default_base_url: ClassVar[str | None] = None
    default_key_env: ClassVar[str | None] = None
    #: At most this many stop sequences go upstream (agents enforce the rest).
    max_stop_sequences: ClassVar[int | None] = None
    #: Extra ``[providers.X]`` keys this protocol reads (passed to auth_headers).
    provider_options: ClassVar[Mapping[str, str]] = {}
    #: Whether requests can carry a sampling ``seed``.
    accepts_seed: ClassVar[bool] = True
    #: Prefix of the reply ids the gateway gives out (``chatcmpl-``, ``msg_``, ``resp_``).
    id_prefix: ClassVar[str] = ""
    #: Where the protocol itself reaches a stored reply by id, on gateways with a reply
    #: store (Starlette syntax, with ``{reply_id}``): ``GET`` returns the reply (with
    #: ``?stream=true`` its events, see :meth:`replay_after`), ``POST .../cancel`` stops
    #: it. ``None``: the protocol has no such thing.
    reply_path: ClassVar[str | None] = None
    #: The request field naming a stored reply whose conversation a request continues.
    previous_reply_field: ClassVar[str | None] = None

    def __repr__(self) -> str:
        return f"<WireProtocol {self.name!r}>"

    # -- HTTP ------------------------------------------------------------------------

    @abstractmethod
    def auth_headers(self, key: str | None, options: Mapping[str, str]) -> dict[str, str]:
        """The headers that authenticate an upstream request with ``key`` (plus fixed
        headers the API requires, such as a version); ``options`` are the provider's
        :attr:`provider_options` values."""

    def recognizes(self, headers: Mapping[str, str]) -> bool:
        """Whether a request on an endpoint several protocols share (``/v1/models``, an
        unknown path) comes from this protocol's clients, judged by its headers."""
        return False

    # -- requests --------------------------------------------------------------------

    @abstractmethod
    def parse_request(
        self, body: Mapping[str, Any], params: Mapping[str, str] | None = None
    ) -> ChatRequest:
        """Read a request body (and ``params``: path parameters, for protocols that put
        the model in the path) into a :class:`~tokenwire.llm.requests.ChatRequest`.
        Raises :class:`~tokenwire.llm.requests.RequestError` naming the field."""

    @abstractmethod
    def write_request(self, request: ChatRequest) -> dict[str, Any]:
        """Write a :class:`~tokenwire.llm.requests.ChatRequest` as this protocol's body.
        Raises :class:`~tokenwire.llm.requests.RequestError` for what it cannot carry."""

    # -- streams ---------------------------------------------------------------------

    @abstractmethod
    def decoder(self) -> EventDecoder:
        """A new stream decoder."""

    @abstractmethod
    def encoder(
        self,
        *,
        include_usage: bool = True,
        error_provider: str | None = None,
        id: str | None = None,
    ) -> EventEncoder:
        """A new stream encoder (an :class:`EventEncoder`). ``error_provider`` is whose
        vocabulary an :class:`~tokenwire.llm.model.ErrorDelta` it is given uses
        (default: this protocol's); ``id`` the reply id it writes (default: the
        upstream's, from :class:`~tokenwire.llm.model.MessageStart`)."""

    @abstractmethod
    def detect(self, event: ServerSentEvent, obj: Any) -> bool:
        """Whether ``event`` (``obj``: its data parsed as JSON, or ``None``) is
        unmistakably this protocol's. Protocols are asked in registration order; the
        first that says yes decodes the stream."""

    # -- whole replies -----------------------------------------------------------------

    @abstractmethod
    def whole_reply(
        self, message: Message, *, id: str, model: str, status: str | None = None
    ) -> dict[str, Any]:
        """The non-streamed reply for ``message``, as this protocol's JSON object.
        ``status`` (``in_progress``, ``cancelled``, ...) is for protocols whose replies
        have one (a stored reply looked up before it is complete)."""

    def replay_after(self, query: Mapping[str, str]) -> int | None:
        """For :attr:`reply_path` with ``?stream=true``: how many of the reply's events
        the request's query says to skip (``None``: a malformed query)."""
        return 0

    def model_list(self, names: list[str], owners: Mapping[str, str]) -> dict[str, Any]:
        """The body of a model list for ``names`` (``owners``: provider by name)."""
        return {
            "object": "list",
            "data": [
                {"id": n, "object": "model", "created": 0, "owned_by": owners.get(n, "")}
                for n in names
            ],
        }

    # -- errors ------------------------------------------------------------------------

    @abstractmethod
    def error_object(self, err: StreamError) -> dict[str, Any]:
        """``err`` as this protocol's error object: the payload of both the in-band
        event and the HTTP error body."""

    def error_event(self, err: StreamError) -> bytes:
        """``err`` as one complete SSE event that this protocol's SDKs raise on."""
        return b"event: error\ndata: " + orjson.dumps(self.error_object(err)) + b"\n\n"

    def error_body(self, err: StreamError) -> bytes:
        """``err`` as the JSON body of an HTTP error response."""
        return orjson.dumps(self.error_object(err))

    def http_status(self, err: StreamError) -> int:
        """The HTTP status for ``err`` before the first byte (default: the error's own
        or its category's)."""
        return err.http_status("generic")


_registry: dict[str, WireProtocol] = {}
_lock = threading.Lock()
_loaded = False
# The protocols that ship with tokenwire, imported on first lookup (each registers
# itself); imported lazily because they use tokenwire.errors, which uses the registry.
_BUILTIN = (
    "tokenwire.llm.openai_chat",
    "tokenwire.llm.anthropic_messages",
    "tokenwire.llm.openai_responses",
)


def register(protocol: WireProtocol) -> WireProtocol:
    """Add ``protocol`` to the registry (by ``protocol.name``); returns it."""
    with _lock:
        existing = _registry.get(protocol.name)
        if existing is not None and type(existing) is not type(protocol):
            raise ValueError(f"a protocol named {protocol.name!r} is already registered")
        _registry[protocol.name] = protocol
    return protocol


def _load() -> None:
    global _loaded
    if not _loaded:
        for module in _BUILTIN:
            importlib.import_module(module)
        _loaded = True


def get_protocol(name: str) -> WireProtocol:
    """The registered protocol called ``name``; ``ValueError`` naming the known ones."""
    protocol = _registry.get(name)
    if protocol is None:
        _load()
        protocol = _registry.get(name)
        if protocol is None:
            known = ", ".join(protocol_names())
            raise ValueError(f"unknown protocol {name!r}; expected one of {known}")
    return protocol


def _order(protocol: WireProtocol) -> int:
    # Built-ins first, in _BUILTIN's order whatever imported them first; others after.
    module = type(protocol).__module__
    return _BUILTIN.index(module) if module in _BUILTIN else len(_BUILTIN)


def protocols() -> Iterator[WireProtocol]:
    """Every registered protocol: the built-in ones in a fixed order, then the others
    in registration order."""
    _load()
    return iter(sorted(_registry.values(), key=_order))


def protocol_names() -> tuple[str, ...]:
    """The names of the registered protocols, in the order of :func:`protocols`."""
    return tuple(p.name for p in protocols())
