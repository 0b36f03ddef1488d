"""Per-key daily budgets that are never overspent: reserve, grow while answering, settle.

Before a provider call, a Lua script (budget_scripts.py) adds up the key's
spend today and the reservations of requests in flight, and reserves what this
request asks for only if the sum stays within the budget; being one script, it
is atomic, so concurrent requests on any number of workers and replicas cannot
all pass the check. When the ask does not fit but the request's minimum does,
it reserves what is left (or, `patient`, says that other requests' holds are in
the way, and the caller waits for them). A streaming answer grows its
reservation the same way (`grow`) and records a running tally (`tally`) that an
expired reservation is charged. After the answer, the settlement releases the
reservation and adds the real cost. Every write is idempotent by reservation id.

The reservations and settlements of one turn of the event loop go to the
store together at the next turn, in one command: a busy gateway pays one round
trip for many requests. A settlement is sent after its answer, off the
request's path; until it lands, the reservation holds the money, so no budget
is overspent. Spend is kept for every key, budget or not. A settlement the
store cannot take is queued in memory and written when the store answers again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from gateway.config import ApiKey
from gateway.errors import BudgetExceeded
from gateway.money import cost
from gateway.money.budget_scripts import APPLY, BALANCE
from gateway.schema import TimeoutSettings
from gateway.store import Store, StoreDown

log = logging.getLogger("gateway")
SPEND_KEPT_S = 8 * 86400  # `gateway spend` and /admin/spend look back a week
RESERVATIONS_KEPT_S = 2 * 86400
SETTLED_MARKER_S = 600  # how long a settlement sent again after a lost reply is recognised
BATCH_MAX = 200  # reservations, and settlements, per command: one script must not hold Redis long


def today() -> date:
    return datetime.now(UTC).date()


def resets_at(day: date) -> str:
    return f"{day + timedelta(days=1):%Y-%m-%d}T00:00:00Z"


def spend_key(day: date) -> str:
    return f"gw:spend:v1:{day:%Y-%m-%d}"


@functools.lru_cache(maxsize=4096)
def _keys(name: str, day: date) -> tuple[str, str, str]:
    """A key's spend hash, reservations hash and reservation expiries that day."""
    return (spend_key(day), f"gw:reservations:v1:{day:%Y-%m-%d}:{name}",
            f"gw:reservation-expiry:v1:{day:%Y-%m-%d}:{name}")


def _new_id() -> str:
    return f"{random.getrandbits(128):032x}"  # unique, not secret: the fast generator will do


SETTLED_PREFIX = "gw:settled:v1:"  # + a reservation's id: the marker its settlement leaves


def budget_microusd(key: ApiKey) -> int | None:
    if key.daily_budget_usd is None:
        return None
    return round(key.daily_budget_usd * 1_000_000)


@dataclass(frozen=True)
class Settlement:
    reservation: Reservation
    charged: int  # micro-dollars
    marker: str  # the reservation's id, or one of its own: the store applies it once


@dataclass(frozen=True)
class SpendRow:
    key: str
    spent: int  # micro-dollars
    budget: int | None  # micro-dollars; None: no budget, or a key no longer configured
    configured: bool


def spend_rows(keys: tuple[ApiKey, ...], spent: dict[str, int]) -> list[SpendRow]:
    """Every configured key, then keys that spent that day but are gone from router.yaml."""
    rows = [SpendRow(k.name, spent.get(k.name, 0), budget_microusd(k), True) for k in keys]
    configured = {k.name for k in keys}
    rows += [SpendRow(name, spent[name], None, False) for name in sorted(set(spent) - configured)]
    return rows


@dataclass(frozen=True)
class Balance:
    spent: int  # micro-dollars, today
    reserved: int  # micro-dollars held by requests in flight

    def remaining(self, key: ApiKey) -> int | None:
        budget = budget_microusd(key)
        return None if budget is None else max(0, budget - self.spent - self.reserved)


@dataclass(frozen=True)
class Reservation:
    key: ApiKey
    day: date
    id: str  # '' when nothing is reserved (no budget, a free request, or unmetered)
    granted: int  # micro-dollars
    seen: Balance | None = None  # the key's balance when it was granted, this grant included

    def remaining_after(self, charged: int) -> int | None:
        """The budget left once this request is charged, as of its reservation."""
        if self.seen is None:
            return None
        settled = Balance(self.seen.spent + charged, self.seen.reserved - self.granted)
        return settled.remaining(self.key)


