"""The ``tokenwire`` command: ``serve``, ``chat`` and ``tail``.

- ``tokenwire serve``: the gateway (:mod:`tokenwire.gateway`) on uvicorn with uvloop and
  httptools. The configuration is checked before the server starts.
- ``tokenwire chat "prompt"``: streams a reply to the terminal, from an
  OpenAI-compatible endpoint (``--url``, ``--model``) or from a configured agent run
  in-process (``--agent``), then prints the time to first token and tokens/s.
- ``tokenwire tail URL``: prints the events of any Server-Sent Events endpoint as they
  arrive, reconnecting (with ``Last-Event-ID``) when the stream drops.

Exit status: 0 on success; 1 when the request or stream failed (connection refused,
an HTTP error, an error event); 2 for bad arguments or configuration; 130 after Ctrl-C
(which also closes the upstream connection). Every error is one line on stderr,
``tokenwire <command>: error: <what went wrong>``; no tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import errno
import importlib.util
import io
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import orjson

from tokenwire import __version__

if TYPE_CHECKING:
    from tokenwire.llm.protocol import WireProtocol
    from tokenwire.llm.requests import ChatRequest

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DEFAULT_URL = "http://127.0.0.1:8000/v1"
URL_ENV = "TOKENWIRE_URL"
API_KEY_ENV = "TOKENWIRE_API_KEY"
CONFIG_ENV = "TOKENWIRE_CONFIG"
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


class CLIError(Exception):
    """A failure to report as one line on stderr, with an exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# --- argument parsing ----------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors in the same one-line form as the other errors."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _demo_speed(text: str) -> str:
    from tokenwire.providers.demo import parse_speed

    try:
        parse_speed(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in " \t\r\n"):
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    value = value.strip()
    if "\r" in value or "\n" in value:
        raise argparse.ArgumentTypeError(f"header value must be one line: {text!r}")
    return name, value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tokenwire`` command (all subcommands)."""
    parser = _Parser(
        prog="tokenwire",
        description="Stream LLM output over Server-Sent Events: gateway, chat client, SSE tail.",
    )
    parser.add_argument("--version", action="version", version=f"tokenwire {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    serve = sub.add_parser(
        "serve",
        help="run the gateway (every wire protocol's endpoints, in front of any provider)",
        description=(
            "Run the gateway: "
            + ", ".join(f"POST {p.endpoints[0]} ({p.title})" for p in _protocols())
            + ", GET /v1/models, the chat page at /, /healthz and /metrics. "
            "Without a configuration file it serves the built-in 'demo' model."
        ),
    )
    serve.add_argument(
        "--config",
        metavar="FILE",
        help=f"configuration file (default: ${CONFIG_ENV}, else ./tokenwire.toml if present, "
        "else built-in defaults)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    serve.add_argument(
        "--port",
        type=_port,
        default=8000,
        help="port to listen on (default: %(default)s; 0: any free port, shown at start)",
    )
    serve.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="worker processes (default: %(default)s)",
    )
    serve.add_argument(
        "--log-level",
        choices=_LOG_LEVELS,
        default="info",
        help="log level (default: %(default)s)",
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="also write uvicorn's own access log (the gateway logs every stream itself)",
    )
    serve.add_argument(
        "--demo-speed",
        type=_demo_speed,
        metavar="X",
        help="pace of demo models that set no speed: a factor of the realistic pace "
        "(about 300 ms to the first token, then 40 tokens/s; 2 is twice as fast) or "
        "'max' for no pacing (default: $TOKENWIRE_DEMO_SPEED, else 1)",
    )
    serve.set_defaults(run=_serve)

    chat = sub.add_parser(
        "chat",
        help="stream a reply to the terminal",
        description=(
            "Stream a reply to PROMPT to stdout as it arrives, then print the time to first "
            "token and tokens/s to stderr. By default it calls an OpenAI-compatible endpoint "
            f"(--url, default ${URL_ENV} or {DEFAULT_URL}) in the protocol --protocol names "
            f"({', '.join(p.title for p in _protocols())}); with --agent it runs an agent from the "
            "configuration in this process. Ctrl-C stops and closes the connection."
        ),
    )
    chat.add_argument(
        "prompt", nargs="?", help="the message (default: read from stdin when it is not a tty)"
    )
    chat.add_argument("--agent", metavar="NAME", help="run this configured agent in-process")
    chat.add_argument("--model", metavar="M", help="model to ask the endpoint for (default: demo)")
    chat.add_argument(
        "--url",
        metavar="URL",
        help=f"OpenAI-compatible base URL (default: ${URL_ENV} or {DEFAULT_URL})",
    )
    chat.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"key for the endpoint (default: ${API_KEY_ENV}, if set)",
    )
    chat.add_argument(
        "--protocol",
        choices=_protocol_names(),
        default="openai",
        help=f"wire protocol to call the endpoint with: {_protocol_list()} (default: %(default)s)",
    )
    chat.add_argument("--system", metavar="TEXT", help="system prompt (endpoint mode)")
    chat.add_argument(
        "--config", metavar="FILE", help="configuration file for --agent (as for serve)"
    )
    chat.add_argument("--temperature", type=float, metavar="T", help="sampling temperature, 0..2")
    chat.add_argument("--max-tokens", type=int, metavar="N", help="upper bound on reply length")
    chat.add_argument(
        "--stop",
        action="append",
        metavar="TEXT",
        help="stop sequence (repeat for several)",
    )
    chat.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="give up if no data arrives for this long (default: no limit)",
    )
    chat.set_defaults(run=_chat)

    tail = sub.add_parser(
        "tail",
        help="print the events of any SSE endpoint as they arrive",
        description=(
            "Print the events of a Server-Sent Events endpoint as they arrive, reconnecting "
            "with Last-Event-ID when the stream drops (said on stderr, with why). Stops after "
            "an LLM stream's end (data: [DONE], message_stop, response.completed, "
            "response.incomplete, response.failed, an error event) or a 204, and never sends "
            "a POST again unless the server sent event ids (a resume, not a new generation). "
            "Plain output is the events in the wire format ('event:' and 'id:' lines when "
            "the event has them, each data line as 'data: ...', a blank line); --json prints "
            'one object per line: {"event", "data", "id", "retry"}.'
        ),
    )
    tail.add_argument("url", metavar="URL", help="the event stream's URL")
    tail.add_argument(
        "-H",
        "--header",
        dest="headers",
        action="append",
        type=_header,
        default=[],
        metavar="'Name: value'",
        help="request header (repeat for several)",
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per event per line")
    tail.add_argument("--last-event-id", metavar="ID", help="resume after this event id")
    tail.add_argument(
        "--no-reconnect", action="store_true", help="stop when the stream ends or drops"
    )
    tail.add_argument(
        "--max-reconnects",
        type=_positive_int,
        metavar="N",
        help="give up after N reconnections in a row that bring no event (default: never)",
    )
    tail.add_argument(
        "-X", "--method", metavar="METHOD", help="HTTP method (default: GET, or POST with --data)"
    )
    tail.add_argument("-d", "--data", metavar="BODY", help="request body (resent on reconnection)")
    tail.add_argument(
        "--idle-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="treat the connection as dead after this long without data, and reconnect",
    )
    tail.set_defaults(run=_tail)
    return parser


# --- serve ---------------------------------------------------------------------------


def _config_path(option: str | None) -> Path | None:
    """The configuration file the gateway will read, or ``None`` for the built-in
    defaults: ``--config``, else ``$TOKENWIRE_CONFIG``, else ``./tokenwire.toml``."""
    named = option if option is not None else os.environ.get(CONFIG_ENV) or None
    if named is not None:
        return Path(named).expanduser().resolve()
    default = Path("tokenwire.toml")
    return default.resolve() if default.is_file() else None


def _load_config(option: str | None) -> tuple[Any, Path | None]:
    from tokenwire.config import ConfigError, load_config

    path = _config_path(option)
    if path is not None and not path.is_file():
        raise CLIError(f"config file not found: {path}", EXIT_USAGE)
    try:
        config = load_config(path)
    except ConfigError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    return config, path


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from tokenwire.config import ConfigError

    config, path = _load_config(args.config)
    try:
        config.gateway.api_keys()  # a configured but unset key variable fails here, not later
    except ConfigError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    if args.demo_speed is not None:
        from tokenwire.providers.demo import SPEED_ENV

        os.environ[SPEED_ENV] = args.demo_speed  # read by every worker's demo providers
    # Workers are separate processes: they find the (absolute) file through the variable.
    if path is not None:
        os.environ[CONFIG_ENV] = str(path)
    else:
        os.environ.pop(CONFIG_ENV, None)

    log_config = copy.deepcopy(LOGGING_CONFIG)
    # uvicorn's "trace" is level 5, below DEBUG; logging knows it only by number here.
    level: int | str = 5 if args.log_level == "trace" else args.log_level.upper()
    # The gateway's own loggers (structured access log) go where uvicorn's go.
    log_config["loggers"]["tokenwire"] = {
        "handlers": ["default"],
        "level": level,
        "propagate": False,
    }
    # Credentials in query strings (the chat page's ?api_key=) never reach the log.
    log_config.setdefault("filters", {})["redact"] = {
        "()": "tokenwire.gateway.serving.RedactQuerySecrets"
    }
    log_config["handlers"]["access"].setdefault("filters", []).append("redact")

    host = args.host
    # Listening before the banner: a busy port is said plainly (and the banner never
    # announces a server that is not there); uvicorn serves this socket.
    listener = _listen(host, args.port)
    port = listener.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    models = ", ".join(sorted(config.models))
    source = str(path) if path is not None else "built-in defaults"
    base = f"http://{shown}:{port}"
    print(
        f"tokenwire gateway on {base}  (chat page: {base}/)\n"
        f"  OpenAI SDK base_url: {base}/v1   Anthropic SDK base_url: {base}\n"
        f"  config: {source}; models: {models}",
        flush=True,
    )
    if args.workers > 1:
        import atexit
        import shutil
        import tempfile

        from tokenwire.gateway.metrics_files import METRICS_DIR_ENV

        # Workers add up their /metrics through files in a directory of this run's own.
        metrics_dir = tempfile.mkdtemp(prefix="tokenwire-metrics-")
        atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
        os.environ[METRICS_DIR_ENV] = metrics_dir
    uvicorn.run(
        "tokenwire.gateway:create_app",
        factory=True,
        fd=listener.fileno(),
        workers=args.workers,
        loop="uvloop" if _have("uvloop") else "auto",
        # uvicorn's httptools protocol with the [gateway] limits on request heads,
        # slow heads and open connections (uvicorn[standard] brings httptools).
        http="tokenwire.gateway.serving:GatewayHttpProtocol",
        timeout_keep_alive=config.gateway.keep_alive_timeout,
        log_level=args.log_level,
        log_config=log_config,
        access_log=args.access_log,
    )
    return EXIT_OK


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host``:``port`` (as uvicorn would bind it), or a
    :class:`CLIError` saying why not and what to do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        where = f"{host}:{port}"
        advice = (
            f"pick another port with --port (e.g. --port {port + 1}, or --port 0 for any free port)"
        )
        if exc.errno == errno.EADDRINUSE:
            message = (
                f"port {port} is already in use on {host} (another server listens there): {advice}"
            )
        elif exc.errno == errno.EACCES:
            message = (
                f"not allowed to listen on {where} (ports below 1024 need privileges): {advice}"
            )
        elif isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            message = (
                f"cannot listen on {host!r}: not an address of this machine (try --host 127.0.0.1)"
            )
        else:
            message = f"cannot listen on {where}: {exc.strerror or exc}"
        raise CLIError(message, EXIT_USAGE) from None
    sock.set_inheritable(True)  # worker processes serve it too
    return sock


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# --- chat ----------------------------------------------------------------------------


def _read_prompt(prompt: str | None) -> str:
    if prompt is None or prompt == "-":
        if prompt is None and sys.stdin.isatty():
            raise CLIError('a prompt is required: tokenwire chat "your message"', EXIT_USAGE)
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise CLIError("the prompt is empty", EXIT_USAGE)
    return prompt


def _options(args: argparse.Namespace) -> Any:
    from tokenwire.options import StreamOptions

    try:
        return StreamOptions(
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            stop_sequences=args.stop,
        )
    except ValueError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None


def _protocol_names() -> tuple[str, ...]:
    from tokenwire.llm.protocol import protocol_names

    return protocol_names()


def _protocols() -> tuple[WireProtocol, ...]:
    from tokenwire.llm.protocol import protocols

    return tuple(protocols())


def _protocol_list() -> str:
    return ", ".join(f"{p.name} ({p.title})" for p in _protocols())


def _endpoint(url: str, wire: WireProtocol, request: ChatRequest) -> str:
    """Where ``request`` goes under a base URL (``http://host:8000/v1``, the protocol's
    own base such as ``.../v1beta``, or the server's root; a URL that already is a fixed
    endpoint is kept)."""
    url = url.rstrip("/")
    path = wire.endpoints[0]
    if "{" not in path and (url.endswith(path) or url.endswith(wire.upstream_path)):
        return url
    root = url
    for base in ("/v1", wire.server_base_path):
        if base and root.endswith(base):
            root = root[: -len(base)]
            break
    return wire.server_url(root, request)


class _Meter:
    """Time to first token and output rate of one reply, printed to stderr."""

    __slots__ = ("chunks", "ended", "first", "started", "trailing_newline")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first: float | None = None
        self.ended: float | None = None
        self.chunks = 0
        self.trailing_newline = True

    def content(self, text: str, out: TextIO) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        self.chunks += 1
        if text:
            out.write(text)
            out.flush()
            self.trailing_newline = text.endswith("\n")

    def report(self, message: Any) -> str:
        end = self.ended if self.ended is not None else time.perf_counter()
        if self.first is None:
            return "no content received"
        ttft = (self.first - self.started) * 1000
        tokens = message.usage.output_tokens
        unit = "tokens"
        if tokens is None:  # the endpoint reported no usage: count streamed pieces instead
            tokens, unit = self.chunks, "chunks"
        # The rate is worked out from the figures printed, rounded as printed: the
        # tokens after the first over the time after the first token.
        span = round(end - self.first, 3)
        parts = [
            f"time to first token {ttft:.0f} ms",
            f"{tokens} {unit} in {end - self.started:.2f} s",
        ]
        if tokens > 1:
            after = f"{tokens - 1} after the first in {span:.3f} s"
            if span > 0:
                after += f": {(tokens - 1) / span:.1f} {unit}/s"
            else:
                after += " (all at once: no rate)"
            parts.append(after)
        if message.finish_reason and message.finish_reason != "stop":
            parts.append(f"finish: {message.finish_reason}")
        return " · ".join(parts)


def _write_delta(delta: Any, meter: _Meter, out: TextIO) -> None:
    from tokenwire.llm.model import RefusalDelta, TextDelta, ToolCallDelta

    kind = type(delta)
    if kind is TextDelta or kind is RefusalDelta:
        if delta.choice == 0:
            meter.content(delta.text, out)
    elif kind is ToolCallDelta and delta.choice == 0:
        meter.content("", out)


def _tool_calls(message: Any, err: TextIO) -> None:
    for call in message.tool_calls:
        err.write(f"[tool call {call.name}({call.arguments})]\n")


async def _chat_url(args: argparse.Namespace, prompt: str, options: Any) -> int:
    from tokenwire.client import astream_chat
    from tokenwire.errors import StreamError
    from tokenwire.llm.protocol import get_protocol
    from tokenwire.llm.requests import ChatMessage, ChatRequest, RequestError, TextPart

    wire = get_protocol(args.protocol)
    request = ChatRequest(
        model=args.model or "demo",
        messages=[ChatMessage("user", [TextPart(prompt)])],
        system=args.system,
        max_tokens=options.max_tokens,
        temperature=options.temperature,
        stop=list(options.stop_sequences or ()),
        stream=True,
        include_usage=True,
    )
    url = _endpoint(args.url or os.environ.get(URL_ENV) or DEFAULT_URL, wire, request)
    try:
        body = wire.write_request(request)
    except RequestError as exc:
        raise CLIError(f"{exc} (--protocol {wire.name})", EXIT_USAGE) from None
    key = args.api_key or os.environ.get(API_KEY_ENV)
    headers = {"User-Agent": f"tokenwire/{__version__}", **wire.auth_headers(key, {})}

    out, err = sys.stdout, sys.stderr
    meter = _Meter()
    stream = astream_chat(
        url, json=body, headers=headers, protocol=wire.name, idle_timeout=args.timeout
    )
    try:
        async with stream:
            async for delta in stream:
                _write_delta(delta, meter, out)
            meter.ended = time.perf_counter()
    except StreamError as exc:
        _end_line(meter, out)
        message = _describe(exc, url)
        if not args.url and not os.environ.get(URL_ENV) and _connect_failure(exc) is not None:
            message += " (start a gateway with: tokenwire serve)"
        raise CLIError(message) from None
    _end_line(meter, out)
    _tool_calls(stream.message, err)
    err.write(meter.report(stream.message) + "\n")
    return EXIT_OK


async def _chat_agent(args: argparse.Namespace, prompt: str, options: Any) -> int:
    from tokenwire.agent import Agent
    from tokenwire.config import ConfigError
    from tokenwire.errors import StreamError

    config, _ = _load_config(args.config)
    try:
        agent = Agent.from_config(config, args.agent)
    except ConfigError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    out, err = sys.stdout, sys.stderr
    meter = _Meter()
    if args.timeout is not None:
        options = options.merged({"idle_timeout": args.timeout})
    try:
        async with agent.stream(prompt, options) as stream:
            async for delta in stream:
                _write_delta(delta, meter, out)
            meter.ended = time.perf_counter()
    except StreamError as exc:
        _end_line(meter, out)
        raise CLIError(_describe(exc, f"agent {args.agent!r}")) from None
    finally:
        await agent.aclose()
    _end_line(meter, out)
    _tool_calls(stream.message, err)
    err.write(meter.report(stream.message) + "\n")
    return EXIT_OK


def _end_line(meter: _Meter, out: TextIO) -> None:
    if not meter.trailing_newline:
        out.write("\n")
        out.flush()
        meter.trailing_newline = True


def _connect_failure(exc: BaseException) -> BaseException | None:
    """The connection-level cause (refused, unreachable, DNS) in ``exc``'s chain."""
    import httpx2

    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, httpx2.ConnectError | ConnectionRefusedError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _describe(exc: Any, where: str) -> str:
    """One line for a :class:`~tokenwire.errors.StreamError`."""
    failure = _connect_failure(exc)
    if failure is not None:
        reason = str(failure) or type(failure).__name__
        return f"cannot connect to {where}: {reason}"
    status = f", HTTP {exc.status}" if exc.status is not None else ""
    return f"{exc.type}{status}: {exc.message} ({where})"


