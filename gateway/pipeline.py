"""The story of one request, top to bottom, with no HTTP framework in it.

    models = routing.plan(...)                # tier -> models; 404/403 before any I/O
    lookup = cache.plan(...)                  # hit, miss, bypass or off
    if cached := await cache.get(...): ...    # a hit calls no provider and costs nothing
    reply = await fallbacks.complete(...)     # or open_stream / embed: retries and fallbacks
    await cache.put(...)                      # complete answers only (a stream: at its end)
    -> an Outcome: a JSON body, or an SSE stream, plus the x-gateway-* headers
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from gateway import cache, fallbacks, routing, streaming
from gateway.cache import Lookup
from gateway.config import ApiKey, Config
from gateway.cooldown import Cooldowns
from gateway.fallbacks import Chain, Trace
from gateway.store import Store

FREE = "0.000000"  # x-gateway-cost-usd of a cache hit


@dataclass
class Services:
    """What lives for the whole process; `config` is replaced whole, never edited."""

    config: Config
    http: aiohttp.ClientSession
    cooldowns: Cooldowns
    store: Store


@dataclass
class Outcome:
    headers: dict[str, str]
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None


@dataclass
class Call:
    """One client request as the pipeline sees it."""

    config: Config  # the configuration at arrival, kept for the whole request
    key: ApiKey
    body: dict[str, Any]
    trace: Trace
    request_id: str
    cache_control: str | None = None


def new_trace(config: Config, requested: str) -> Trace:
    deadline = asyncio.get_running_loop().time() + config.settings.timeouts.total_s
    return Trace(requested=requested, deadline=deadline)


def _headers(model_name: str, trace: Trace, lookup: Lookup) -> dict[str, str]:
    return {"x-gateway-model": model_name, "x-gateway-attempts": str(len(trace.attempts)),
            "x-gateway-cache": lookup.state}


def _hit_headers(model_name: str) -> dict[str, str]:
    return {"x-gateway-model": model_name, "x-gateway-attempts": "0", "x-gateway-cache": "hit",
            "x-gateway-cost-usd": FREE}


def _plan(services: Services, call: Call, kind: cache.Kind) -> tuple[Chain, Lookup]:
    models = routing.plan(call.config, call.key, call.trace.requested)
    lookup = cache.plan(call.config.settings.cache, call.cache_control, kind,
                        call.trace.requested, models, call.body)
    chain = Chain(models, services.http, call.config.settings, services.cooldowns, call.trace)
    return chain, lookup


async def chat(services: Services, call: Call) -> Outcome:
    chain, lookup = _plan(services, call, "chat")
    stream = bool(call.body.get("stream"))
    include_usage = stream and bool((call.body.get("stream_options") or {}).get("include_usage"))
    if (hit := await cache.get(services.store, lookup)) is not None:
        if stream:
            replayed = streaming.replay(orjson.loads(hit.answer), include_usage)
            return Outcome(_hit_headers(hit.model), stream=replayed)
        return Outcome(_hit_headers(hit.model), body=hit.answer)
    if stream:
        async def finished(answer: dict[str, Any]) -> None:
            if cache.is_complete_chat(answer):
                await cache.put(services.store, lookup, opened.model.name, orjson.dumps(answer))

        opened = await fallbacks.open_stream(chain, call.body)
        relay = streaming.relay(opened, include_usage, call.trace, call.request_id,
                                finished if lookup.writes else None)
        return Outcome(_headers(opened.model.name, call.trace, lookup), stream=relay)
    model, reply = await fallbacks.complete(chain, call.body)
    body = orjson.dumps(reply)
    if cache.is_complete_chat(reply):
        await cache.put(services.store, lookup, model.name, body)
    return Outcome(_headers(model.name, call.trace, lookup), body=body)


async def embeddings(services: Services, call: Call) -> Outcome:
    chain, lookup = _plan(services, call, "embeddings")
    if (hit := await cache.get(services.store, lookup)) is not None:
        return Outcome(_hit_headers(hit.model), body=hit.answer)
    model, reply = await fallbacks.embed(chain, call.body)
    body = orjson.dumps(reply)
    if cache.is_complete_embeddings(reply):
        await cache.put(services.store, lookup, model.name, body)
    return Outcome(_headers(model.name, call.trace, lookup), body=body)
