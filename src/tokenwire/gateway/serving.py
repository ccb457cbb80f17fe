"""How ``tokenwire serve`` runs the gateway on uvicorn: the ``[gateway]`` connection
limits as uvicorn's ``http`` protocol, and secrets kept out of uvicorn's access log.

Each worker process resolves the limits from the configuration it serves (the file
named by ``TOKENWIRE_CONFIG``), once.
"""

from __future__ import annotations

import logging
import re

from tokenwire.config import GatewayConfig, load_config
from tokenwire.server.limits import ConnectionLimits, LimitedHttpProtocol

__all__ = ["GatewayHttpProtocol", "RedactQuerySecrets", "connection_limits"]


def connection_limits(settings: GatewayConfig) -> ConnectionLimits:
    """The connection limits a ``[gateway]`` table sets."""
    return ConnectionLimits(
        max_head_bytes=settings.max_head_bytes,
        max_headers=settings.max_request_headers,
        head_timeout=settings.head_timeout,
        max_connections=settings.max_connections,
    ).resolved()


class GatewayHttpProtocol(LimitedHttpProtocol):
    """:class:`~tokenwire.server.limits.LimitedHttpProtocol` with the limits of the
    gateway's configuration."""

    @classmethod
    def current_limits(cls) -> ConnectionLimits:
        resolved: ConnectionLimits | None = cls.__dict__.get("_resolved")
        if resolved is None:
            resolved = connection_limits(load_config().gateway)
            cls._resolved = resolved
        return resolved


# Query parameters that carry credentials (the chat page sends ?api_key=).
_SECRET_QUERY = re.compile(r"(?i)([?&](?:api_key|key|token|access_token)=)[^&\s]*")


class RedactQuerySecrets(logging.Filter):
    """Masks credential query parameters in uvicorn's access log lines (``?api_key=``
    and the like become ``?api_key=***``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(
                _SECRET_QUERY.sub(r"\1***", a) if isinstance(a, str) and "=" in a else a
                for a in args
            )
        return True
