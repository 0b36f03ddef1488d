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
from gateway.fallbacks import OpenStream, Trace

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


# Called once with the answer so far, and whether the provider's stream ended normally.
Ended = Callable[[dict[str, Any], bool], Awaitable[None]]
# Runs a coroutine as a task of its own: a client that leaves cancels the request's task,
# and what is owed must still be settled.
Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


async def relay(opened: OpenStream, include_usage: bool, trace: Trace, request_id: str,
                ended: Ended, spawn: Spawn) -> AsyncIterator[bytes]:
    assembler = completions.Assembler()
    complete = False
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
                yield _error_event(ProviderError("the request's total time limit was reached "
                                                 "mid-stream", status=504, kind="transient"))
                return
            except ProviderError as error:
                log.warning("request %s: %s failed mid-stream: %s", request_id,
                            opened.model.name, error.status)
                yield _error_event(error)
                return
            assembler.add(chunk)
            if (event := _for_client(chunk, include_usage)) is not None:
                yield event
        complete = True
        # Settled and cached before [DONE], so the client's next request sees both.
        await asyncio.shield(spawn(ended(assembler.completion(), True)))
        yield DONE
    finally:
        if not complete:  # charged for what was generated, even if the client left
            spawn(ended(assembler.completion(), False))
        with contextlib.suppress(Exception):
            await opened.rest.aclose()  # a client that left must not keep the upstream call


def _error_event(error: GatewayError) -> bytes:
    return sse_event(error.body())


async def replay(completion: dict[str, Any], include_usage: bool) -> AsyncIterator[bytes]:
    """A cached answer as a stream, in one write: it is all here already."""
    events = [sse_event(chunk) for chunk in completions.replay(completion, include_usage)]
    yield b"".join([*events, DONE])
