"""The ``openai`` provider: any OpenAI-compatible chat-completions endpoint."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from tokenwire.agent.providers._http import HTTPProvider
from tokenwire.agent.providers.base import ProviderRequest
from tokenwire.llm.requests import ChatRequest, to_openai

__all__ = ["OpenAIProvider"]

MAX_STOPS = 4
"""OpenAI accepts at most four stop sequences; tokenwire enforces any others itself."""


class OpenAIProvider(HTTPProvider):
    """Streams ``POST {base_url}/chat/completions`` (OpenAI, Ollama, vLLM, LM Studio, a
    tokenwire gateway). ``base_url`` includes the version, e.g.
    ``https://api.openai.com/v1``. The key, if any, is sent as ``Authorization: Bearer``.

    Sends ``stream: true`` with ``stream_options.include_usage`` (so usage is
    reported), ``temperature``, ``max_tokens``, ``seed`` and the first four stop
    sequences. The reply is read with :func:`tokenwire.client.aiter_sse` and
    :class:`tokenwire.llm.StreamDecoder`.
    """

    protocol: ClassVar[Literal["openai"]] = "openai"
    path: ClassVar[str] = "/chat/completions"

    def _auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._key.reveal()}"} if self._key else {}

    def _body(self, request: ProviderRequest) -> dict[str, Any]:
        body = to_openai(self._neutral(request, MAX_STOPS))
        if request.options.seed is not None:
            body["seed"] = request.options.seed
        return body

    def encode_request(self, request: ChatRequest) -> dict[str, Any]:
        return to_openai(request)
