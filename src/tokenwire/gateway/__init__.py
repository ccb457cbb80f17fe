"""The streaming gateway behind ``tokenwire serve``: OpenAI- and Anthropic-compatible
endpoints that translate between protocols while streaming, a browser chat page,
health and Prometheus metrics. See :mod:`tokenwire.gateway.app`."""

from tokenwire.gateway.app import Gateway, create_app

__all__ = ["Gateway", "create_app"]
