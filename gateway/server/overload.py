"""Load shedding: past what one worker can serve, a request gets a fast 503, not a slow answer.

Two signals, as Fastify's under-pressure and Envoy's overload manager use them:
- requests in flight (streams included) over `settings.overload.max_in_flight`:
  it bounds the worker's memory;
- the event loop's delay over `settings.overload.max_delay_ms`: a request that
  arrives then would wait in the loop's queue behind the others, and every
  request would get slower until clients time out (the collapse this prevents).
  The delay is measured by a timer that should fire every `TICK_S`: how late
  it fired, or how late it is now when it has not fired yet.

A refusal costs far less than an answer, so the requests that are let in keep
being served at the worker's full rate, and service recovers as soon as the
load does (the next tick). Health, readiness and metrics are never shed. A
request whose client has already left (it timed out while the request waited)
is dropped before any work is done for it: after an overload, that backlog is
what stands between the worker and its recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from gateway.errors import GatewayError
from gateway.schema import OverloadSettings

TICK_S = 0.025


def client_gone(receive: Any) -> bool:
    """Whether the client has closed its connection, asked without waiting: uvicorn's
    request cycle says so in `disconnected` (its `receive` is a bound method of the cycle).
    Another server's receive gives no such answer: the client is taken as there."""
    return bool(getattr(getattr(receive, "__self__", None), "disconnected", False))


class Overloaded(GatewayError):
    """503 with Retry-After: SDKs retry it (unlike an exhausted chain or a budget refusal)."""

    status = 503
    type = "api_error"
    code = "overloaded"

    def __init__(self, message: str, reason: str, retry_after_s: float):
        super().__init__(message)
        self.reason = reason  # in_flight or delay
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(max(1, round(self.retry_after_s)))}


class Overload:
    """One worker's load: requests in flight, and the event loop's delay."""

    def __init__(self, on_shed: Callable[[str], None]) -> None:
        self.in_flight = 0
        self._on_shed = on_shed  # counts a refusal, by reason
        self._delay_s = 0.0  # how late the last tick fired
        self._due = 0.0  # loop time the next tick is due
        self._ticking: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._ticking = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._ticking is not None:
            self._ticking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticking

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._due = loop.time() + TICK_S
            await asyncio.sleep(TICK_S)
            self._delay_s = max(0.0, loop.time() - self._due)

    def delay_s(self) -> float:
        late_now = asyncio.get_running_loop().time() - self._due
        return max(self._delay_s, late_now)

    def left(self, receive: Any) -> bool:
        """Whether a request's client has already gone (counted as shed: `gone`)."""
        if client_gone(receive):
            self._on_shed("gone")
            return True
        return False

    @contextlib.contextmanager
    def admitted(self, limits: OverloadSettings) -> Iterator[None]:
        """A request counted in flight while it is served; Overloaded if it may not come in."""
        if self.in_flight >= limits.max_in_flight:
            self._on_shed("in_flight")
            raise Overloaded(f"the gateway is at settings.overload.max_in_flight "
                             f"({limits.max_in_flight} requests in flight); retry shortly",
                             "in_flight", limits.retry_after_s)
        if limits.max_delay_ms and (delay_ms := self.delay_s() * 1000) > limits.max_delay_ms:
            self._on_shed("delay")
            raise Overloaded(f"the gateway is overloaded: requests wait {delay_ms:.0f} ms "
                             f"before they start (settings.overload.max_delay_ms: "
                             f"{limits.max_delay_ms:g}); retry shortly", "delay",
                             limits.retry_after_s)
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
