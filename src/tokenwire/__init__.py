"""tokenwire: stream LLM output over Server-Sent Events, end to end.

The protocol core is sans-I/O (:mod:`tokenwire.sse`, :mod:`tokenwire.llm`); adapters put
it on ASGI (:mod:`tokenwire.server`) and on httpx2/httpx (:mod:`tokenwire.client`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["ClientDisconnected", "StreamError", "__version__", "guard"]

if TYPE_CHECKING:
    from tokenwire.control import guard
    from tokenwire.errors import ClientDisconnected, StreamError

# Imported on first use so that `import tokenwire.sse` stays dependency-free and fast.
_LAZY = {
    "StreamError": "tokenwire.errors",
    "ClientDisconnected": "tokenwire.errors",
    "guard": "tokenwire.control",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tokenwire' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
