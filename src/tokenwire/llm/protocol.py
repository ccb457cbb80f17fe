"""Wire protocols as objects: one :class:`WireProtocol` per LLM API, looked up by name.

Everything that differs between OpenAI chat completions, Anthropic Messages, the OpenAI
Responses API (and any protocol added later) lives behind this interface: reading and
writing requests (to and from the neutral :class:`~tokenwire.llm.requests.ChatRequest`),
the stream decoder and encoder, the whole (non-streamed) reply, errors (in-band event,
HTTP body and status), HTTP paths (fixed or depending on the request), authentication
headers (and where the protocol's clients put their key), model lists, and how to tell
the protocol's events and requests apart from others'. The gateway, the client's
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
    "bearer_or_api_key",
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
    #: Whether the protocol's clients read SSE ``id:`` lines (and so could resume by
    #: ``Last-Event-ID``): the gateway makes only such protocols' streams resumable
    #: (``[gateway] resume``). Off by default: some SDKs take every line but a blank
    #: one for data, and fail on anything but ``data:``.
    resumable: ClassVar[bool] = False
    #: What the gateway (and a server's sender) writes to keep a quiet stream alive:
    #: bytes the protocol's clients skip. By default a blank line, which no event
    #: stream reader takes for an event (an SSE comment, ``: ping``, is not skipped
    #: by every SDK).
    heartbeat: ClassVar[bytes] = b"\n"
    #: ``gen_ai.provider.name`` (OpenTelemetry GenAI conventions) of an upstream that
    #: speaks this protocol, the conventions' "flavor" of its telemetry (``None``: the
    #: protocol's name). An OpenAI-compatible server (Ollama, vLLM) is "openai" too.
    telemetry_name: ClassVar[str | None] = None
    #: The request fields where clients say how many tokens they want (dotted for a
    #: nested one, ``"config.max"``), in order of precedence: the one present is named
    #: when a route's ``max_output_tokens`` refuses the number (else the first).
    max_tokens_fields: ClassVar[tuple[str, ...]] = ("max_tokens",)
    #: Where the gateway lists its models in this protocol's shape (``GET``, answered
    #: with :meth:`model_list`), besides the shared ``/v1/models``. ``None``: only there.
    models_path: ClassVar[str | None] = None

    def __repr__(self) -> str:
        return f"<WireProtocol {self.name!r}>"

    # -- HTTP ------------------------------------------------------------------------

    @abstractmethod
    def auth_headers(self, key: str | None, options: Mapping[str, str]) -> dict[str, str]:
        """The headers that authenticate an upstream request with ``key`` (plus fixed
        headers the API requires, such as a version); ``options`` are the provider's
        :attr:`provider_options` values."""

    def upstream_url(self, base_url: str, request: ChatRequest) -> str:
        """Where ``request`` goes on an upstream at ``base_url`` (no trailing ``/``): by
        default ``base_url`` + :attr:`upstream_path`. Protocols that put the model in the
        path override this; the HTTP provider parses a URL that depends on nothing but
        the model once per model."""
        return base_url + self.upstream_path

    @property
    def server_base_path(self) -> str:
        """The base URL's path of a server that mirrors the API's own paths, as the
        gateway does: the part of the first of :attr:`endpoints` before the fixed start
        of :attr:`upstream_path` (``/v1`` for ``/v1/chat/completions`` and
        ``/chat/completions``; nothing for ``/v1/messages``)."""
        endpoint = self.endpoints[0]
        fixed = self.upstream_path.split("{", 1)[0].split("?", 1)[0]
        at = endpoint.rfind(fixed) if fixed else -1
        return endpoint[:at] if at > 0 else ""

    def server_url(self, root: str, request: ChatRequest) -> str:
        """Where a client sends ``request`` on a server at ``root`` (scheme, host and
        port, no trailing ``/``) that mirrors the API's paths, such as a tokenwire
        gateway: :meth:`upstream_url` under ``root`` + :attr:`server_base_path`."""
        return self.upstream_url(root + self.server_base_path, request)

    def client_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        """The API key a client of this protocol sent with its request (``headers``
        with lower-case names, ``query``: the query parameters), or ``None``. By default
        ``Authorization: Bearer KEY`` or ``x-api-key: KEY``, what both the OpenAI and the
        Anthropic SDKs send; protocols whose SDKs send it elsewhere override this."""
        return bearer_or_api_key(headers)

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


def bearer_or_api_key(headers: Mapping[str, str]) -> str | None:
    """The key in ``Authorization: Bearer KEY`` or else ``x-api-key: KEY`` (``headers``
    with lower-case names), or ``None``: the default :meth:`WireProtocol.client_key`, and
    how the gateway's own endpoints are authenticated."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        key = auth[7:].strip()
        if key:
            return key
    return headers.get("x-api-key")


_registry: dict[str, WireProtocol] = {}
_lock = threading.Lock()
_loaded = False
# The protocols that ship with tokenwire, imported on first lookup (each registers
# itself); imported lazily because they use tokenwire.errors, which uses the registry.
_BUILTIN = (
    "tokenwire.llm.openai_chat",
    "tokenwire.llm.anthropic_messages",
    "tokenwire.llm.openai_responses",
    "tokenwire.llm.gemini",
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
