"""The ``anthropic`` provider: the Anthropic Messages API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from tokenwire.agent.config import ProviderConfig
from tokenwire.agent.providers._http import HTTPProvider
from tokenwire.agent.providers.base import ProviderRequest
from tokenwire.llm.requests import ChatRequest, to_anthropic

__all__ = ["AnthropicProvider"]


class AnthropicProvider(HTTPProvider):
    """Streams ``POST {base_url}/v1/messages`` (``base_url`` without the version, e.g.
    ``https://api.anthropic.com``), with the key in ``x-api-key`` and the
    ``anthropic-version`` header.

    ``max_tokens`` is required by the API: 4096 is sent when the options give none.
    ``temperature`` above 1 (the Messages API's maximum) is sent as 1. The reply is read
    with :func:`tokenwire.client.aiter_sse` and :class:`tokenwire.llm.StreamDecoder`.
    """

    protocol: ClassVar[Literal["anthropic"]] = "anthropic"
    path: ClassVar[str] = "/v1/messages"

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        connect_timeout: float | None = 10.0,
        anthropic_version: str = "2023-06-01",
    ) -> None:
        super().__init__(
            name,
            base_url=base_url,
            api_key=api_key,
            headers=headers,
            connect_timeout=connect_timeout,
        )
        self.anthropic_version = anthropic_version

    @classmethod
    def from_config(cls, config: ProviderConfig) -> AnthropicProvider:
        assert config.base_url is not None
        return cls(
            config.name,
            base_url=config.base_url,
            api_key=config.api_key(),
            headers=config.headers,
            connect_timeout=config.timeouts.connect,
            anthropic_version=config.anthropic_version,
        )

    def _auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": self.anthropic_version}
        if self._key:
            headers["x-api-key"] = self._key.reveal()
        return headers

    def _body(self, request: ProviderRequest) -> dict[str, Any]:
        return to_anthropic(self._neutral(request))

    def encode_request(self, request: ChatRequest) -> dict[str, Any]:
        return to_anthropic(request)
