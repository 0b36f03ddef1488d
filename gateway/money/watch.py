"""A budgeted answer's output, watched as it streams: the reservation grows ahead of it,
a running tally is kept in the store, and the answer ends where the budget does.

Once all the provider may make (its limit) is reserved, nothing is enforced
here: the provider's limit governs. Until then: every token is at least one
byte of UTF-8, so the bytes seen bound the tokens made, and most answers end
within their first slice on that bound alone. When the bound comes within half a slice of what is
reserved, the output (and the input) are counted with the tokenizer from then
on, since a byte a token is about 4x high for prose, and the reservation grows
by a slice each time the count nears it (one batched round trip, off the
stream's path); a chunk the reservation cannot pay for waits for that growth.
When the budget has no more (after waiting `settings.budgets.wait_s` for
other requests' holds to go), the first chunk it cannot pay for is not sent:
the gateway closes the provider's stream and ends the answer as a provider
ends one at its limit (each unfinished choice with `finish_reason: "length"`;
an Anthropic message with `stop_reason: "max_tokens"`). When the store does
not answer for as long, the stream ends with an error event instead
(on_store_error: refuse), or goes on unmetered (allow).

The tally is an estimate of what the request has used (the input, and the
output at 3 characters a token, a byte a token outside ASCII: high for prose,
about right for code), written to the store with the reservation (its input, priced
for the chain's first model; again when the stream opens on another model) and
after every TALLY_BYTES of output. If the process dies, its reservation expires and
the tally is charged: a crash loses at most the output since the last tally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncGenerator
from typing import Any

from gateway.config import Model
from gateway.errors import NotReady
from gateway.fallbacks import OpenStream
from gateway.money import cost, meter, tokens, worst_case
from gateway.money.budget import Blocked, Budgets
from gateway.money.meter import Metered
from gateway.store import StoreDown

log = logging.getLogger("gateway")
TALLY_BYTES = 512
CHARS_PER_TOKEN = meter.CHARS_PER_TOKEN


class Watch:
    """One metered answer's output against its reservation; `start` gives the stream."""

    def __init__(self, budgets: Budgets, metered: Metered, model: Model):
        worst = metered.worst
        priced = worst.priced(model) if worst is not None else None
        assert priced is not None, "a metered request's stream only"
        self.budgets, self.metered, self.model = budgets, metered, model
        request = metered.request
        # Web searches the model may run are billed apart: those reserved are in the worst
        # case; each one past them raises what the answer may cost (and must be paid for).
        self.reserved_searches = (request.web_searches
                                  if worst_case.searches_on(model, request) else 0)
        self.searches = 0
        self.input_pico = priced.input_pico - self.reserved_searches * cost.WEB_SEARCH_PICO
        self.rate = priced.output_pico
        self.input_estimate_pico = (metered.input_estimate(model)
                                    * cost.rates(model.price).input)
        self.full_pico = priced.full_pico  # past it, the provider's limit governs
        # The most output the provider may make: what it writes past it is not charged
        # (meter.settle), so an estimate above it is no reason to cut.
        self.limit_tokens = metered.limits.get(model.name, priced.limit) * priced.choices
        self.slice = max(1, cost.microusd(priced.slice_pico))
        self.ascii = self.other = 0  # the output so far: ASCII characters, other bytes
        self.texts: list[str] = []  # the output, until it is counted (if it may need to be)
        self.counted: tokens.Counted | None = None  # the output's count, once counted
        self.tallied_bytes = 0
        self.growing: asyncio.Task[None] | None = None
        self.exhausted = False  # the budget had no more for it
        self.store_down = False  # the last growth found the store not answering
        self.unmetered = False  # the store went down, and on_store_error is allow
        form = metered.request.stream_form
        self.output_texts = form.output_texts
        self.searches_in = form.searches
        self.ending = form.ending(metered.request.n)
        metered.seen_output = self.output_tokens  # what settles an answer cut short

    async def start(self, opened: OpenStream) -> OpenStream:
        """The stream as the client gets it; its head (up to the first token) is held to
        the reservation like every other chunk."""
        head: list[dict[str, Any]] = []
        try:
            for chunk in opened.head:
                if not await self._admit(chunk):
                    await opened.rest.aclose()
                    return OpenStream(opened.model, [*head, *self._cut()], _nothing())
                head.append(chunk)
        except BaseException:
            await opened.rest.aclose()  # the provider's stream goes with the request
            raise
        if self.metered.tallied != opened.model.name:  # else its reservation carried it
            self._tally()  # the input is billed from here on, even if the process dies
        return OpenStream(opened.model, head, self._watched(opened.rest))

    async def _watched(self, rest: AsyncGenerator[dict[str, Any], None],
                       ) -> AsyncGenerator[dict[str, Any], None]:
        async with contextlib.aclosing(rest):  # closing this closes the provider's stream
            async for chunk in rest:
                if not await self._admit(chunk):
                    for cut in self._cut():
                        yield cut
                    return
                yield chunk

    async def _admit(self, chunk: dict[str, Any]) -> bool:
        """Count the chunk; whether the reservation pays for the output with it."""
        texts = self.output_texts(chunk)
        searched = self.searches_in(chunk)
        self.searches += searched
        self._add(chunk, texts)
        if texts and self.counted is not None:
            self.counted = self.counted + await self._count(texts)
        elif texts and self._granted < self.cap:  # kept only while it may need counting
            self.texts += texts
        if (texts or searched) and not self.unmetered and not await self._paid():
            return False
        if self.ascii + self.other - self.tallied_bytes >= TALLY_BYTES:
            self._tally()
        return True

    def output_tokens(self) -> int:
        """The output sent so far, in tokens: counted, or estimated as the tally is."""
        if self.counted is not None:
            return self.counted.for_model(self.model)
        return math.ceil(self.ascii / CHARS_PER_TOKEN) + self.other

    @property
    def used(self) -> int:
        """The most the answer can have cost so far, micro-dollars: a byte per token, or,
        once counted, the count (with the input counted too)."""
        output = (self.counted.for_model(self.model) if self.counted is not None
                  else self.ascii + self.other)
        return cost.microusd(self.input_pico + self._fees_pico
                             + min(output, self.limit_tokens) * self.rate)

    @property
    def cap(self) -> int:
        """All the provider may make, micro-dollars: past it, its own limit governs."""
        extra = max(0, self.searches - self.reserved_searches) * cost.WEB_SEARCH_PICO
        return cost.microusd(self.full_pico + extra)

    @property
    def _fees_pico(self) -> int:
        return max(self.searches, self.reserved_searches) * cost.WEB_SEARCH_PICO

    def _estimate(self) -> int:
        if self.counted is not None:
            output = self.counted.for_model(self.model)
        else:
            output = math.ceil(self.ascii / CHARS_PER_TOKEN) + self.other
        return min(cost.microusd(self.input_estimate_pico + self._fees_pico
                                 + min(output, self.limit_tokens) * self.rate),
                   self._granted)

    def _add(self, chunk: dict[str, Any], texts: list[str]) -> None:
        for text in texts:
            if text.isascii():
                self.ascii += len(text)
            else:
                self.other += len(text.encode())
        self.ending.add(chunk)

    def _tally(self) -> None:
        self.tallied_bytes = self.ascii + self.other
        self.budgets.tally(self.metered.reservation, self._estimate())

    async def _count(self, texts: list[str]) -> tokens.Counted:
        """Counted apart, summed; the model's estimate is made of the sum, rounded once."""
        text = "".join(texts)
        if tokens.loaded() and len(text) < meter.COUNT_INLINE_CHARS:
            counted = tokens.count_text(text)
        else:
            counted = await asyncio.to_thread(tokens.count_text, text)
        return tokens.Counted(counted, len(text.encode()), 0)

    async def _paid(self) -> bool:
        """Whether the reservation pays for the output so far, grown first if it must be.
        Once all the provider may make is reserved, its own limit governs (and what it
        writes past that limit is not charged: meter.settle)."""
        if self._granted >= self.cap:
            return True
        if self.counted is None and self.used + self.slice // 2 > self._granted:
            await self._count_from_here()  # a byte a token is about 4x high for prose
        used, granted = self.used, self._granted
        loop = asyncio.get_running_loop()
        if (used + self.slice // 2 > granted and self.growing is None and not self.exhausted
                and granted < self.cap):
            self.growing = loop.create_task(self._grow_soon(used))
        # What this chunk needs: the stream pauses for it up to settings.budgets.wait_s.
        until = loop.time() + self.metered.wait_s
        if used > granted and self.growing is not None:
            await asyncio.wait({self.growing}, timeout=self.metered.wait_s)
        if not self._covers():
            # Once more, now; while only other requests' holds (or a store that does not
            # answer) stand in the way, wait for them: the stream pauses rather than ends.
            try:
                await meter.waiting(until - loop.time(), self._grow_now)
            except StoreDown:
                self.store_down = True
                self.unmetered = self.metered.on_store_error == "allow"
        if not self._covers() and self.store_down:
            raise NotReady(f"the store does not answer, so the budget of key "
                           f"{self.metered.reservation.key.name} cannot pay for more of this "
                           "answer (settings.budgets.on_store_error: refuse)")
        return self._covers()

    def _covers(self) -> bool:
        return self.unmetered or self.used <= self._granted

    @property
    def _granted(self) -> int:
        return self.metered.reservation.granted

    async def _count_from_here(self) -> None:
        """From now on the output, and the input, are counted with the tokenizer."""
        input_tokens = (await meter.counted_input(self.metered)).for_model(self.model)
        priced = self.metered.worst.priced(self.model) if self.metered.worst else None
        rate = priced.input_rate if priced is not None else cost.rates(self.model.price).input
        self.input_pico = input_tokens * rate
        self.counted = await self._count(self.texts)
        self.texts = []

    async def _grow_soon(self, used: int) -> None:
        """The background growth ahead of the output; one at a time."""
        try:
            await self._grow(used)
        finally:
            self.growing = None

    async def _grow_now(self, patient: bool) -> None:
        """Grow by at least what the output so far needs; Blocked when `patient` and only
        other requests' holds, or the store's silence, stand in the way."""
        blocked = await self._grow(self.used, self.used - self._granted)
        if patient and blocked and not self._covers():
            raise Blocked("other requests hold what this answer needs")

    async def _grow(self, used: int, minimum: int = 0) -> bool:
        """Grow the reservation by a slice (at least `minimum`, or by what is left); whether
        other requests' holds or the store's silence stood in the way."""
        reservation = self.metered.reservation
        target = min(self.cap, max(reservation.granted, used) + self.slice)
        try:
            grown, blocked = await self.budgets.grow(
                reservation, target, max(1, minimum, cost.microusd(self.rate)),
                self._estimate())
        except StoreDown:
            if self.metered.on_store_error == "allow":
                log.warning("the store does not answer: a stream of key %s goes on unmetered",
                            reservation.key.name)
                self.unmetered = True
                return False
            self.store_down = True
            return True
        self.store_down = False
        self.tallied_bytes = self.ascii + self.other
        if grown.granted <= reservation.granted:
            self.exhausted = True  # no more in the budget (or the reservation is gone)
        else:
            self.metered.reservation, self.exhausted = grown, False
        return blocked

    def _cut(self) -> list[dict[str, Any]]:
        """The end of an answer the budget cannot pay more of, as if the provider had
        reached a limit (finish_reason "length"; stop_reason "max_tokens")."""
        self.metered.limited = "cut"
        self.metered.headers["x-gateway-budget-cut"] = "true"
        return self.ending.cut(self.output_tokens())


async def _nothing() -> AsyncGenerator[dict[str, Any], None]:
    return
    yield  # an async generator, empty


async def watched(budgets: Budgets, metered: Metered, opened: OpenStream) -> OpenStream:
    """The stream as the client gets it: watched when the request is metered."""
    if not metered.reservation.id or metered.worst is None:
        return opened
    return await Watch(budgets, metered, opened.model).start(opened)
