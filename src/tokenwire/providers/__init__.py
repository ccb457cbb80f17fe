"""Providers: where replies come from, for agents and the gateway alike.

- :class:`~tokenwire.providers.http.HTTPProvider`: any wire protocol's HTTP endpoint
  (OpenAI chat completions, Anthropic Messages, OpenAI Responses, ...).
- :class:`~tokenwire.providers.demo.DemoProvider`: the built-in offline model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenwire.providers.base import Item, Provider, ProviderRequest, Turn
from tokenwire.providers.demo import DemoProvider
from tokenwire.providers.http import DEFAULT_MAX_REPLY_BYTES, HTTPProvider

if TYPE_CHECKING:
    from tokenwire.config import ProviderConfig

__all__ = [
    "DemoProvider",
    "HTTPProvider",
    "Item",
    "Provider",
    "ProviderRequest",
    "Turn",
    "make_provider",
]


def make_provider(
    config: ProviderConfig,
    *,
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    max_connections: int = 0,
) -> DemoProvider | HTTPProvider:
    """Build the provider a :class:`~tokenwire.config.ProviderConfig` describes.

    Reads the API key from the configured environment variable now; raises
    :class:`~tokenwire.config.ConfigError` naming the variable if it is unset.
    ``max_reply_bytes`` bounds a reply, ``max_connections`` the open connections (0: no
    bound).
    """
    if config.type == "demo":
        return DemoProvider(config.name, **config.demo)
    return HTTPProvider.from_config(
        config, max_reply_bytes=max_reply_bytes, max_connections=max_connections
    )