def refusal(key: ApiKey, day: date, balance: Balance, minimum: int) -> BudgetExceeded:
    budget = budget_microusd(key) or 0
    spent, reserved = cost.usd(balance.spent), cost.usd(balance.reserved)
    if balance.spent >= budget:
        what = (f"budget for key {key.name} is exhausted for {day} (UTC): spent "
                f"${spent} of ${cost.usd(budget)}")
    else:
        left = cost.usd(max(0, budget - balance.spent - balance.reserved))
        what = (f"budget for key {key.name} cannot pay for this request on {day} (UTC): "
                f"it needs at least ${cost.usd(minimum)} (its input and one output token), "
                f"and ${left} is left of "
                f"${cost.usd(budget)} (spent ${spent}, ${reserved} held by requests in "
                "flight); send a shorter request")
    return BudgetExceeded(f"{what}; resets at {resets_at(day)}")


class Blocked(BudgetExceeded):
    """The request would fit but for what requests in flight hold: worth waiting for."""


def hold_s_for(timeouts: TimeoutSettings) -> int:
    """A reservation outlives any request (total_s bounds them all), plus a margin."""
    return math.ceil(timeouts.total_s) + 5


@dataclass
class _Grow:
    """A reservation made or grown, waiting for the next batch to the store."""

    key: ApiKey
    day: date
    id: str
    new: bool  # a reservation not yet in the store: one that may exist must be freed
    args: list[str | int]  # the script's ARGV for it
    # held, spent, reserved, blocked; None: nobody waits for it
    answer: asyncio.Future[list[int]] | None

    def held(self, amount: int) -> Reservation:
        return Reservation(self.key, self.day, self.id, amount)


