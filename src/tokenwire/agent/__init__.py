"""Agents: ``chat_stream(prompt, options)`` over OpenAI-compatible, Anthropic and a
built-in offline demo model.

```python
from tokenwire.agent import get_agent, StreamOptions

agent = await get_agent("assistant")          # from tokenwire.toml; "demo" without one
async for chunk in agent.chat_stream("Tell me a story", {"max_tokens": 200}):
    print(chunk, end="", flush=True)
```

See :mod:`tokenwire.config` for the configuration file, :class:`Agent` for the calls,
:class:`StreamOptions` for the options, :mod:`tokenwire.providers` for where replies
come from and :class:`~tokenwire.providers.demo.DemoProvider` for the offline model
(which is not a language model: it recombines a bundled public-domain text).
"""

from __future__ import annotations

import os

from tokenwire.agent.agent import Agent, AgentStream
from tokenwire.config import (
    AgentConfig,
    Config,
    ConfigError,
    ProviderConfig,
    Timeouts,
    load_config,
)
from tokenwire.llm.stops import StopFilter
from tokenwire.options import StreamOptions
from tokenwire.providers import (
    DemoProvider,
    Provider,
    ProviderRequest,
    Turn,
    make_provider,
)

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentStream",
    "Config",
    "ConfigError",
    "DemoProvider",
    "Provider",
    "ProviderConfig",
    "ProviderRequest",
    "StopFilter",
    "StreamOptions",
    "Timeouts",
    "Turn",
    "get_agent",
    "load_config",
    "make_provider",
]


async def get_agent(
    name: str = "assistant", *, config: Config | str | os.PathLike[str] | None = None
) -> Agent:
    """A new :class:`Agent` named ``name``, with an empty history.

    ``config``: a loaded :class:`Config`, or the path of a ``tokenwire.toml``; by default
    the file named by ``TOKENWIRE_CONFIG``, else ``./tokenwire.toml``, else the built-in
    defaults (agent ``assistant`` on the ``demo`` provider). Raises
    :class:`ConfigError` for an unknown agent or provider, a missing API key variable or
    an invalid value, naming the problem.
    """
    if not isinstance(config, Config):
        config = load_config(config)
    return Agent.from_config(config, name)
