"""The protocol interface's hooks, and the proof that they are enough: a made-up protocol
that names the model in its paths, takes its key from a header of its own and lists
models at a path of its own is served by the gateway, reached by the HTTP provider and
called by ``tokenwire chat`` without any of them naming it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx2
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokenwire.cli import _endpoint, main
from tokenwire.config import from_mapping
from tokenwire.errors import StreamError
from tokenwire.gateway import create_app
from tokenwire.llm import protocol as protocol_module
from tokenwire.llm.model import FinishDelta, MessageStart, TextDelta, Usage, UsageDelta
from tokenwire.llm.openai_chat import OpenAIChat, openai_error_object
from tokenwire.llm.openai_encode import OpenAIChunkEncoder
from tokenwire.llm.protocol import WireProtocol, bearer_or_api_key, get_protocol
from tokenwire.llm.requests import ChatMessage, ChatRequest, TextPart, from_openai
from tokenwire.providers import HTTPProvider, http

from .conftest import serve

KEY = "tw-client-key"


class PathModel(OpenAIChat):
    """Chat completions bodies and chunks, but addressed the way some APIs address
    them: the model in the path, the key in ``x-path-key`` or ``?key=``, errors
    under ``"fault"``, the model list at a path of its own."""

    name = "pathmodel"
    title = "Path-model test protocol"
    provider_type = "pathmodel"
    endpoints = ("/v9/models/{model}:{method}",)
    upstream_path = "/models/{model}:stream"
    models_path = "/v9/models"
    id_prefix = "pm-"

    def upstream_url(self, base_url: str, request: ChatRequest) -> str:
        return f"{base_url}/models/{quote(request.model, safe='')}:stream"

    def client_key(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        return headers.get("x-path-key") or query.get("key")

    def auth_headers(self, key: str | None, options: Mapping[str, str]) -> dict[str, str]:
        return {"x-path-key": key} if key else {}

    def parse_request(
        self, body: Mapping[str, Any], params: Mapping[str, str] | None = None
    ) -> ChatRequest:
        assert params is not None
        return from_openai({**body, "model": params["model"], "stream": True})

    def write_request(self, request: ChatRequest) -> dict[str, Any]:
        body = super().write_request(request)
        del body["model"]  # it is in the path
        return body

    def model_list(self, names: list[str], owners: Mapping[str, str]) -> dict[str, Any]:
        return {"models": [{"name": f"models/{n}"} for n in names]}

    def error_object(self, err: StreamError) -> dict[str, Any]:
        return {"fault": openai_error_object(err)}


PATH_MODEL = PathModel()


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[PathModel]:
    """``PathModel`` in the registry for one test (nothing else knows it)."""
    protocol_module.protocols()  # the built-in ones first
    monkeypatch.setitem(protocol_module._registry, PATH_MODEL.name, PATH_MODEL)
    yield PATH_MODEL


def chat(model: str) -> ChatRequest:
    return ChatRequest(model, [ChatMessage("user", [TextPart("hi")])], stream=True)


# --- the defaults keep the built-in protocols as they were -----------------------------


@pytest.mark.parametrize(
    ("name", "base", "url", "server"),
    [
        ("openai", "/v1", "B/chat/completions", "R/v1/chat/completions"),
        ("anthropic", "", "B/v1/messages", "R/v1/messages"),
        ("responses", "/v1", "B/responses", "R/v1/responses"),
    ],
)
def test_default_paths_of_the_builtin_protocols(
    name: str, base: str, url: str, server: str
) -> None:
    wire = get_protocol(name)
    assert wire.server_base_path == base
    assert wire.upstream_url("B", chat("m")) == url
    assert wire.server_url("R", chat("m")) == server
    assert wire.models_path is None
    assert type(wire).upstream_url is WireProtocol.upstream_url


def test_stream_framing_defaults() -> None:
    # A protocol says whether its clients read event ids and comments; by default they
    # are not assumed to (some SDKs take every line but a blank one for data).
    assert (WireProtocol.resumable, WireProtocol.heartbeat) == (False, b"\n")
    for name in ("openai", "anthropic", "responses"):
        wire = get_protocol(name)
        assert (wire.resumable, wire.heartbeat) == (True, b": ping\n"), name
    assert get_protocol("openai").max_tokens_fields == ("max_completion_tokens", "max_tokens")
    assert get_protocol("anthropic").max_tokens_fields == ("max_tokens",)
    assert get_protocol("responses").max_tokens_fields == ("max_output_tokens",)
    assert [get_protocol(n).telemetry_name or n for n in ("openai", "anthropic", "responses")] == [
        "openai",
        "anthropic",
        "openai",
    ]


@pytest.mark.parametrize("name", ["openai", "anthropic", "responses"])
def test_default_client_key(name: str) -> None:
    wire = get_protocol(name)
    assert wire.client_key({"authorization": "Bearer k1"}, {}) == "k1"
    assert wire.client_key({"authorization": "bearer  k1 "}, {}) == "k1"
    assert wire.client_key({"x-api-key": "k2"}, {}) == "k2"
    # An empty bearer token does not hide an x-api-key.
    assert wire.client_key({"authorization": "Bearer ", "x-api-key": "k2"}, {}) == "k2"
    assert wire.client_key({"authorization": "Basic abc"}, {}) is None
    assert wire.client_key({}, {"key": "k3", "api_key": "k3"}) is None  # not in the query
    assert bearer_or_api_key({"authorization": "Bearer k1"}) == "k1"


def test_path_model_paths() -> None:
    assert PATH_MODEL.server_base_path == "/v9"
    assert PATH_MODEL.server_url("http://h", chat("a/b")) == "http://h/v9/models/a%2Fb:stream"
    request = chat("m")
    for given in ("http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v9"):
        assert _endpoint(given, PATH_MODEL, request) == "http://h:1/v9/models/m:stream"
    # The built-in protocols' URLs, as before.
    openai = get_protocol("openai")
    assert _endpoint("http://h/v1", openai, request) == "http://h/v1/chat/completions"
    assert _endpoint("http://h", get_protocol("anthropic"), request) == "http://h/v1/messages"
    kept = "http://h/custom/chat/completions"
    assert _endpoint(kept, openai, request) == kept


# --- the HTTP provider --------------------------------------------------------------------


def upstream_app(paths: list[str]) -> Starlette:
    """Chat completions chunks at ``/models/{model}:stream``; records the paths hit."""

    async def stream(request: Request) -> Response:
        paths.append(request.url.path)
        if request.headers.get("x-path-key") != "up-key":
            body = {"error": {"message": "bad key", "type": "authentication_error"}}
            return Response(orjson.dumps(body), status_code=401, media_type="application/json")
        encoder = OpenAIChunkEncoder(include_usage=True)
        model = request.path_params["model"]
        out = b"".join(
            encoder.encode(d)
            for d in (
                MessageStart(id="up-1", model=model),
                TextDelta(f"hello from {model}"),
                FinishDelta("stop"),
                UsageDelta(Usage(input_tokens=3, output_tokens=4)),
            )
        )
        return Response(out + encoder.done(), media_type="text/event-stream")

    return Starlette(routes=[Route("/models/{model:path}:stream", stream, methods=["POST"])])


async def test_http_provider_url_fixed_once_or_per_model_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fixed = HTTPProvider("o", protocol="openai", base_url="http://127.0.0.1:1/v1")
    assert fixed._url is not None and str(fixed._url) == "http://127.0.0.1:1/v1/chat/completions"
    monkeypatch.setattr(http, "_MAX_URLS", 3)
    paths: list[str] = []
    with serve(upstream_app(paths)) as url:
        provider = HTTPProvider("p", protocol=PATH_MODEL, base_url=url + "/", api_key="up-key")
        assert provider._url is None
        try:
            for model in ("m1", "m2", "m1", "m3", "m4", "m5", "a/b"):
                items = await provider.open(chat(model))
                deltas = [d async for _, batch in items for d in batch]
                assert f"hello from {model}" in [d.text for d in deltas if type(d) is TextDelta]
            assert len(provider._urls) == 3  # the oldest were let go
        finally:
            await provider.aclose()
    assert paths == [f"/models/{m}:stream" for m in ("m1", "m2", "m1", "m3", "m4", "m5", "a/b")]


# --- the gateway ----------------------------------------------------------------------------


@pytest.fixture
def path_gateway(registered: PathModel, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("TW_TEST_CLIENT_KEYS", KEY)
    monkeypatch.setenv("TW_TEST_UPSTREAM_KEY", "up-key")
    paths: list[str] = []
    with serve(upstream_app(paths)) as upstream:
        config = {
            "providers": {
                "pm": {
                    "type": "pathmodel",
                    "base_url": upstream,
                    "api_key_env": "TW_TEST_UPSTREAM_KEY",
                    "expose": True,
                }
            },
            "models": {"alias": {"provider": "pm", "model": "real"}},
            "gateway": {"api_keys_env": "TW_TEST_CLIENT_KEYS"},
        }
        with serve(create_app(from_mapping(config))) as url:
            yield url


@pytest.mark.integration
def test_a_protocol_with_the_model_in_its_paths_is_served_generically(
    path_gateway: str,
) -> None:
    url = path_gateway
    body = {"messages": [{"role": "user", "content": "hi"}]}
    with httpx2.Client(base_url=url, timeout=30) as client:
        # The key where this protocol's clients send it: its header, or the query.
        for headers, query in (({"x-path-key": KEY}, ""), ({}, f"?key={KEY}")):
            reply = client.post(f"/v9/models/alias:go{query}", json=body, headers=headers)
            assert reply.status_code == 200, reply.text
            assert reply.headers["content-type"].startswith("text/event-stream")
            assert b"hello from real" in reply.content  # passed through from the upstream
        # Other protocols' ways of sending the key do not count on its endpoints.
        refused = client.post("/v9/models/alias:go", json=body, headers={"x-api-key": KEY})
        assert refused.status_code == 401
        assert refused.json()["fault"]["type"] == "authentication_error"
        # ...but still do on theirs, and its key header does not.
        openai_body = {"model": "alias", **body}
        assert client.post("/v1/chat/completions", json=openai_body).status_code == 401
        ok = client.post("/v1/chat/completions", json=openai_body, headers={"x-api-key": KEY})
        assert ok.status_code == 200 and b"hello from real" in ok.content
        # Its model list, at its own path and in its own shape.
        listed = client.get("/v9/models", headers={"x-path-key": KEY})
        assert listed.status_code == 200
        assert {"name": "models/alias"} in listed.json()["models"]
        assert client.get("/v9/models").status_code == 401
        assert client.get("/v1/models", headers={"x-api-key": KEY}).json()["object"] == "list"
        # Unknown paths and wrong methods under its prefix answer in its shape.
        missing = client.get("/v9/models/alias/whatever")
        assert missing.status_code == 404 and "fault" in missing.json()
        wrong = client.get("/v9/models/alias:go", headers={"x-path-key": KEY})
        assert wrong.status_code == 405 and "fault" in wrong.json()


@pytest.mark.integration
def test_chat_cli_reaches_a_path_model_endpoint(
    path_gateway: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["chat", "hi", "--url", path_gateway, "--model", "alias", "--api-key", KEY]
    code = main([*args, "--protocol", "pathmodel"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.strip() == "hello from real"
    assert "time to first token" in out.err


# --- configuration from the registry -------------------------------------------------------


def test_every_protocol_with_a_public_endpoint_has_a_builtin_provider() -> None:
    providers = from_mapping({}).providers
    for wire in protocol_module.protocols():
        if wire.default_base_url is None:
            continue
        built_in = providers[wire.provider_type]
        assert built_in.protocol == wire.name
        assert (built_in.base_url, built_in.api_key_env) == (
            wire.default_base_url,
            wire.default_key_env,
        )
    assert providers["gemini"].base_url == "https://generativelanguage.googleapis.com/v1beta"


def test_a_gemini_provider_with_a_base_url_of_its_own() -> None:
    config = from_mapping(
        {"providers": {"local": {"type": "gemini", "base_url": "http://127.0.0.1:9/v1beta/"}}}
    )
    provider = HTTPProvider.from_config(config.providers["local"])
    assert provider.protocol == "gemini" and provider._url is None  # the URL names the model
    url = provider._url_for(chat("gemini-2.5-flash"))
    assert str(url) == (
        "http://127.0.0.1:9/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
