"""Client side: event streams over httpx2 (and httpx), and LLM streams as deltas.

- :func:`iter_sse` / :func:`aiter_sse`: the events of any streamed httpx2/httpx response.
- :class:`EventSource` / :class:`AsyncEventSource`: what the browser's EventSource does,
  for Python: reconnection with ``Last-Event-ID``, ``retry``, backoff, idle timeout,
  redirects; ``all()`` also reports connection starts (:class:`Start`), comments and
  faults (:class:`Fault`); ``restart()`` reconnects at once.
- :func:`stream_chat` / :func:`astream_chat`: from a URL or response straight to
  :mod:`tokenwire.llm` deltas and the accumulated message.
"""

from tokenwire.client._actions import Fault, Start
from tokenwire.client._chat import AsyncChatStream, ChatStream, astream_chat, stream_chat
from tokenwire.client._policy import DEFAULT_TIMEOUT, Backoff
from tokenwire.client._response import MAX_ERROR_BODY, SSEConnectionError, aiter_sse, iter_sse
from tokenwire.client._source import AsyncEventSource, EventSource, Item
from tokenwire.sse import Comment

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_ERROR_BODY",
    "AsyncChatStream",
    "AsyncEventSource",
    "Backoff",
    "ChatStream",
    "Comment",
    "EventSource",
    "Fault",
    "Item",
    "SSEConnectionError",
    "Start",
    "aiter_sse",
    "astream_chat",
    "iter_sse",
    "stream_chat",
]
