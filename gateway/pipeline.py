"""The story of one request, top to bottom, with no HTTP framework in it.

    models = routing.plan(...)                # tier -> models; 404/403 before any I/O
    reply = await fallbacks.complete(...)     # or fallbacks.open_stream(...)
    -> an Outcome: a JSON body, or an SSE stream, plus the x-gateway-* headers
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from gateway import fallbacks, routing, streaming
from gateway.config import ApiKey, Config
from gateway.cooldown import Cooldowns
from gateway.fallbacks import Chain, Trace


@dataclass
class Services:
    """What lives for the whole process; `config` is replaced whole, never edited."""

    config: Config
    http: aiohttp.ClientSession
    cooldowns: Cooldowns


@dataclass
class Outcome:
    headers: dict[str, str]
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None


def new_trace(config: Config, requested: str) -> Trace:
    deadline = asyncio.get_running_loop().time() + config.settings.timeouts.total_s
    return Trace(requested=requested, deadline=deadline)


def _headers(model_name: str, trace: Trace) -> dict[str, str]:
    return {"x-gateway-model": model_name, "x-gateway-attempts": str(len(trace.attempts))}


async def chat(services: Services, config: Config, key: ApiKey, body: dict[str, Any],
               trace: Trace, request_id: str) -> Outcome:
    models = routing.plan(config, key, trace.requested)
    chain = Chain(models, services.http, config.settings, services.cooldowns, trace)
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        opened = await fallbacks.open_stream(chain, body)
        relay = streaming.relay(opened, include_usage, trace, request_id)
        return Outcome(headers=_headers(opened.model.name, trace), stream=relay)
    model, reply = await fallbacks.complete(chain, body)
    return Outcome(headers=_headers(model.name, trace), body=orjson.dumps(reply))
