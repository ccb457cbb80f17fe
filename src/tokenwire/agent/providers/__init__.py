"""Providers: where replies come from (``openai``, ``anthropic``, ``demo``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenwire.agent.providers.base import Provider, ProviderRequest, Turn
from tokenwire.agent.providers.demo import DemoProvider

if TYPE_CHECKING:
    from tokenwire.agent.config import ProviderConfig

__all__ = ["DemoProvider", "Provider", "ProviderRequest", "Turn", "make_provider"]


def make_provider(config: ProviderConfig) -> Provider:
    """Build the provider a :class:`~tokenwire.agent.config.ProviderConfig` describes.

    Reads the API key from the configured environment variable now; raises
    :class:`~tokenwire.agent.config.ConfigError` naming the variable if it is unset.
    """
    if config.type == "demo":
        return DemoProvider(config.name, **config.demo)
    if config.type == "openai":
        from tokenwire.agent.providers.openai import OpenAIProvider

        return OpenAIProvider.from_config(config)
    from tokenwire.agent.providers.anthropic import AnthropicProvider

    return AnthropicProvider.from_config(config)
