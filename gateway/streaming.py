"""The client's SSE stream: relays chunks once the first token exists, and ends cleanly.

Chunks carry the router.yaml model name; the usage chunk is dropped when the
client did not ask for it. A failure after the first token ends the stream
with an OpenAI-shaped `data: {"error": ...}` event, never a silent truncation.
The chunks are assembled as they pass, so that the answer can be charged and
cached at the end, or charged for what it was when the stream is cut. A cached
answer is replayed as the stream a provider would have sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import orjson

from gateway import completions
from gateway.errors import GatewayError, ProviderError
from gateway.fallbacks import OpenStream
from gateway.request import Trace

log = logging.getLogger("gateway")
DONE = b"data: [DONE]\n\n"


def sse_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _for_client(chunk: dict[str, Any], include_usage: bool) -> bytes | None:
    if not include_usage:
        if not chunk.get("choices"):
            return None  # the usage chunk the gateway asked for on its own behalf
        chunk.pop("usage", None)
    return sse_event(chunk)


# Called once with the answer so far and the stream's status: 200 when the provider's stream
# ended normally, the error's status when it was cut, CLIENT_LEFT when the client left.
Ended = Callable[[dict[str, Any], int], Awaitable[None]]
# Runs a coroutine as a task of its own: a client that leaves cancels the request's task,
# and what is owed must still be settled.
Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]
CLIENT_LEFT = 499  # as nginx logs it: the client closed the connection first


async def relay(opened: OpenStream, include_usage: bool, trace: Trace, ended: Ended,
                spawn: Spawn) -> AsyncIterator[bytes]:
    """The client's stream. Its first item is ready at once: take it before answering, so
    that the cleanup below runs however the response ends, even if it is never sent."""
    assembler = completions.Assembler()
    status = CLIENT_LEFT
    try:
        for chunk in opened.head:
            assembler.add(chunk)
        # Everything up to the first token goes out in one write.
        head = (_for_client(chunk, include_usage) for chunk in opened.head)
        yield b"".join(event for event in head if event is not None)
        while True:
            try:
                async with asyncio.timeout(max(trace.remaining_s(), 0.001)):
                    chunk = await anext(opened.rest)
            except StopAsyncIteration:
                break
            except TimeoutError:
                status = 504
                yield _error_event(ProviderError("the request's total time limit was reached "
                                                 "mid-stream", status=504, kind="transient"))
                return
            except GatewayError as error:  # the provider's, or the budget's store's
                status = error.status
                log.warning("request %s: %s failed mid-stream: %s", trace.request_id,
                            opened.model.name, error.status)
                yield _error_event(error)
                return
            assembler.add(chunk)
            if (event := _for_client(chunk, include_usage)) is not None:
                yield event
        status = 200
        # Cached, and its settlement on its way to the store, before [DONE]: the client's
        # next request sees both (on another replica, once that batch has landed).
        await asyncio.shield(spawn(ended(assembler.completion(), status)))
        yield DONE
    finally:
        if status != 200:  # charged for what was generated, even if the client left
            spawn(ended(assembler.completion(), status))
        with contextlib.suppress(Exception):
            await opened.rest.aclose()  # a client that left must not keep the upstream call


async def after(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for part in rest:
        yield part


def _error_event(error: GatewayError) -> bytes:
    return sse_event(error.body())


async def replay(completion: dict[str, Any], include_usage: bool) -> AsyncIterator[bytes]:
    """A cached answer as a stream, in one write: it is all here already."""
    events = [sse_event(chunk) for chunk in completions.replay(completion, include_usage)]
    yield b"".join([*events, DONE])
