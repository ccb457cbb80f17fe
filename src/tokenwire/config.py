"""Configuration: ``tokenwire.toml`` -> providers, agents, gateway models and settings.

```toml
[providers.local]               # type defaults to the name for built-in providers
type = "openai"                 # "openai" | "anthropic" | "openai-responses" | "gemini" | "demo"
base_url = "http://localhost:11434/v1"
api_key_env = "LOCAL_API_KEY"   # the *name* of the variable; keys never go in the file
headers = { "X-Team" = "docs" }
timeouts = { first_token = 30, idle = 30, total = 600, connect = 10 }  # 0: no limit
expose = true                   # gateway clients may ask for local/MODEL (default false)

[agents.assistant]
provider = "local"
model = "llama3.2"
system = "You are a helpful assistant."
options = { temperature = 0.7, max_tokens = 500, stop_sequences = ["\\n\\n"] }

[models."llama"]                # what gateway clients may ask for, routed to a provider
provider = "local"
model = "llama3.2"              # the upstream's name for it (default: the same name)
timeouts = { first_token = 20 } # overrides the provider's timeouts for this route
max_output_tokens = 8192        # a larger max_tokens: 400 "too large" (default: no check)

[models."smart"]                # several deployments: retries, fallbacks, continuation
deployments = [
  { provider = "anthropic", model = "claude-sonnet-4-5", weight = 3 },
  { provider = "local", model = "llama3.2", timeouts = { first_token = 5 } },
]
strategy = "fallback"           # or "balance": weighted, least in flight
retries = 2                     # attempts beyond the first (default: one per deployment)
continue_on_failure = true      # an upstream failing mid-reply: the next one goes on
cooldown = 30                   # seconds a failing deployment is skipped ...
cooldown_after = 3              # ... after this many failures in a row

[gateway]
api_keys_env = "TOKENWIRE_API_KEYS"  # comma-separated keys; unset = no authentication
cors_origins = ["http://localhost:5173"]
max_request_bytes = 1048576
ping = 15                            # heartbeat interval, seconds
resume = "redis://localhost:6379/0"  # resumable streams: "memory" or a Redis URL; unset = off
resume_grace = 30                    # seconds a reply goes on after its client left
resume_expiry = 600                  # seconds a stream is kept after its last event
resume_fallback = false              # Redis unreachable: stream without resume (else 503)
resume_memory_bytes = 268435456      # resumable events kept in this process, all streams
resume_timeout = 1                   # seconds Redis may take to connect or answer a read
resume_stall = 10                    # a reader errors when the log stalls this long
resume_write_retry = 30              # seconds a failed Redis write is retried, in order
max_reply_bytes = 33554432           # an upstream reply longer than this ends with an error
request_timeout = 30                 # seconds for a request body to arrive
head_timeout = 10                    # seconds for a request head to arrive (slowloris)
keep_alive_timeout = 5               # an idle keep-alive connection is closed after this
max_head_bytes = 65536               # a longer request head gets 431
max_request_headers = 100            # more header lines get 431
max_connections = 0                  # open client connections; 0 = from the fd limit
expose_errors = false                # internal errors: their text to clients (else a reference id)
tracing = false                      # an OpenTelemetry span per request (tokenwire[otel])
```

A gateway serves the ``[models]`` routes and the model ``demo`` (unless the file
redefines it). ``PROVIDER/MODEL`` (e.g. ``openai/gpt-4o``) reaches a provider directly
only where it opts in: ``expose = true`` (any model) or ``expose = ["gpt-4o", ...]``.

Built in, unless the file redefines them: providers ``demo``, ``openai``
(``https://api.openai.com/v1``, key from ``OPENAI_API_KEY``), ``anthropic``
(``https://api.anthropic.com``, key from ``ANTHROPIC_API_KEY``) and one for every other
wire protocol with a public endpoint (``openai-responses``: the OpenAI Responses API;
``gemini``: ``https://generativelanguage.googleapis.com/v1beta``, key from
``GEMINI_API_KEY``),
and the agent ``assistant`` using ``demo``. A provider's ``type`` is ``demo`` or a wire
protocol's provider type (:mod:`tokenwire.llm.protocol`); Anthropic providers also take
``anthropic_version``. Demo providers also take ``speed`` (a factor of the realistic
pace, or ``"max"``: unpaced), ``time_to_first_token``, ``time_per_token``, ``seed`` and
``fail_after`` (see :class:`~tokenwire.providers.demo.DemoProvider`). ``prefill``
says whether a provider continues a reply from a final assistant message (what
``continue_on_failure`` needs): true by default for Anthropic and demo providers, false
for the others; a table (``prefill = { continue_final_message = true,
add_generation_prompt = false }``, vLLM's names) turns it on and adds those fields to
the request that continues a reply. A model with ``deployments`` is routed by
:mod:`tokenwire.gateway.routing`. A demo route's
name with ``:FAULT`` (``demo:rate_limit``) routes to it with that fault injected
(:mod:`tokenwire.providers.demo_faults`).

Every problem raises :class:`ConfigError` naming the file, the table and the key.
"""

