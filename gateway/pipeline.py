"""The story of one request, top to bottom, with no HTTP framework and no wire format in it.

    models = routing.plan(...)                  # tier -> models; 404/403 before any I/O
    if hit := await cache.get(...): ...         # a hit calls no provider and costs nothing
    await _admitted_and_reserved(...)           # the key's rate limits, the budget's
                                                # reservation and the first model's quota,
                                                # in one store command: up front,
                                                # atomically; 429 past either
    reply = await fallbacks.complete(...)       # or open_stream / embed: retries and fallbacks
    watch.watched(...)                          # a stream's output against its reservation
    await ctx.charge(...)                       # settle and cache; a stream: at its end, or cut
    -> an Answer, or Events (a stream's chunks), as data: a surface renders them

A request keeps its caller's form (forms/) from the chain to the client: a chat
request's models speak the gateway's own (OpenAI's), a Messages request's speak
Anthropic's and a Responses request's OpenAI's Responses API, natively or through
a translation (providers/build.py).

The request's Context (context.py) is closed by whoever ends the request: the
route for an Answer or a refusal, the Events themselves at their end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import Any

import orjson

from gateway import cache, fallbacks, routing, streaming
from gateway.answer import Answer, Events
from gateway.context import Context, status_of
from gateway.errors import ChainFailed, ProviderError, RateLimited, Unsupported
from gateway.fallbacks import Chain, OpenStream
from gateway.forms.base import Assembles
from gateway.money import meter, quotas, watch
from gateway.money.meter import Metered
from gateway.providers import build
from gateway.providers.base import ANTHROPIC_MESSAGES, OPENAI_RESPONSES
from gateway.request import Kind, Trace
from gateway.store import StoreDown

# The wire format a request's models are spoken to in, where it is not the gateway's own.
FORMATS: dict[Kind, str] = {"messages": ANTHROPIC_MESSAGES, "responses": OPENAI_RESPONSES}


async def serve(ctx: Context) -> Answer | Events:
    """The answer to the request `ctx.asks`."""
    assert ctx.request is not None
    if ctx.request.kind == "embeddings":
        return await _embeddings(ctx)
    return await _generated(ctx)


def _plan(ctx: Context) -> Chain:
    assert ctx.request is not None and ctx.trace is not None
    services, config, trace = ctx.services, ctx.config, ctx.trace
    request = ctx.request
    models = routing.plan(config, ctx.key, trace.requested)
    served = trace.requested
    to = routing.downgraded(ctx.key, served, services.budgets.spent_seen(ctx.key))
    if to is not None:  # its chain, cache key and prices are those of `to` from here on
        ctx.record.downgraded = f"{served} -> {to}"
        served, models = to, config.chain(to) or models
    # The cache key follows the chain as configured, whichever member of a group serves.
    ctx.lookup = cache.plan(config.settings.cache, ctx.cache_control, ctx.key, request.kind,
                            served, models, request.body, request.headers)
    ctx.record.cache = ctx.lookup.state
    chain = Chain(services.balancer.order(config, served), services.adapters.of(config),
                  config.settings, services.cooldowns, trace, ctx.gone,
                  quotas=services.quotas, lease_s=services.budgets.hold_s,
                  balancer=services.balancer, ends=ctx.ends, ahead=ctx.ahead)
    if (format := FORMATS.get(request.kind)) is not None:  # every model speaks it, or is
        chain.form, chain.format, chain.headers = (request.stream_form, format,  # translated
                                                   request.headers)
    return chain


async def _admitted(ctx: Context) -> None:
    """A place under the key's rate limits (keys[].limits), or a 429 the SDKs retry. With the
    store down the limits are not enforced: a limit must not become an outage."""
    limits = ctx.key.limits
    if not limits:
        return
    try:
        admission = await ctx.services.quotas.admit(quotas.key_owner(ctx.key.name), limits,
                                                    ctx.services.budgets.hold_s)
    except StoreDown:
        return
    if admission.admitted:
        ctx.admission = admission
        return
    what = quotas.REFUSED_BY[admission.refused_by]
    ctx.services.records.metrics.rate_limited.labels(
        ctx.key.name, what.rpartition("(")[2].rstrip(")")).inc()
    wait_s = admission.retry_after_s
    raise RateLimited(f"rate limit of key {ctx.key.name} reached: {what}; retry in "
                      f"{max(wait_s, 0.001):.3g}s", type="tokens" if admission.refused_by == 2
                      else "requests", retry_after_s=wait_s, limit_headers=admission.headers())


async def _reserved(ctx: Context, chain: Chain) -> Metered:
    assert ctx.request is not None
    ctx.metered = await meter.reserve(ctx.services.budgets, ctx.config, ctx.key, chain.models,
                                      ctx.request)
    _affordable(chain, ctx.metered)
    return ctx.metered


async def _generated(ctx: Context) -> Answer | Events:
    """A chat completion or a message: the model writes it, whole or streamed."""
    assert ctx.request is not None
    chain = _plan(ctx)
    if (hit := await cache.get(ctx.services.store, ctx.lookup)) is not None:
        await _admitted(ctx)
        headers = ctx.hit(hit.model)
        encoded = ctx.request.form.as_hit(hit.answer, ctx.request.body)
        if ctx.request.stream:
            return await streaming.begun(headers, streaming.replay(orjson.loads(encoded), ctx))
        return Answer.cached(headers, encoded)
    metered = await _admitted_and_reserved(ctx, chain)
    if ctx.request.stream:
        return await _generated_stream(ctx, chain, metered)
    if metered.needs_watching:  # the answer may outgrow its reservation: watch it come
        return await _assembled(ctx, chain, metered)
    model, reply = await fallbacks.complete(chain, metered.body_for)
    return await ctx.charge(model, reply)


async def _admitted_and_reserved(ctx: Context, chain: Chain) -> Metered:
    """The key's admission, the budget's reservation and the first model's admission under
    its own limits, those of them there are, asked together: they travel in one ledger
    command. Whichever refuses, the others' holds are freed when the context closes."""
    reserving = _reserved(ctx, chain)
    admitting: list[Coroutine[Any, Any, None]] = []
    if ctx.key.limits:
        admitting.append(_admitted(ctx))
    if (first := fallbacks.first_limited(chain)) is not None:
        admitting.append(fallbacks.admit_ahead(chain, first))
    if not admitting:  # the reservation alone: no tasks to gather
        return await reserving
    outcomes = await asyncio.gather(reserving, *admitting, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    reserved = outcomes[0]
    assert isinstance(reserved, Metered)
    return reserved


def _affordable(chain: Chain, metered: Metered) -> None:
    """Near the end of a budget, the models of the chain it cannot pay for are left out."""
    worst, granted = metered.worst, metered.reservation.granted
    if worst is None or not metered.reservation.id:
        return
    kept = tuple(m for m in chain.models if worst.affords(m, granted))
    chain.trace.skipped += [f"{m.name}: skipped (the budget left cannot pay for its input "
                            "and one output token)" for m in chain.models if m not in kept]
    chain.models = kept


async def _assembled(ctx: Context, chain: Chain, metered: Metered) -> Answer:
    """A whole answer, streamed from the provider so that it can be watched, then sent whole.
    A failure after the first token is charged for what was made, then raised."""
    opened = await watch.watched(ctx.services.budgets, metered,
                                 await fallbacks.open_stream(chain, metered.body_for))
    assembler = chain.form.assembler()
    try:
        await _gather(opened, assembler, chain.trace)
    except BaseException as exc:  # what was made is charged and recorded, even if the client left
        charging = ctx.charge_apart(opened.model, assembler.completion(), status_of(exc))
        with contextlib.suppress(BaseException):
            await asyncio.shield(charging)
        raise
    return await ctx.charge(opened.model, assembler.completion())


async def _gather(opened: OpenStream, assembler: Assembles, trace: Trace) -> None:
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


async def _generated_stream(ctx: Context, chain: Chain, metered: Metered) -> Events:
    opened = await watch.watched(ctx.services.budgets, metered,
                                 await fallbacks.open_stream(chain, metered.body_for))
    ctx.record.first_token_at = time.perf_counter()
    # Begun: from here on, however the response ends, the stream charges and closes ctx.
    return await streaming.begun(ctx.headers(opened.model), streaming.relay(opened, ctx))


async def _embeddings(ctx: Context) -> Answer:
    chain = _plan(ctx)
    if (hit := await cache.get(ctx.services.store, ctx.lookup)) is not None:
        await _admitted(ctx)
        return Answer.cached(ctx.hit(hit.model), hit.answer)
    metered = await _admitted_and_reserved(ctx, chain)
    model, reply = await fallbacks.embed(chain, metered.body_for)
    return await ctx.charge(model, reply)


async def count_tokens(ctx: Context) -> int:
    """The input tokens of a Messages or Responses body on its chain's first model that
    answers: Anthropic's own count for a Claude model spoken to natively, the gateway's
    tokenizer for any other. Not a model call: nothing is reserved, charged or cached."""
    assert ctx.request is not None and ctx.trace is not None
    request = ctx.request
    models = routing.plan(ctx.config, ctx.key, ctx.trace.requested)
    adapters = ctx.services.adapters.of(ctx.config)
    usable = [m for m in models if not m.unusable] or list(models)
    unsupported: list[Unsupported] = []
    for model in usable:
        counter = build.in_format(adapters[model.name], FORMATS[request.kind], request.headers)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(max(ctx.trace.remaining_s(), 0.001)):
                counted = await counter.count_tokens(request.body)
        except Unsupported as refused:  # as the chain does: the next model may take it
            unsupported.append(refused)
            ctx.trace.skipped.append(f"{model.name}: skipped ({refused.message})")
        except TimeoutError:
            ctx.trace.record(model, started, ProviderError(
                "no count within the request's total_s", status=504, kind="transient",
                timed_out=True))
        except ProviderError as error:
            ctx.trace.record(model, started, error)
            if not error.falls_back:
                raise
        else:
            ctx.trace.record(model, started, None)
            ctx.record.model = model.name  # who counted; nothing was charged
            return counted
    if unsupported and not ctx.trace.failures:
        raise unsupported[0]
    raise ChainFailed(ctx.trace.requested, ctx.trace.attempts, ctx.trace.skipped,
                      ctx.trace.failures)