def _chat(args: argparse.Namespace) -> int:
    if args.agent is not None and (args.url is not None or args.model is not None):
        raise CLIError(
            "--agent runs a configured agent; it cannot be combined with --url/--model", EXIT_USAGE
        )
    if args.agent is None and args.config is not None:
        raise CLIError("--config is used with --agent (the endpoint has its own)", EXIT_USAGE)
    prompt = _read_prompt(args.prompt)
    options = _options(args)
    if args.agent is not None:
        return asyncio.run(_chat_agent(args, prompt, options))
    return asyncio.run(_chat_url(args, prompt, options))


# --- tail ----------------------------------------------------------------------------


# The events after which an LLM stream is over: reconnecting would regenerate it.
_END_EVENTS = frozenset(
    {"message_stop", "response.completed", "response.incomplete", "response.failed", "error"}
)


def _is_end(event: Any) -> bool:
    return bool(event.data == "[DONE]" or event.event in _END_EVENTS)


def _format_event(event: Any, as_json: bool) -> str:
    if as_json:
        record = {"event": event.event, "data": event.data, "id": event.id, "retry": event.retry}
        return orjson.dumps(record).decode() + "\n"
    # The event in the wire format: every data line prefixed, so that multi-line data and
    # blank lines in it cannot be mistaken for the end of an event.
    lines = []
    if event.event != "message":
        lines.append(f"event: {event.event}\n")
    if event.id is not None:
        lines.append(f"id: {event.id}\n")
    lines.append("data: " + event.data.replace("\n", "\ndata: ") + "\n\n")
    return "".join(lines)


