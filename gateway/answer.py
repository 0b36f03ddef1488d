"""What the pipeline gives back, as data: a whole Answer, or Events (a stream's chunks).

Only a surface (surfaces/) turns them into bytes in its caller's wire format.
Both are in the gateway's own form: an OpenAI chat.completion (or embeddings
list), and chat.completion.chunk dicts, the usage chunk included whether or not
the client asked for it (the surface decides what its dialect shows).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass
class Answer:
    """A whole answer: the reply dict, or its JSON as first sent (a cache hit is not parsed),
    plus the x-gateway-* headers."""

    headers: dict[str, str]
    _reply: dict[str, Any] | None = None
    _encoded: bytes | None = None

    @classmethod
    def of(cls, headers: dict[str, str], reply: dict[str, Any]) -> Answer:
        return cls(headers, _reply=reply)

    @classmethod
    def cached(cls, headers: dict[str, str], encoded: bytes) -> Answer:
        return cls(headers, _encoded=encoded)

    def data(self) -> dict[str, Any]:
        """The reply as a dict (a cache hit is parsed for it)."""
        if self._reply is None:
            parsed = orjson.loads(self._encoded or b"{}")
            self._reply = parsed if isinstance(parsed, dict) else {}
        return self._reply

    def encoded(self) -> bytes:
        """The reply as OpenAI JSON, serialized once (the cache stores the same bytes)."""
        if self._encoded is None:
            self._encoded = orjson.dumps(self._reply)
        return self._encoded


# Each item is the chunks ready at once (the first holds everything up to the first token,
# sent in one write). A failure after the stream began is raised from the iterator as a
# GatewayError, after what was made was charged: the surface ends its stream with it.
Batches = AsyncGenerator[Sequence[dict[str, Any]], None]


@dataclass
class Events:
    """A stream that has begun; it closes the request's context when it ends, however."""

    headers: dict[str, str]
    batches: Batches