from __future__ import annotations

import importlib.util
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tokenwire.llm.protocol import WireProtocol, protocols
from tokenwire.options import StreamOptions

__all__ = [
    "AgentConfig",
    "Config",
    "ConfigError",
    "Deployment",
    "GatewayConfig",
    "ModelRoute",
    "ProviderConfig",
    "Timeouts",
    "from_mapping",
    "load_config",
]

ProviderType = str
"""``"demo"``, or a wire protocol's provider type (``"openai"``, ``"anthropic"``,
``"openai-responses"``, ``"gemini"``, ...: see :mod:`tokenwire.llm.protocol`)."""


def _wire_types() -> dict[str, WireProtocol]:
    return {p.provider_type: p for p in protocols()}


DEFAULT_FILE = "tokenwire.toml"
ENV_VAR = "TOKENWIRE_CONFIG"


class ConfigError(ValueError):
    """The configuration is wrong: unknown agent or provider, a missing API key
    variable, an invalid value. The message names the place and the problem (and never
    contains a key)."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds; ``None`` = no limit. ``first_token``: from the request to the first
    chunk; ``idle``: between chunks; ``total``: the whole call, from the request;
    ``connect``: opening the connection. The defaults are the official SDKs' read
    timeout (10 minutes) and an hour in all, so that a silent upstream never holds a
    request for good; set a key to 0 for no limit."""

    first_token: float | None = 600.0
    idle: float | None = 600.0
    total: float | None = 3600.0
    connect: float | None = 10.0


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One ``[providers.NAME]`` table. ``api_key_env`` is the name of the environment
    variable that holds the key; the key itself is read only when a provider is built.
    Header values are hidden in the repr (they may be credentials too)."""

    name: str
    type: ProviderType
    base_url: str | None = None
    api_key_env: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeouts: Timeouts = field(default_factory=Timeouts)
    # The wire protocol's own provider settings (Anthropic's anthropic_version).
    options: Mapping[str, str] = field(default_factory=dict)
    demo: Mapping[str, Any] = field(default_factory=dict)
    # Gateway clients may name this provider's models as PROVIDER/MODEL: all of them
    # (True), only these (a tuple), or none (False, the default).
    expose: bool | tuple[str, ...] = False
    #: Whether the provider continues a reply from a final assistant message (None:
    #: no; a mapping: yes, with these fields added to such a request).
    prefill: Mapping[str, Any] | None = None

    @property
    def protocol(self) -> str:
        """The name of the wire protocol the provider speaks (not for ``demo``)."""
        return _wire_types()[self.type].name

    def exposes(self, model: str) -> bool:
        """Whether gateway clients may ask for ``PROVIDER/model`` directly."""
        expose = self.expose
        return expose if isinstance(expose, bool) else model in expose

    def __repr__(self) -> str:
        return (
            f"ProviderConfig(name={self.name!r}, type={self.type!r}, "
            f"base_url={self.base_url!r}, api_key_env={self.api_key_env!r}, "
            f"headers={sorted(self.headers)!r}, timeouts={self.timeouts!r})"
        )

    def api_key(self) -> str | None:
        """The key from ``api_key_env``; ``None`` when no variable is configured.

        Raises :class:`ConfigError` naming the variable (not its value) when it is
        configured but unset or empty."""
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(
                f"provider {self.name!r}: environment variable {self.api_key_env} "
                "(api_key_env) is not set"
            )
        return key


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """One ``[agents.NAME]`` table."""

    name: str
    provider: str
    model: str
    system: str | None = None
    options: StreamOptions = field(default_factory=StreamOptions)


@dataclass(frozen=True, slots=True)
class Deployment:
    """One entry of a route's ``deployments``: a provider and the upstream's name for
    the model. ``weight`` counts for the ``balance`` strategy; ``timeouts`` (merged over
    the provider's) bound each attempt on it."""

    provider: str
    model: str
    weight: float = 1.0
    timeouts: Timeouts | None = None


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """One ``[models.NAME]`` table: a model name gateway clients use, the provider that
    serves it and the upstream's own name for it; or, with ``deployments``, several of
    them (``provider`` and ``model`` are then the first one's) and how to choose,
    retry and continue (:mod:`tokenwire.gateway.routing`)."""

    name: str
    provider: str
    model: str
    timeouts: Timeouts | None = None
    #: A larger ``max_tokens`` is answered with a 400 "too large" (None: the upstream
    #: decides; demo routes default to :data:`DEMO_MAX_OUTPUT_TOKENS`).
    max_output_tokens: int | None = None
    deployments: tuple[Deployment, ...] = ()
    strategy: str = "fallback"  # or "balance"
    retries: int = 0
    continue_on_failure: bool = False
    cooldown: float = 30.0
    cooldown_after: int = 3

    @property
    def routed(self) -> bool:
        """Whether the route has more than a single upstream attempt to manage."""
        return bool(self.deployments) or self.retries > 0 or self.continue_on_failure


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The ``[gateway]`` table. ``api_keys_env`` names the variable holding the
    comma-separated keys clients must present; ``None`` means no authentication.

    ``resume`` turns on resumable streams (:mod:`tokenwire.resume`): ``"memory"`` (one
    process) or a Redis URL (shared by every process using it); ``resume_grace`` is how
    long a reply keeps being generated after its client left, ``resume_expiry`` how long
    a stream stays in the log, and ``resume_fallback`` whether to stream without resume
    (instead of answering 503) while Redis is unreachable.

    ``tracing`` turns on OpenTelemetry tracing (:mod:`tokenwire.gateway.tracing`): a span
    per chat request, following the GenAI semantic conventions, through the global
    tracer provider, with the trace context sent on to the upstream. It needs
    ``pip install 'tokenwire[otel]'``, checked when the configuration is read; off, the
    gateway does not import OpenTelemetry at all."""

    api_keys_env: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_request_bytes: int = 1024 * 1024
    ping: float = 15.0
    # Resumable streams (tokenwire.resume): None = off, "memory", or a redis:// URL.
    resume: str | None = None
    resume_grace: float = 30.0
    resume_expiry: float = 600.0
    resume_fallback: bool = False
    # Tell clients an internal exception's text (else a generic message + reference id).
    expose_errors: bool = False
    resume_memory_bytes: int = 256 * 1024 * 1024
    resume_timeout: float = 1.0
    resume_stall: float = 10.0
    resume_write_retry: float = 30.0
    # Limits (docs/production.md). 0 max_connections: derived from the fd limit.
    max_reply_bytes: int = 32 * 1024 * 1024
    request_timeout: float = 30.0
    head_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    max_head_bytes: int = 64 * 1024
    max_request_headers: int = 100
    max_connections: int = 0
    tracing: bool = False

    def api_keys(self) -> frozenset[str]:
        """The accepted keys. Raises :class:`ConfigError` naming the variable if it is
        configured but empty."""
        if not self.api_keys_env:
            return frozenset()
        keys = frozenset(k.strip() for k in os.environ.get(self.api_keys_env, "").split(","))
        keys -= {""}
        if not keys:
            raise ConfigError(
                f"[gateway] api_keys_env: environment variable {self.api_keys_env} is not set"
            )
        return keys


@dataclass(frozen=True, slots=True)
class Config:
    """Providers, agents and gateway models by name, and the gateway settings.
    ``source`` is the file it came from, if any."""

    providers: Mapping[str, ProviderConfig]
    agents: Mapping[str, AgentConfig]
    source: Path | None = None
    models: Mapping[str, ModelRoute] = field(default_factory=dict)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)

    def route(self, model: str) -> tuple[ProviderConfig, str, Timeouts]:
        """The provider, upstream model name and timeouts for a requested ``model``:
        a ``[models]`` entry, else ``PROVIDER/MODEL``. Raises :class:`ConfigError` for
        an unknown model."""
        route = self.models.get(model)
        if route is not None:
            provider = self.providers[route.provider]  # checked at load time
            return provider, route.model, route.timeouts or provider.timeouts
        # ROUTE:FAULT on a demo route: the demo model injects the fault.
        base, sep, fault = model.partition(":")
        route = self.models.get(base) if sep else None
        if route is not None and self.providers[route.provider].type == "demo":
            provider = self.providers[route.provider]
            return provider, f"{route.model}:{fault}", route.timeouts or provider.timeouts
        name, sep, upstream = model.partition("/")
        direct = self.providers.get(name) if sep and upstream else None
        if direct is not None and direct.exposes(upstream):
            return direct, upstream, direct.timeouts
        # Said to gateway clients: no file path, no provider names, bounded length.
        exposed = sorted(p.name for p in self.providers.values() if p.expose)
        hint = f", or PROVIDER/MODEL for {', '.join(exposed)}" if exposed else ""
        raise ConfigError(
            f"unknown model {model[:200]!r} "
            f"(available: {', '.join(sorted(self.models)) or 'none'}{hint})"
        )

    def output_limit(self, model: str) -> int | None:
        """The most output tokens a request for ``model`` may ask for: its route's
        ``max_output_tokens`` (demo routes: :data:`DEMO_MAX_OUTPUT_TOKENS`), or
        ``None`` when the upstream decides."""
        route = self.models.get(model) or self.models.get(model.partition(":")[0])
        if route is None:
            return None
        if route.max_output_tokens is not None:
            return route.max_output_tokens
        demo = self.providers[route.provider].type == "demo"
        return DEMO_MAX_OUTPUT_TOKENS if demo else None

    def agent_spec(self, name: str) -> AgentConfig:
        """The ``[agents.NAME]`` table (built-in ``assistant`` included); raises
        :class:`ConfigError` naming the defined agents for an unknown name."""
        spec = self.agents.get(name)
        if spec is None:
            raise ConfigError(
                f"unknown agent {name!r}{self._where()} (defined: {', '.join(sorted(self.agents))})"
            )
        return spec

    def _where(self) -> str:
        return f" in {self.source}" if self.source else ""


def _builtin_providers() -> dict[str, ProviderConfig]:
    """``demo``, and one provider per wire protocol with a public default endpoint
    (``openai``, ``anthropic``, ...), named by its provider type."""
    builtin = {"demo": ProviderConfig("demo", "demo", prefill=_default_prefill("demo"))}
    for wire in protocols():
        if wire.default_base_url is not None and wire.provider_type not in builtin:
            builtin[wire.provider_type] = ProviderConfig(
                wire.provider_type,
                wire.provider_type,
                base_url=wire.default_base_url,
                api_key_env=wire.default_key_env,
                prefill=_default_prefill(wire.provider_type),
            )
    return builtin


def _default_prefill(kind: str) -> Mapping[str, Any] | None:
    """Demo and Anthropic providers continue a final assistant message as it is; the
    others only where configured (OpenAI-compatible servers need request fields)."""
    wire = _wire_types().get(kind)
    if kind == "demo" or (wire is not None and wire.name in _PREFILL_PROTOCOLS):
        return MappingProxyType({})
    return None


_BUILTIN_AGENTS = {"assistant": AgentConfig("assistant", "demo", "demo")}

_PROVIDER_KEYS = {"type", "base_url", "api_key_env", "headers", "timeouts", "expose", "prefill"}
_DEMO_KEYS = {"speed", "time_to_first_token", "time_per_token", "seed", "fail_after"}
_AGENT_KEYS = {"provider", "model", "system", "options"}
_MODEL_KEYS = {
    "provider",
    "model",
    "timeouts",
    "max_output_tokens",
    "deployments",
    "strategy",
    "retries",
    "continue_on_failure",
    "cooldown",
    "cooldown_after",
}
_DEPLOYMENT_KEYS = {"provider", "model", "weight", "timeouts"}
_STRATEGIES = ("fallback", "balance")
# Protocols whose request format continues a final assistant message as it is.
_PREFILL_PROTOCOLS = ("anthropic",)
DEMO_MAX_OUTPUT_TOKENS = 8192
"""The most output tokens a demo route takes (the demo writes as many as asked)."""
_GATEWAY_KEYS = {
    "api_keys_env",
    "cors_origins",
    "max_request_bytes",
    "ping",
    "resume",
    "resume_grace",
    "resume_expiry",
    "resume_fallback",
    "resume_memory_bytes",
    "resume_timeout",
    "resume_stall",
    "resume_write_retry",
    "max_reply_bytes",
    "request_timeout",
    "head_timeout",
    "keep_alive_timeout",
    "max_head_bytes",
    "max_request_headers",
    "max_connections",
    "tracing",
    "expose_errors",
}
_GATEWAY_SIZES = (
    "resume_memory_bytes",
    "max_reply_bytes",
    "max_head_bytes",
    "max_request_headers",
)
_GATEWAY_TIMES = (
    "request_timeout",
    "head_timeout",
    "keep_alive_timeout",
    "resume_timeout",
    "resume_stall",
    "resume_write_retry",
)
_RESUME_SCHEMES = ("redis://", "rediss://", "unix://")
_BUILTIN_MODELS = {"demo": ModelRoute("demo", "demo", "demo")}
_DEFAULT_GATEWAY = GatewayConfig()
_TIMEOUT_KEYS = {"first_token", "idle", "total", "connect"}
TRACING_NEEDS_OTEL = (
    "[gateway] tracing needs OpenTelemetry, which is not installed: pip install 'tokenwire[otel]'"
)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the configuration.

    The file is ``path`` if given, else the one named by ``TOKENWIRE_CONFIG``, else
    ``./tokenwire.toml``. A file named explicitly (argument or variable) must exist; with
    no file at all the built-in defaults apply (agent ``assistant`` on ``demo``).
    """
    explicit = path if path is not None else os.environ.get(ENV_VAR) or None
    file = Path(explicit) if explicit is not None else Path(DEFAULT_FILE)
    if not file.is_file():
        if explicit is not None:
            raise ConfigError(f"config file not found: {file}")
        return from_mapping({})
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    return from_mapping(data, source=file)


def from_mapping(data: Mapping[str, Any], *, source: Path | None = None) -> Config:
    """Build a :class:`Config` from parsed TOML (or an equivalent dict)."""
    where = f"{source}: " if source else ""
    unknown = set(data) - {"providers", "agents", "models", "gateway"}
    if unknown:
        raise ConfigError(f"{where}unknown top-level table(s): {', '.join(sorted(unknown))}")
    builtin = _builtin_providers()
    providers = dict(builtin)
    for name in _table(data, "providers", where):
        providers[name] = _provider(
            name, _table(data["providers"], name, where, "providers."), where, builtin
        )
    agents = dict(_BUILTIN_AGENTS)
    for name in _table(data, "agents", where):
        agents[name] = _agent(
            name, _table(data["agents"], name, where, "agents."), providers, where
        )
    models = dict(_BUILTIN_MODELS)
    for name in _table(data, "models", where):
        models[name] = _model_route(
            name, _table(data["models"], name, where, "models."), providers, where
        )
    gateway = _gateway(_table(data, "gateway", where), where)
    return Config(
        MappingProxyType(providers),
        MappingProxyType(agents),
        source,
        MappingProxyType(models),
        gateway,
    )


def _table(parent: Mapping[str, Any], key: str, where: str, prefix: str = "") -> dict[str, Any]:
    value = parent.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}[{prefix}{key}] must be a table")
    return dict(value)