def _fault_text(fault: Any) -> str:
    if fault.reason == "end":
        return "the server ended the stream"
    if fault.reason == "restart":
        return "restarted"
    error = fault.error
    return f"connection lost ({type(error).__name__}: {error})" if error else "connection lost"


async def _tail_events(args: argparse.Namespace) -> int:
    from tokenwire.client import AsyncEventSource, Fault, SSEConnectionError
    from tokenwire.sse import ServerSentEvent, SSEDecodeError

    method = (args.method or ("POST" if args.data is not None else "GET")).upper()
    source = AsyncEventSource(
        args.url,
        method,
        headers=dict(args.headers),
        content=args.data,
        last_event_id=args.last_event_id,
        reconnect=not args.no_reconnect,
        max_reconnects=args.max_reconnects,
        idle_timeout=args.idle_timeout,
    )
    out, err = sys.stdout, sys.stderr
    as_json = args.json
    try:
        async with source:
            items = source.all()
            while True:
                try:
                    item = await anext(items)
                except StopAsyncIteration:
                    break
                except SSEDecodeError as exc:  # one oversize event dropped; the rest goes on
                    err.write(f"tokenwire tail: warning: {exc}\n")
                    items = source.all()
                    continue
                if type(item) is ServerSentEvent:
                    out.write(_format_event(item, as_json))
                    out.flush()
                    if _is_end(item):
                        break  # the reply is complete: reconnecting would ask for another
                elif isinstance(item, Fault) and item.delay is not None:
                    resumes = source.last_event_id
                    if method != "GET" and not resumes:
                        # Without event ids the server cannot resume: a reconnection would
                        # send the request again (for an LLM endpoint, a new generation).
                        if item.reason == "end":
                            return EXIT_OK
                        raise CLIError(
                            f"{_fault_text(item)}; not reconnecting: the stream has no event "
                            f"ids, and sending the {method} request again would repeat it"
                        )
                    after = f", after event id {resumes!r}" if resumes else ""
                    err.write(
                        f"tokenwire tail: {_fault_text(item)}; reconnecting in "
                        f"{item.delay:.1f} s (attempt {item.attempt}{after})\n"
                    )
                    err.flush()
    except SSEConnectionError as exc:
        failure = _connect_failure(exc)
        if failure is not None:
            raise CLIError(f"cannot connect to {args.url}: {failure}") from None
        if exc.status is None and exc.__cause__ is not None:
            cause = exc.__cause__
            raise CLIError(
                f"connection to {args.url} lost: {str(cause) or type(cause).__name__}"
            ) from None
        raise CLIError(exc.message) from None
    return EXIT_OK


def _tail(args: argparse.Namespace) -> int:
    if not args.url.startswith(("http://", "https://")):
        raise CLIError(f"URL must start with http:// or https://: {args.url!r}", EXIT_USAGE)
    return asyncio.run(_tail_events(args))


# --- entry point ---------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tokenwire`` command with ``argv`` (default: ``sys.argv[1:]``); return the
    exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    name = f"tokenwire {args.command}"
    try:
        # Text that the terminal cannot show must not end a stream half-way.
        if isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(errors="replace")
        status: int = args.run(args)
        return status
    except CLIError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"{name}: error: {exc.message}\n")
        return exc.status
    except KeyboardInterrupt:
        # asyncio.run cancelled the task first: its `async with` blocks closed the
        # upstream connection before we got here.
        sys.stderr.write(f"\n{name}: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, without a second error
        # when Python flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
