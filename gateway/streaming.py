"""A stream's chunks on their way to the client: relayed once the first token exists, or replayed.

The relay passes every chunk on as data (a surface writes them in its
dialect) and assembles them as they pass, so that the answer is charged and
cached at the end, or charged for what it was when the stream is cut: by the
provider failing (the error is raised to the surface after the charge), by the
request's total time running out, or by the client leaving. A cached answer is
replayed as the chunks a provider would have sent, in one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from gateway.answer import Batches, Events
from gateway.context import Context
from gateway.errors import GatewayError, ProviderError
from gateway.fallbacks import OpenStream
from gateway.request import CLIENT_LEFT

log = logging.getLogger("gateway")


_END = object()  # the pump's last item: the stream ended as it should
# Chunks read ahead of a client that reads slowly: past this the pump waits, so the
# provider's stream is held back by the client's pace, as when the relay read it itself.
AHEAD_CHUNKS = 256


async def _pump(rest: AsyncIterator[dict[str, Any]], queue: asyncio.Queue[Any]) -> None:
    """The provider's chunks into `queue` as they arrive, then _END, or the error; it waits
    while the queue is full."""
    try:
        async for chunk in rest:
            await queue.put(chunk)
    except Exception as exc:  # the relay raises it, after the chunks that came before it
        await queue.put(exc)
    else:
        await queue.put(_END)


async def relay(opened: OpenStream, ctx: Context) -> Batches:
    """The stream's chunks. Its first batch is ready at once: take it before answering, so
    that the cleanup below runs however the response ends, even if it is never sent.

    The provider's chunks are read by a task of their own (`_pump`), and each batch is
    every chunk that has arrived by the time the client's connection is written again:
    one write, not one per chunk, for the chunks one network read brings (a busy gateway
    reads many at once; a write per chunk was a third of a long stream's CPU)."""
    assert ctx.trace is not None
    trace = ctx.trace
    assembler = ctx.request_form().assembler()
    status = CLIENT_LEFT
    queue: asyncio.Queue[Any] = asyncio.Queue(AHEAD_CHUNKS)
    pump: asyncio.Task[None] | None = None
    try:
        for chunk in opened.head:
            assembler.add(chunk)
        yield opened.head  # everything up to the first token goes out in one write
        pump = asyncio.get_running_loop().create_task(_pump(opened.rest, queue))
        ended = False
        while not ended:
            try:
                async with asyncio.timeout(max(trace.remaining_s(), 0.001)):
                    items = [await queue.get()]
            except TimeoutError:
                status = 504
                raise ProviderError("the request's total time limit was reached mid-stream",
                                    status=504, kind="transient") from None
            while not queue.empty():
                items.append(queue.get_nowait())
            batch: list[dict[str, Any]] = []
            failed: BaseException | None = None
            for item in items:
                if item is _END:
                    ended = True
                elif isinstance(item, BaseException):
                    failed = item
                else:
                    assembler.add(item)
                    batch.append(item)
            if batch:
                yield batch
            if failed is not None:
                if isinstance(failed, GatewayError):  # the provider's, or the budget's store's
                    status = failed.status
                    log.warning("request %s: %s failed mid-stream: %s", trace.request_id,
                                opened.model.name, failed.status)
                raise failed
        status = 200
        # Cached, and its settlement on its way to the store, before the stream's end: the
        # client's next request sees both (on another replica, once that batch has landed).
        completion = assembler.completion()
        await asyncio.shield(ctx.charge_apart(opened.model, completion, status))
        cut = ctx.metered is not None and ctx.metered.limited == "cut"
        # The provider's usage never came to a cut stream: what was charged is sent instead.
        if cut and (usage := ctx.request_form().usage_items(completion)):
            yield usage
    finally:
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(BaseException):
                await pump
        if status == CLIENT_LEFT and trace.remaining_s() <= 0:
            status = 504  # the client took too long to read it: cut at total_s (event_stream)
        if not ctx.charged:  # cut short: charged for what was made, even if the client left
            ctx.charge_apart(opened.model, assembler.completion(), status)
        ctx.close(status)  # once the charge has landed
        with contextlib.suppress(Exception):
            await opened.rest.aclose()  # a client that left must not keep the upstream call


async def replay(completion: dict[str, Any], ctx: Context) -> Batches:
    """A cached answer as a stream, in one batch: it is all here already."""
    status = CLIENT_LEFT
    try:
        yield list(ctx.request_form().replay(completion))
        status = 200
    finally:
        ctx.close(status)


async def begun(headers: dict[str, str], batches: Batches) -> Events:
    """Events whose first batch has been taken, so that their end is sure to run."""
    first = await anext(batches)
    return Events(headers, _after(first, batches))


async def _after(first: Any, rest: Batches) -> Batches:
    try:
        yield first
        async for batch in rest:
            yield batch
    finally:
        await rest.aclose()

