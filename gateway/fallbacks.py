"""The loop over the chain: try each usable model in order, collecting what each failure was.

A transient failure, a provider auth error or a context overflow moves on to
the next model; a client error ends the request at once with the provider's
status. A stream may move on until its first token (a non-empty text or
tool-call delta) exists; the client has seen nothing before that.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.config import Model
from gateway.errors import Attempt, ChainFailed, ProviderError
from gateway.providers import adapter_for
from gateway.schema import TimeoutSettings


@dataclass
class Trace:
    """What happened to one request, for headers, errors and the usage log."""

    requested: str
    deadline: float  # loop time by which the whole request must be done
    attempts: list[Attempt] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def record(self, model: Model, started: float, error: ProviderError | None) -> None:
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        if error is None:
            self.attempts.append(Attempt(model.name, 200, None, latency_ms))
        else:
            self.attempts.append(Attempt(model.name, error.status, error.message, latency_ms))

    def remaining_s(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()


@dataclass
class OpenStream:
    """A stream whose first token exists: it can no longer fall back."""

    model: Model
    head: list[dict[str, Any]]
    rest: AsyncIterator[dict[str, Any]]


def _usable(chain: tuple[Model, ...], trace: Trace) -> list[Model]:
    models = []
    for model in chain:
        if model.unusable:
            trace.skipped.append(f"{model.name}: skipped ({model.unusable})")
        else:
            models.append(model)
    return models


def _call_timeout(trace: Trace, timeouts: TimeoutSettings) -> float:
    remaining = trace.remaining_s()
    if remaining <= 0:
        raise TimeoutError
    return min(timeouts.first_token_s, remaining)


async def complete(chain: tuple[Model, ...], body: dict[str, Any], http: aiohttp.ClientSession,
                   timeouts: TimeoutSettings, trace: Trace) -> tuple[Model, dict[str, Any]]:
    for model in _usable(chain, trace):
        started = time.perf_counter()
        try:
            try:
                async with asyncio.timeout(_call_timeout(trace, timeouts)):
                    reply = await adapter_for(model).complete(http, model, body)
            except TimeoutError as exc:
                raise ProviderError(f"no answer within {timeouts.first_token_s:g}s", status=504,
                                    kind="transient", timed_out=True) from exc
        except ProviderError as error:
            trace.record(model, started, error)
            if not error.falls_back:
                raise
            continue
        trace.record(model, started, None)
        return model, reply
    raise ChainFailed(trace.requested, trace.attempts, trace.skipped)


def has_token(chunk: dict[str, Any]) -> bool:
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls"):
            return True
    return False


async def open_stream(chain: tuple[Model, ...], body: dict[str, Any],
                      http: aiohttp.ClientSession, timeouts: TimeoutSettings,
                      trace: Trace) -> OpenStream:
    for model in _usable(chain, trace):
        started = time.perf_counter()
        chunks = adapter_for(model).stream(http, model, body)
        head: list[dict[str, Any]] = []
        try:
            try:
                async with asyncio.timeout(_call_timeout(trace, timeouts)):
                    async for chunk in chunks:
                        head.append(chunk)
                        if has_token(chunk):
                            break
            except TimeoutError as exc:
                raise ProviderError(f"no first token within {timeouts.first_token_s:g}s",
                                    status=504, kind="transient", timed_out=True) from exc
        except ProviderError as error:
            await chunks.aclose()
            trace.record(model, started, error)
            if not error.falls_back:
                raise
            continue
        except BaseException:
            with contextlib.suppress(Exception):
                await chunks.aclose()
            raise
        trace.record(model, started, None)
        return OpenStream(model, head, chunks)
    raise ChainFailed(trace.requested, trace.attempts, trace.skipped)