def _check_keys(table: Mapping[str, Any], allowed: set[str], place: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"{place}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )


def _string(table: Mapping[str, Any], key: str, place: str) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{place}: {key} must be a string, not {type(value).__name__}")
    return value


def _seconds(table: Mapping[str, Any], key: str, place: str) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{place}: {key} must be a number of seconds >= 0, not {value!r}")
    return float(value)


def _positive_int(
    table: Mapping[str, Any], key: str, place: str, default: int | None = None
) -> int:
    """``table[key]``, a positive integer (absent: ``default``, else the gateway's)."""
    value = table.get(key, getattr(_DEFAULT_GATEWAY, key) if default is None else default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{place}: {key} must be a positive integer, not {value!r}")
    return value


def _provider(
    name: str, table: dict[str, Any], where: str, builtin: Mapping[str, ProviderConfig]
) -> ProviderConfig:
    place = f"{where}[providers.{name}]"
    wires = _wire_types()
    types = (*wires, "demo")
    kind = table.get("type", name if name in types else None)
    if kind not in types:
        raise ConfigError(
            f"{place}: type must be one of {', '.join(types)}"
            + (f", not {kind!r}" if kind is not None else " (it is missing)")
        )
    wire = wires.get(kind)
    extra = set(wire.provider_options) if wire is not None else _DEMO_KEYS
    _check_keys(table, _PROVIDER_KEYS | extra, place)
    base = builtin.get(kind)
    base_url = _string(table, "base_url", place) or (base.base_url if base else None)
    if "api_key_env" in table:
        api_key_env = _string(table, "api_key_env", place)
    else:
        # A redefined built-in keeps its variable; other OpenAI-compatible servers
        # (Ollama, vLLM) often need no key at all.
        api_key_env = base.api_key_env if base and name == kind else None
    headers = table.get("headers", {})
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ConfigError(f"{place}: headers must be a table of strings")
    timeouts = _timeouts(_table(table, "timeouts", where, f"providers.{name}."), place)
    demo: dict[str, Any] = {}
    options: dict[str, str] = {}
    if wire is None:
        for key in ("time_to_first_token", "time_per_token"):
            if key in table:
                demo[key] = _seconds(table, key, place)
        if "speed" in table:
            # Imported here: the providers package imports this module.
            from tokenwire.providers.demo import parse_speed

            try:
                demo["speed"] = parse_speed(table["speed"])
            except ValueError as exc:
                raise ConfigError(f"{place}: {exc}") from None
        for key in ("seed", "fail_after"):
            value = table.get(key)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ConfigError(f"{place}: {key} must be an integer, not {value!r}")
                demo[key] = value
    else:
        if not base_url:
            raise ConfigError(f"{place}: base_url is required")
        for key, default in wire.provider_options.items():
            options[key] = _string(table, key, place) or default
    expose = table.get("expose", False)
    if isinstance(expose, list) and all(isinstance(m, str) for m in expose):
        expose = tuple(expose)
    elif not isinstance(expose, bool):
        raise ConfigError(f"{place}: expose must be true, false or a list of model names")
    given = table.get("prefill")
    prefill: Mapping[str, Any] | None
    if given is None:
        prefill = _default_prefill(kind)
    elif isinstance(given, bool):
        prefill = MappingProxyType({}) if given else None
    elif isinstance(given, Mapping) and all(isinstance(k, str) for k in given):
        prefill = MappingProxyType(dict(given))
    else:
        raise ConfigError(f"{place}: prefill must be true, false or a table of request fields")
    return ProviderConfig(
        name=name,
        type=kind,
        base_url=base_url,
        api_key_env=api_key_env,
        headers=MappingProxyType(dict(headers)),
        timeouts=timeouts,
        options=MappingProxyType(options),
        demo=MappingProxyType(demo),
        expose=expose,
        prefill=prefill,
    )


def _timeouts(table: Mapping[str, Any], place: str) -> Timeouts:
    _check_keys(table, _TIMEOUT_KEYS, f"{place} timeouts")
    defaults = Timeouts()

    def get(key: str) -> float | None:
        value = _seconds(table, key, f"{place} timeouts")
        if value is None:
            return getattr(defaults, key)  # type: ignore[no-any-return]
        return value or None  # 0: no limit

    return Timeouts(
        first_token=get("first_token"),
        idle=get("idle"),
        total=get("total"),
        connect=get("connect") or defaults.connect,
    )


def _model_route(
    name: str, table: dict[str, Any], providers: Mapping[str, ProviderConfig], where: str
) -> ModelRoute:
    place = f"{where}[models.{name}]"
    _check_keys(table, _MODEL_KEYS, place)
    deployments: tuple[Deployment, ...] = ()
    if "deployments" in table:
        for key in ("provider", "model"):
            if key in table:
                raise ConfigError(f"{place}: give either {key} or deployments, not both")
        listed = table["deployments"]
        if not isinstance(listed, list) or not listed:
            raise ConfigError(f"{place}: deployments must be a non-empty list of tables")
        deployments = tuple(
            _deployment(entry, providers, f"{place} deployments[{i}]")
            for i, entry in enumerate(listed)
        )
        provider: str | None = deployments[0].provider
        model: str | None = deployments[0].model
    else:
        provider = _string(table, "provider", place)
        model = _string(table, "model", place) or name
    _check_provider(provider, providers, place)
    assert provider is not None and model is not None
    timeouts = None
    if "timeouts" in table:
        # Keys given here override the provider's; the rest are inherited.
        timeouts = _merged_timeouts(
            providers[provider].timeouts, table["timeouts"], where, f"models.{name}.", place
        )
    limit = table.get("max_output_tokens")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"{place}: max_output_tokens must be a positive integer, not {limit!r}")
    strategy = table.get("strategy", "fallback")
    if strategy not in _STRATEGIES:
        raise ConfigError(f"{place}: strategy must be one of {', '.join(_STRATEGIES)}")
    # With deployments, each one is tried once unless told otherwise.
    retries = table.get("retries", max(len(deployments) - 1, 0))
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
        raise ConfigError(f"{place}: retries must be an integer from 0 to 10, not {retries!r}")
    keep_going = table.get("continue_on_failure", False)
    if not isinstance(keep_going, bool):
        raise ConfigError(f"{place}: continue_on_failure must be true or false")
    cooldown = _seconds(table, "cooldown", place)
    after = _positive_int(table, "cooldown_after", place, default=3)
    return ModelRoute(
        name,
        provider,
        model,
        timeouts,
        limit,
        deployments=deployments,
        strategy=strategy,
        retries=retries,
        continue_on_failure=keep_going,
        cooldown=30.0 if cooldown is None else cooldown,
        cooldown_after=after,
    )


def _deployment(entry: Any, providers: Mapping[str, ProviderConfig], place: str) -> Deployment:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{place} must be a table")
    _check_keys(entry, _DEPLOYMENT_KEYS, place)
    provider = _string(entry, "provider", place)
    _check_provider(provider, providers, place)
    assert provider is not None
    model = _string(entry, "model", place)
    if model is None:
        raise ConfigError(f"{place}: model is required")
    weight = entry.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
        raise ConfigError(f"{place}: weight must be a positive number, not {weight!r}")
    timeouts = None
    if "timeouts" in entry:
        timeouts = _merged_timeouts(providers[provider].timeouts, entry["timeouts"], "", "", place)
    return Deployment(provider, model, float(weight), timeouts)


def _check_provider(
    provider: str | None, providers: Mapping[str, ProviderConfig], place: str
) -> None:
    if provider is None or provider not in providers:
        raise ConfigError(
            f"{place}: provider must be one of {', '.join(sorted(providers))}"
            + (f", not {provider!r}" if provider is not None else " (it is missing)")
        )


def _merged_timeouts(
    base: Timeouts, given_table: Any, where: str, prefix: str, place: str
) -> Timeouts:
    """``given_table``'s timeouts, the keys it lacks taken from ``base``."""
    if not isinstance(given_table, Mapping):
        raise ConfigError(
            f"{where}[{prefix}timeouts] must be a table"
            if prefix
            else f"{place}: timeouts must be a table"
        )
    given = _timeouts(given_table, place)
    return Timeouts(
        first_token=given.first_token if "first_token" in given_table else base.first_token,
        idle=given.idle if "idle" in given_table else base.idle,
        total=given.total if "total" in given_table else base.total,
        connect=given.connect if "connect" in given_table else base.connect,
    )


def _gateway(table: dict[str, Any], where: str) -> GatewayConfig:
    place = f"{where}[gateway]"
    _check_keys(table, _GATEWAY_KEYS, place)
    origins = table.get("cors_origins", [])
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise ConfigError(f"{place}: cors_origins must be a list of strings")
    limit = _positive_int(table, "max_request_bytes", place)
    sizes = {key: _positive_int(table, key, place) for key in _GATEWAY_SIZES}
    connections = table.get("max_connections", 0)
    if isinstance(connections, bool) or not isinstance(connections, int) or connections < 0:
        raise ConfigError(f"{place}: max_connections must be an integer >= 0 (0: automatic)")
    times: dict[str, float] = {}
    for key in _GATEWAY_TIMES:
        value = _seconds(table, key, place)
        if value is not None:
            if value <= 0:
                raise ConfigError(f"{place}: {key} must be a number of seconds > 0")
            times[key] = value
    ping = _seconds(table, "ping", place)
    if ping is not None and ping <= 0:
        raise ConfigError(f"{place}: ping must be a number of seconds > 0")
    resume = _string(table, "resume", place)
    if resume is not None and resume != "memory" and not resume.startswith(_RESUME_SCHEMES):
        raise ConfigError(
            f'{place}: resume must be "memory" or a redis://, rediss:// or unix:// URL, '
            f"not {resume[:100]!r}"
        )
    grace = _seconds(table, "resume_grace", place)
    expiry = _seconds(table, "resume_expiry", place)
    if expiry is not None and expiry <= 0:
        raise ConfigError(f"{place}: resume_expiry must be a number of seconds > 0")
    fallback = table.get("resume_fallback", False)
    if not isinstance(fallback, bool):
        raise ConfigError(f"{place}: resume_fallback must be true or false, not {fallback!r}")
    expose = table.get("expose_errors", False)
    if not isinstance(expose, bool):
        raise ConfigError(f"{place}: expose_errors must be true or false, not {expose!r}")
    tracing = table.get("tracing", False)
    if not isinstance(tracing, bool):
        raise ConfigError(f"{place}: tracing must be true or false, not {tracing!r}")
    if tracing and not _have_opentelemetry():
        # Said now, when `tokenwire serve` reads the file, rather than by a worker later.
        raise ConfigError(f"{where}{TRACING_NEEDS_OTEL}")
    return GatewayConfig(
        api_keys_env=_string(table, "api_keys_env", place),
        cors_origins=tuple(origins),
        max_request_bytes=limit,
        ping=ping if ping is not None else _DEFAULT_GATEWAY.ping,
        resume=resume,
        resume_grace=grace if grace is not None else _DEFAULT_GATEWAY.resume_grace,
        resume_expiry=expiry if expiry is not None else _DEFAULT_GATEWAY.resume_expiry,
        resume_fallback=fallback,
        max_connections=connections,
        tracing=tracing,
        expose_errors=expose,
        **sizes,
        **times,  # type: ignore[arg-type]
    )


def _have_opentelemetry() -> bool:
    """Whether the OpenTelemetry API is installed (found, not imported)."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except ImportError:  # not even the ``opentelemetry`` namespace is there
        return False


def _agent(
    name: str, table: dict[str, Any], providers: Mapping[str, ProviderConfig], where: str
) -> AgentConfig:
    place = f"{where}[agents.{name}]"
    _check_keys(table, _AGENT_KEYS, place)
    provider = _string(table, "provider", place) or "demo"
    if provider not in providers:
        raise ConfigError(
            f"{place}: unknown provider {provider!r} (defined: {', '.join(sorted(providers))})"
        )
    model = _string(table, "model", place)
    if not model:
        if providers[provider].type != "demo":
            raise ConfigError(f"{place}: model is required for provider {provider!r}")
        model = "demo"
    options_table = _table(table, "options", where, f"agents.{name}.")
    try:
        options = StreamOptions.coerce(options_table)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{place} options: {exc}") from None
    return AgentConfig(name, provider, model, _string(table, "system", place), options)