@dataclass
class Budgets:
    store: Store
    hold_s: int  # how long a reservation outlives a process that died holding it
    _grows: list[_Grow] = field(default_factory=list)  # not yet sent
    _queued: list[Settlement] = field(default_factory=list)  # not yet sent
    _next: asyncio.Task[None] | None = None  # the batch that takes what is asked and queued
    _sending: set[asyncio.Task[None]] = field(default_factory=set)
    _pending: list[Settlement] = field(default_factory=list)  # the store was down
    _flusher: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self._apply_script = self.store.redis.register_script(APPLY)
        self._balance = self.store.redis.register_script(BALANCE)

    async def reserve(self, key: ApiKey, worst: int, minimum: int,
                      replaces: Reservation | None = None,
                      patient: bool = False) -> Reservation:
        """Reserve up to `worst` micro-dollars, at least `minimum`, or raise BudgetExceeded.

        `replaces` is freed in the same step, granted or not. `patient`: when `worst` would
        fit but for other requests' holds, raise Blocked instead of granting a part.
        Raises StoreDown when the store does not answer.
        """
        day, budget = today(), budget_microusd(key)
        if replaces is not None and replaces.day != day:  # the day turned in between
            self.settle(replaces, 0)
            replaces = None
        if budget is None or worst == 0:
            if replaces is not None:
                self.settle(replaces, 0)
            return Reservation(key, day, "", 0)
        rid = _new_id()
        held, spent, reserved, blocked = await self._ask(
            key, day, rid, [budget, 0, worst, minimum, rid,
                            replaces.id if replaces is not None else "", "",
                            int(patient)])
        seen = Balance(spent, reserved)
        if not held and blocked and patient:
            raise Blocked(str(refusal(key, day, seen, minimum)))
        if not held:
            raise refusal(key, day, seen, minimum)
        return Reservation(key, day, rid, held, seen)

    async def grow(self, reservation: Reservation, target: int, minimum: int, used: int,
                   patient: bool = False) -> tuple[Reservation, bool]:
        """Grow a reservation towards `target` micro-dollars in all, by at least `minimum`;
        what the store holds for it after (unchanged when the budget has no more, 0 when
        it is gone), and whether other requests' holds stood in the way (with `patient`,
        nothing is granted then). Records `used` as its tally. Raises StoreDown."""
        budget = budget_microusd(reservation.key)
        if budget is None or not reservation.id:
            return reservation, False
        held, spent, reserved, blocked = await self._ask(
            reservation.key, reservation.day, reservation.id,
            [budget, reservation.granted, target, minimum, reservation.id, "", used,
             int(patient)])
        return Reservation(reservation.key, reservation.day, reservation.id, held,
                           Balance(spent, reserved)), bool(blocked)

    def tally(self, reservation: Reservation, used: int) -> None:
        """Record what the request has used so far (charged if its process dies), soon."""
        if reservation.id and (budget := budget_microusd(reservation.key)) is not None:
            g = reservation.granted
            self._grows.append(_Grow(reservation.key, reservation.day, reservation.id, False,
                                     [reservation.key.name, budget, g, g, 1, reservation.id,
                                      "", used, 0], None))
            self._send_soon()

    async def _ask(self, key: ApiKey, day: date, rid: str, args: list[str | int],
                   ) -> list[int]:
        grow = _Grow(key, day, rid, args[1] == 0, [key.name, *args],
                     asyncio.get_running_loop().create_future())
        self._grows.append(grow)
        self._send_soon()
        answer = grow.answer
        assert answer is not None
        try:
            return await answer
        except asyncio.CancelledError:
            # Granted, then cancelled before this task resumed: the grant goes back.
            if grow.new and answer.done() and not answer.cancelled() and (
                    answer.exception() is None and answer.result()[0]):
                self.settle(grow.held(answer.result()[0]), 0)
            raise

    def settle(self, reservation: Reservation, charged: int) -> None:
        """Release the reservation and add the real cost, soon and off the request's path."""
        self._queued.append(Settlement(reservation, charged, reservation.id or _new_id()))
        self._send_soon()

    def _send_soon(self) -> None:
        """A batch leaves at the next turn of the loop, with whatever has queued by then."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_task(self._send())
            self._sending.add(self._next)
            self._next.add_done_callback(self._sending.discard)

    async def _send(self) -> None:
        self._next = None
        grows, self._grows = self._grows[:BATCH_MAX], self._grows[BATCH_MAX:]
        settling, self._queued = self._queued[:BATCH_MAX], self._queued[BATCH_MAX:]
        if self._grows or self._queued:  # the rest goes in the next batch, at once
            self._send_soon()
        if not grows and not settling:
            return
        try:
            answers = await self._apply(settling, grows)
        except StoreDown as exc:
            self._keep(settling + self._maybe_made(grows))
            for one in grows:
                if one.answer is not None and not one.answer.done():
                    one.answer.set_exception(StoreDown(str(exc)))
            return
        except asyncio.CancelledError:  # shutdown: no request waits forever
            self._keep(settling + self._maybe_made(grows))
            for one in grows:
                if one.answer is not None:
                    one.answer.cancel()
            raise
        for i, one in enumerate(grows):
            held = [int(n) for n in answers[4 * i:4 * i + 4]]
            if one.answer is not None and not one.answer.done():
                one.answer.set_result(held)
            elif one.new and held[0]:  # its request was cancelled while the store answered
                self.settle(one.held(held[0]), 0)

    @staticmethod
    def _maybe_made(grows: list[_Grow]) -> list[Settlement]:
        """A reservation whose command failed may have been made all the same (the reply
        was lost): it is freed when the store answers again, and never made after that."""
        return [Settlement(one.held(0), 0, one.id) for one in grows if one.new]

    def _keep(self, settling: list[Settlement]) -> None:
        """Settlements the store did not take wait for its return; none is dropped."""
        if not settling:
            return
        self._pending.extend(settling)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    def _common(self, settlements: int, grows: int) -> list[str | int]:
        return [settlements, grows, self.hold_s, RESERVATIONS_KEPT_S, SPEND_KEPT_S,
                SETTLED_MARKER_S, SETTLED_PREFIX]

    async def _apply(self, settling: list[Settlement], grows: list[_Grow]) -> list[int]:
        keys: list[str] = []
        args = self._common(len(settling), len(grows))
        for settlement in settling:
            reservation = settlement.reservation
            keys += _keys(reservation.key.name, reservation.day)
            args += [reservation.key.name, reservation.id, settlement.charged, settlement.marker]
        for one in grows:
            keys += _keys(one.key.name, one.day)
            args += one.args
        # redis-py's Script loads it again into a restarted store that forgot it.
        return await self.store.run(lambda _: self._apply_script(keys=keys, args=args))

    async def flush(self) -> None:
        """Send what is queued now, and wait for every batch on its way (for reads, and at
        shutdown)."""
        if self._queued or self._grows:
            self._send_soon()
        if self._sending:
            await asyncio.wait(set(self._sending))

    async def _flush(self) -> None:
        log.warning("%d spend settlement(s) wait for the store", len(self._pending))
        while self._pending:
            await asyncio.sleep(1)
            while self._pending:
                try:
                    await self._apply(self._pending[:1], [])
                except StoreDown:
                    break
                self._pending.pop(0)
        log.warning("queued spend settlements written to the store")

    def close(self) -> None:
        if unwritten := len(self._pending) + len(self._queued):
            log.error("%d spend settlement(s) could not be written: the store did not answer "
                      "before shutdown", unwritten)
        if self._flusher is not None:
            self._flusher.cancel()

    async def balance(self, key: ApiKey, day: date | None = None) -> Balance:
        """The key's balance, this process's queued settlements included."""
        await self.flush()
        day = day or today()
        args = [*self._common(0, 0), key.name]
        spent, reserved = await self.store.run(
            lambda _: self._balance(keys=_keys(key.name, day), args=args))
        return Balance(int(spent), int(reserved))

    async def spend_on(self, day: date) -> dict[str, int]:
        """Every key's spend that day, in micro-dollars."""
        await self.flush()
        raw = await self.store.run(lambda redis: redis.hgetall(spend_key(day)))
        return {name.decode(): int(value) for name, value in raw.items()}
