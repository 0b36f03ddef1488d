"""One request in flight: its trace, record, money and cache decision, closed in one place.

A Context is opened when a request arrives and filled as the pipeline goes:
the key, the request, the trace, the cache lookup, the reservation. However the
request ends, it ends in `close(status)`, exactly once: a reservation nothing
was charged against is released there, and the usage-log line and the metrics
are written there. An answer, whole or cut short, is charged (and, if it is
whole, cached) by `charge` first. The routes close a whole answer or a refusal;
a stream closes itself at its end.
"""

from __future__ import annotations

import asyncio
from asyncio import Task
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway import cache
from gateway.answer import Answer
from gateway.auth import ANONYMOUS
from gateway.cache import Lookup
from gateway.config import ApiKey, Config, Model
from gateway.errors import GatewayError
from gateway.forms.base import StreamForm
from gateway.money import cost, meter
from gateway.money.meter import Metered
from gateway.money.quotas import Admission, model_owner
from gateway.records.records import Record
from gateway.request import CLIENT_LEFT, GatewayRequest, Trace
from gateway.services import Services

FREE = cost.usd(0)  # x-gateway-cost-usd of a cache hit


@dataclass
class Context:
    services: Services
    record: Record
    gone: Callable[[], bool] = lambda: False  # whether the client has left
    cache_control: str | None = None
    key: ApiKey = ANONYMOUS
    request: GatewayRequest | None = None
    trace: Trace | None = None
    lookup: Lookup = field(default_factory=lambda: Lookup("off"))
    metered: Metered | None = None
    admission: Admission | None = None  # the key's place under its rate limits
    charged: bool = False  # an answer is charged against the reservation
    # What ends with the request: the in-flight count of the model that answered.
    ends: list[Callable[[], None]] = field(default_factory=list)
    # Models' places asked ahead of their calls (fallbacks.Chain.ahead): what no call took.
    ahead: dict[str, Admission] = field(default_factory=dict)
    _charging: Task[None] | None = None
    _counted: bool = False  # its usage counted against the rate limits

    @property
    def config(self) -> Config:
        """The configuration at arrival, kept for the whole request, even across a reload."""
        return self.record.config

    def asks(self, request: GatewayRequest) -> None:
        """The body is parsed: from here the request has a name, a trace and a deadline."""
        self.request = request
        self.record.requested, self.record.stream = request.model, request.stream
        if self.config.settings.log_content:
            self.record.prompt = request.content
        deadline = asyncio.get_running_loop().time() + self.config.settings.timeouts.total_s
        self.trace = self.record.trace = Trace(requested=request.model, deadline=deadline,
                                               request_id=self.record.request_id)

    def request_form(self) -> StreamForm:
        """How the request's streamed answers are read."""
        assert self.request is not None
        return self.request.stream_form

    def headers(self, model: Model) -> dict[str, str]:
        attempts = len(self.trace.attempts) if self.trace else 0
        money = self.metered.headers if self.metered else {}
        return {"x-gateway-model": model.name, "x-gateway-attempts": str(attempts),
                "x-gateway-cache": self.lookup.state, **money, **self._limit_headers(),
                **self._downgraded()}

    def _limit_headers(self) -> dict[str, str]:
        return self.admission.headers() if self.admission is not None else {}

    def _downgraded(self) -> dict[str, str]:
        shown = self.record.downgraded
        return {"x-gateway-downgraded": shown} if shown else {}

    def hit(self, model_name: str) -> dict[str, str]:
        """A cache hit: nothing called, nothing charged. Its headers."""
        self.record.model, self.record.cache = model_name, "hit"
        self.record.charged(cost.Usage(0, 0), 0)
        return {"x-gateway-model": model_name, "x-gateway-attempts": "0",
                "x-gateway-cache": "hit", "x-gateway-cost-usd": FREE, **self._limit_headers(),
                **self._downgraded()}

    async def charge(self, model: Model, reply: dict[str, Any], status: int = 200) -> Answer:
        """Charge an answer, whole or cut short (`status` not 200), record what it was, and
        cache it if it is whole. The answer, with its headers."""
        assert self.metered is not None and self.request is not None  # reserved before a call
        self.charged = True  # spoken for: close() no longer releases the reservation
        whole = status == 200 and self.metered.limited != "cut"
        usage, charged = await meter.settle(self.services.budgets, self.metered, model, reply,
                                            whole)
        self.record.model = model.name
        self.record.budget_limited = self.metered.limited
        self.record.charged(usage, charged)
        self._count_usage()  # now, with the settlement: both go in one ledger command
        form = self.request.form
        if self.config.settings.log_content:
            self.record.answer = form.shown(reply)
        answer = Answer.of(self.headers(model), reply)
        limit = self.metered.limits.get(model.name) if self.metered.limited else None
        if (status == 200 and form.is_complete(reply, length_ok=self.metered.limited is None)
                and (limit is None or form.same_when_limited(self.request.body, limit))):
            await cache.put(self.services.store, self.lookup, model.name, answer.encoded())
        return answer

    def charge_apart(self, model: Model, reply: dict[str, Any], status: int) -> Task[None]:
        """`charge` in a task of its own: a client that leaves cancels the request's task, and
        what was made must still be charged. A close() meanwhile waits for it."""
        self.charged = True

        async def charging() -> None:
            await self.charge(model, reply, status)

        self._charging = self.services.spawn(charging())
        return self._charging

    def close(self, status: int) -> None:
        """The request is over (once; later calls do nothing): a reservation no answer was
        charged against is released, and the request's record is written, after the charge
        if one is on its way."""
        if self._charging is not None and not self._charging.done():
            self._charging.add_done_callback(lambda _: self.close(status))
            return
        if self.record.closed:
            return
        for end in self.ends:
            end()
        if self.metered is not None and not self.charged:
            meter.release(self.services.budgets, self.metered)
        self._count_usage()
        self.services.records.close(self.record, status)

    def _count_usage(self) -> None:
        """The tokens used count against the key's and the model's tokens per minute, and the
        key's place in flight is freed; a model's place no call took is given back. Once:
        when the answer is charged, or else when the request closes."""
        if self._counted:
            return
        self._counted = True
        quotas, usage, rid = self.services.quotas, self.record.usage, self.record.request_id
        tokens = usage.input_tokens + usage.output_tokens if usage is not None else 0
        for unused in self.ahead.values():
            if unused.admitted:
                quotas.release(unused)
        counted = [self.admission.owner] if (
            self.admission is not None and self.key.limits.tpm is not None) else []
        model = self.config.models.get(self.record.model or "")
        if model is not None and model.limits.tpm is not None:
            counted.append(model_owner(model.name))
        quotas.ended(self.admission, counted, tokens, rid)


def status_of(exc: BaseException) -> int:
    """The status a request that ended in `exc` is recorded with."""
    if isinstance(exc, GatewayError):
        return exc.status
    return CLIENT_LEFT if isinstance(exc, asyncio.CancelledError) else 500
