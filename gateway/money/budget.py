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

The reservations and settlements travel through the ledger (ledger.py), which
sends those of one turn of the event loop to the store together, in one
command. A settlement is a write, sent after its answer, off the request's
path; until it lands, the reservation holds the money, so no budget is
overspent. Spend is kept for every key, budget or not. A settlement the store
cannot take is queued in memory and written when the store answers again.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from gateway.config import ApiKey
from gateway.errors import BudgetExceeded
from gateway.money import cost
from gateway.money.budget_scripts import BALANCE
from gateway.money.ledger import Arg, Ask, Ledger, Write
from gateway.schema import TimeoutSettings

SPEND_KEPT_S = 8 * 86400  # `gateway spend` and /admin/spend look back a week
RESERVATIONS_KEPT_S = 2 * 86400
SETTLED_MARKER_S = 600  # how long a settlement sent again after a lost reply is recognised


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


def budget_microusd(key: ApiKey) -> int | None:
    if key.daily_budget_usd is None:
        return None
    return round(key.daily_budget_usd * 1_000_000)


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




def _settlement(reservation: Reservation, charged: int, marker: str) -> Write:
    """Release the reservation (if any) and add `charged`; `marker`: the reservation's id,
    or one of its own, by which the store applies it once. A spend it takes past one of
    the key's alert thresholds queues that alert (once a day)."""
    key = reservation.key
    budget = budget_microusd(key)
    return Write("settle", _keys(key.name, reservation.day),
                 (key.name, reservation.id, charged, marker, SPEND_KEPT_S, SETTLED_MARKER_S,
                  "" if budget is None else budget, f"{reservation.day:%Y-%m-%d}",
                  *key.alert_at_percent))


def _grow(key: ApiKey, day: date, rid: str, args: tuple[Arg, ...], hold_s: int) -> Ask:
    """An ask to make or grow reservation `rid`; answered held, spent, reserved, blocked."""
    new = args[1] == 0  # a reservation not yet in the store: one that may exist is freed

    def undo(answer: list[int] | None) -> Write | None:
        if not new or (answer is not None and not answer[0]):  # nothing granted to free
            return None
        return _settlement(Reservation(key, day, rid, 0), 0, rid)

    return Ask("grow", _keys(key.name, day),
               (key.name, *args, hold_s, RESERVATIONS_KEPT_S, SETTLED_MARKER_S), 4, undo)


@dataclass
class Budgets:
    ledger: Ledger  # shared with the other quotas: one command per turn of the event loop
    hold_s: int  # how long a reservation outlives a process that died holding it
    # Each key's spend today as this process last saw it (micro-dollars), from the store's
    # answers to reservations and from this process's settlements; what a downgrade reads.
    _spent: dict[str, tuple[date, int]] = field(init=False, default_factory=dict)

    def reconfigure(self, timeouts: TimeoutSettings) -> None:
        """Reservations made from now on are held as long as the new timeouts need."""
        self.hold_s = hold_s_for(timeouts)

    async def reserve(self, key: ApiKey, worst: int, minimum: int,
                      replaces: Reservation | None = None,
                      patient: bool = False, used: int | None = None) -> Reservation:
        """Reserve up to `worst` micro-dollars, at least `minimum`, or raise BudgetExceeded.

        `replaces` is freed in the same step, granted or not. `patient`: when `worst` would
        fit but for other requests' holds, raise Blocked instead of granting a part.
        `used`: the reservation's first tally (see `tally`), written with it.
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
        held, spent, reserved, blocked = await self.ledger.ask(_grow(
            key, day, rid, (budget, 0, worst, minimum, rid,
                            replaces.id if replaces is not None else "",
                            "" if used is None else used, int(patient)),
            self.hold_s))
        seen = Balance(spent, reserved)
        self._saw(key, day, spent)
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
        held, spent, reserved, blocked = await self.ledger.ask(_grow(
            reservation.key, reservation.day, reservation.id,
            (budget, reservation.granted, target, minimum, reservation.id, "", used,
             int(patient)), self.hold_s))
        self._saw(reservation.key, reservation.day, spent)
        return Reservation(reservation.key, reservation.day, reservation.id, held,
                           Balance(spent, reserved)), bool(blocked)

    def tally(self, reservation: Reservation, used: int) -> None:
        """Record what the request has used so far (charged if its process dies), soon."""
        if reservation.id and (budget := budget_microusd(reservation.key)) is not None:
            key, g = reservation.key, reservation.granted
            self.ledger.post(_grow(key, reservation.day, reservation.id,
                                   (budget, g, g, 1, reservation.id, "", used, 0), self.hold_s))

    def settle(self, reservation: Reservation, charged: int) -> None:
        """Release the reservation and add the real cost, soon and off the request's path."""
        self.ledger.write(_settlement(reservation, charged, reservation.id or _new_id()))
        if reservation.seen is not None:
            self._saw(reservation.key, reservation.day, reservation.seen.spent + charged)

    def _saw(self, key: ApiKey, day: date, spent: int) -> None:
        last = self._spent.get(key.name)
        if last is None or last[0] < day or (last[0] == day and last[1] < spent):
            self._spent[key.name] = (day, spent)  # spend only grows within a day

    def spent_seen(self, key: ApiKey) -> int | None:
        """The key's spend today as this process last saw it; None: not seen today."""
        last = self._spent.get(key.name)
        return last[1] if last is not None and last[0] == today() else None

    async def flush(self) -> None:
        """Send what is queued now, and wait for every batch on its way (at shutdown)."""
        await self.ledger.flush()

    def close(self) -> None:
        self.ledger.close()

    async def balance(self, key: ApiKey, day: date | None = None) -> Balance:
        """The key's balance, this process's queued settlements included."""
        day = day or today()
        spent, reserved = await self.ledger.read(
            BALANCE, _keys(key.name, day), [key.name, SETTLED_MARKER_S])
        return Balance(spent, reserved)

    async def spend_on(self, day: date) -> dict[str, int]:
        """Every key's spend that day, in micro-dollars."""
        return await self.ledger.counters(spend_key(day))
