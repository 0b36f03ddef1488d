"""The story of one request, top to bottom, with no HTTP framework in it.

    models = routing.plan(...)                  # tier -> models; 404/403 before any I/O
    if hit := await cache.get(...): ...         # a hit calls no provider and costs nothing
    metered = await meter.reserve(...)          # up front, atomically; 429 if unpayable
    reply = await fallbacks.complete(...)       # or open_stream / embed: retries and fallbacks
    watch.watched(...)                          # a stream's output against its reservation
    await meter.settle(...); await cache.put(...)   # a stream: at its end, or when cut
    -> an Outcome: a JSON body, or an SSE stream, plus the x-gateway-* headers
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from gateway import cache, completions, fallbacks, routing, streaming
from gateway.cache import Lookup
from gateway.config import ApiKey, Config, Model
from gateway.errors import ProviderError
from gateway.fallbacks import BodyFor, Chain, OpenStream
from gateway.money import cost, meter, watch
from gateway.money.meter import Metered
from gateway.records.records import Record
from gateway.request import Trace
from gateway.services import Services

FREE = cost.usd(0)  # x-gateway-cost-usd of a cache hit
# fallbacks.complete or fallbacks.embed: one whole answer along the chain.
Ask = Callable[[Chain, BodyFor], Awaitable[tuple[Model, dict[str, Any]]]]


@dataclass
class Outcome:
    headers: dict[str, str]
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    closes_record: bool = False  # a relayed stream closes the request's record at its end


@dataclass
class Call:
    """One client request as the pipeline sees it."""

    config: Config  # the configuration at arrival, kept for the whole request
    key: ApiKey
    body: dict[str, Any]
    trace: Trace
    record: Record
    gone: Callable[[], bool]  # whether the client has left
    cache_control: str | None = None

    def answered(self, model: str, usage: cost.Usage, cost_microusd: int,
                 reply: dict[str, Any], metered: Metered) -> None:
        self.record.model = model
        self.record.budget_limited = metered.limited
        self.record.charged(usage, cost_microusd)
        if self.config.settings.log_content:
            self.record.answer = reply.get("choices")

    def hit(self, model: str) -> None:
        self.record.model, self.record.cache = model, "hit"
        self.record.charged(cost.Usage(0, 0), 0)


def new_trace(config: Config, requested: str, request_id: str) -> Trace:
    deadline = asyncio.get_running_loop().time() + config.settings.timeouts.total_s
    return Trace(requested=requested, deadline=deadline, request_id=request_id)


def _headers(model: Model, trace: Trace, lookup: Lookup, metered: Metered) -> dict[str, str]:
    return {"x-gateway-model": model.name, "x-gateway-attempts": str(len(trace.attempts)),
            "x-gateway-cache": lookup.state, **metered.headers}


def _hit_headers(model_name: str) -> dict[str, str]:
    return {"x-gateway-model": model_name, "x-gateway-attempts": "0", "x-gateway-cache": "hit",
            "x-gateway-cost-usd": FREE}


def _plan(services: Services, call: Call, kind: cache.Kind) -> tuple[Chain, Lookup]:
    models = routing.plan(call.config, call.key, call.trace.requested)
    lookup = cache.plan(call.config.settings.cache, call.cache_control, call.key, kind,
                        call.trace.requested, models, call.body)
    chain = Chain(models, services.adapters.of(call.config), call.config.settings,
                  services.cooldowns, call.trace, call.gone)
    call.record.cache = lookup.state
    return chain, lookup


async def chat(services: Services, call: Call) -> Outcome:
    chain, lookup = _plan(services, call, "chat")
    stream = bool(call.body.get("stream"))
    include_usage = stream and bool((call.body.get("stream_options") or {}).get("include_usage"))
    if (hit := await cache.get(services.store, lookup)) is not None:
        call.hit(hit.model)
        if stream:
            replayed = streaming.replay(orjson.loads(hit.answer), include_usage)
            return Outcome(_hit_headers(hit.model), stream=replayed)
        return Outcome(_hit_headers(hit.model), body=hit.answer)
    metered = await meter.reserve(services.budgets, call.config, call.key, chain.models,
                                  call.body, "chat")
    _affordable(chain, metered)
    if stream:
        return await _chat_stream(services, chain, lookup, metered, call, include_usage)
    if metered.needs_watching:  # the answer may outgrow its reservation: watch it come
        return await _assembled(services, call, chain, lookup, metered)
    return await _answered(services, call, chain, lookup, metered, fallbacks.complete,
                           lambda reply: cache.is_complete_chat(
                               reply, length_ok=metered.limited is None))


def _affordable(chain: Chain, metered: Metered) -> None:
    """Near the end of a budget, the models of the chain it cannot pay for are left out."""
    worst, granted = metered.worst, metered.reservation.granted
    if worst is None or not metered.reservation.id:
        return
    kept = tuple(m for m in chain.models if worst.affords(m, granted))
    chain.trace.skipped += [f"{m.name}: skipped (the budget left cannot pay for its input "
                            "and one output token)" for m in chain.models if m not in kept]
    chain.models = kept


@contextlib.contextmanager
def _released_on_failure(services: Services, metered: Metered) -> Iterator[None]:
    """No answer, nothing to charge: the reservation goes."""
    try:
        yield
    except BaseException:
        meter.release(services.budgets, metered)
        raise


async def _answered(services: Services, call: Call, chain: Chain, lookup: Lookup,
                    metered: Metered, ask: Ask, complete: Callable[[dict[str, Any]], bool],
                    ) -> Outcome:
    """A whole answer, not streamed: asked along the chain, charged, cached if complete."""
    with _released_on_failure(services, metered):
        model, reply = await ask(chain, metered.body_for)
    return await _charged(services, call, lookup, metered, model, reply, complete(reply))


async def _charged(services: Services, call: Call, lookup: Lookup, metered: Metered,
                   model: Model, reply: dict[str, Any], complete: bool) -> Outcome:
    usage, charged = await meter.settle(services.budgets, metered, model, reply)
    call.answered(model.name, usage, charged, reply, metered)
    body = orjson.dumps(reply)
    if complete:
        await cache.put(services.store, lookup, model.name, body)
    return Outcome(_headers(model, call.trace, lookup, metered), body=body)


async def _assembled(services: Services, call: Call, chain: Chain, lookup: Lookup,
                     metered: Metered) -> Outcome:
    """A whole answer, streamed from the provider so that it can be watched, then sent whole.
    A failure after the first token is charged for what was made, then raised."""
    with _released_on_failure(services, metered):
        opened = await watch.watched(services.budgets, metered,
                                     await fallbacks.open_stream(chain, metered.body_for))
    assembler = completions.Assembler()
    try:
        await _gather(opened, assembler, call.trace)
    except BaseException:  # what was made is charged and recorded, even if the client left
        settling = services.spawn(_settle_partial(services, call, metered, opened.model,
                                                  assembler))
        with contextlib.suppress(BaseException):
            await asyncio.shield(settling)
        raise
    reply = assembler.completion()
    return await _charged(services, call, lookup, metered, opened.model, reply,
                          cache.is_complete_chat(reply, length_ok=metered.limited is None))


async def _gather(opened: OpenStream, assembler: completions.Assembler, trace: Trace) -> None:
    for chunk in opened.head:
        assembler.add(chunk)
    try:
        async with asyncio.timeout(max(trace.remaining_s(), 0.001)):
            async for chunk in opened.rest:
                assembler.add(chunk)
    except TimeoutError:
        raise ProviderError("the request's total time limit was reached mid-answer",
                            status=504, kind="transient", timed_out=True) from None
    finally:
        await opened.rest.aclose()


async def _settle_partial(services: Services, call: Call, metered: Metered, model: Model,
                          assembler: completions.Assembler) -> None:
    answer = assembler.completion()
    usage, charged = await meter.settle(services.budgets, metered, model, answer)
    call.answered(model.name, usage, charged, answer, metered)


async def _chat_stream(services: Services, chain: Chain, lookup: Lookup, metered: Metered,
                       call: Call, include_usage: bool) -> Outcome:
    with _released_on_failure(services, metered):
        opened = await watch.watched(services.budgets, metered,
                                     await fallbacks.open_stream(chain, metered.body_for))
    call.record.first_token_at = time.perf_counter()

    async def ended(answer: dict[str, Any], status: int) -> None:
        try:
            usage, charged = await meter.settle(services.budgets, metered, opened.model, answer)
            call.answered(opened.model.name, usage, charged, answer, metered)
            if status == 200 and cache.is_complete_chat(answer, length_ok=metered.limited is None):
                await cache.put(services.store, lookup, opened.model.name, orjson.dumps(answer))
        finally:
            services.records.close(call.record, status)

    relay = streaming.relay(opened, include_usage, call.trace, ended, services.spawn)
    head = await anext(relay)  # started: from here on, however the response ends, it settles
    return Outcome(_headers(opened.model, call.trace, lookup, metered),
                   stream=streaming.after(head, relay), closes_record=True)


async def embeddings(services: Services, call: Call) -> Outcome:
    chain, lookup = _plan(services, call, "embeddings")
    if (hit := await cache.get(services.store, lookup)) is not None:
        call.hit(hit.model)
        return Outcome(_hit_headers(hit.model), body=hit.answer)
    metered = await meter.reserve(services.budgets, call.config, call.key, chain.models,
                                  call.body, "embeddings")
    _affordable(chain, metered)
    return await _answered(services, call, chain, lookup, metered, fallbacks.embed,
                           cache.is_complete_embeddings)
