"""Per-key daily budgets that are never overspent: reserve the worst case, then settle.

Before a provider call, one Lua script adds up the key's spend today and the
reservations of requests in flight, and reserves this request's worst case
only if the sum stays within the budget; being one script, it is atomic, so
concurrent requests on any number of workers and replicas cannot all pass the
check. When the worst case does not fit but the input and one output token
do, it reserves what is left, and the caller lowers `max_tokens` to what that
pays for. After the answer, a second script releases the reservation and adds
the real cost. A reservation carries an expiry, so one held by a process that
died frees itself.

Spend is kept for every key, budget or not, per UTC day (`gw:spend:v1:{date}`,
key name -> micro-dollars). A settlement the store cannot take is queued in
memory and written when the store answers again; each carries an id the store
marks for ten minutes, so one sent again after its reply was lost counts once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from gateway import cost
from gateway.config import ApiKey
from gateway.errors import BudgetExceeded
from gateway.schema import TimeoutSettings
from gateway.store import Store, StoreDown

log = logging.getLogger("gateway")
SPEND_KEPT_S = 8 * 86400  # `gateway spend` and /admin/spend look back a week
RESERVATIONS_KEPT_S = 2 * 86400
SETTLED_MARKER_S = 600  # how long a settlement sent again after a lost reply is recognised

# Frees one reservation and says what it held (0: it was gone already).
_RELEASE = """
local function release(id)
  redis.call('ZREM', KEYS[3], id)
  local held = redis.call('HGET', KEYS[2], id)
  if not held then return 0 end
  redis.call('HDEL', KEYS[2], id)
  redis.call('HINCRBY', KEYS[2], '_total', string.format('%d', -tonumber(held)))
  return tonumber(held)
end
"""

# Drops expired reservations: shared by both scripts that read the reservations.
_EXPIRE = _RELEASE + """
local now = tonumber(redis.call('TIME')[1])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  release(id)
end
local spent = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local reserved = tonumber(redis.call('HGET', KEYS[2], '_total') or '0')
"""

# KEYS: spend hash, reservations hash, expiries zset.
# ARGV: key name, budget, worst case, minimum, reservation id, hold_s, kept_s (all integers),
# and the id of a reservation this one replaces ('' for none), freed whatever the answer.
# Returns {granted (0: refused), spent, reserved (this reservation included)}.
RESERVE = _EXPIRE + """
if ARGV[8] ~= '' then reserved = reserved - release(ARGV[8]) end
local grant = math.min(tonumber(ARGV[3]), tonumber(ARGV[2]) - spent - reserved)
if grant < tonumber(ARGV[4]) or grant < 0 then return {0, spent, reserved} end
local amount = string.format('%d', grant)
redis.call('HSET', KEYS[2], ARGV[5], amount)
redis.call('HINCRBY', KEYS[2], '_total', amount)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[7])
redis.call('EXPIRE', KEYS[3], ARGV[7])
return {grant, spent, reserved + grant}
"""

# ARGV: key name. Returns {spent, reserved}.
BALANCE = _EXPIRE + """
return {spent, reserved}
"""

# KEYS[4]: this settlement's marker. ARGV: key name, reservation id ('' for none), cost,
# kept_s, marker_s. A batch whose reply was lost is sent again; the marker makes the
# second run a no-op, so that spend is never counted twice. Returns nothing: the
# request's remaining budget comes from its reservation.
SETTLE = _RELEASE + """
if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[5]) then return end
if ARGV[2] ~= '' then release(ARGV[2]) end
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
"""


def today() -> date:
    return datetime.now(UTC).date()


def resets_at(day: date) -> str:
    return f"{day + timedelta(days=1):%Y-%m-%d}T00:00:00Z"


def spend_key(day: date) -> str:
    return f"gw:spend:v1:{day:%Y-%m-%d}"


def _keys(key: ApiKey, day: date) -> list[str]:
    return [spend_key(day), f"gw:reservations:v1:{day:%Y-%m-%d}:{key.name}",
            f"gw:reservation-expiry:v1:{day:%Y-%m-%d}:{key.name}"]


def _new_id() -> str:
    return f"{random.getrandbits(128):032x}"  # unique, not secret: the fast generator will do


def _settled_key(settlement_id: str) -> str:
    return f"gw:settled:v1:{settlement_id}"


def budget_microusd(key: ApiKey) -> int | None:
    if key.daily_budget_usd is None:
        return None
    return round(key.daily_budget_usd * 1_000_000)


@dataclass(frozen=True)
class Settlement:
    reservation: Reservation
    charged: int  # micro-dollars
    id: str  # unique: the store applies each settlement once, however often it is sent


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


def hold_s_for(timeouts: TimeoutSettings) -> int:
    """A reservation outlives any request (total_s bounds them all), plus a margin."""
    return math.ceil(timeouts.total_s) + 5


@dataclass
class Budgets:
    store: Store
    hold_s: int  # how long a reservation outlives a process that died holding it
    _queued: list[Settlement] = field(default_factory=list)  # not yet sent
    _writer: asyncio.Task[None] | None = None
    _pending: list[Settlement] = field(default_factory=list)  # the store was down
    _flusher: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        redis = self.store.redis
        self._reserve = redis.register_script(RESERVE)
        self._balance = redis.register_script(BALANCE)
        self._settle = redis.register_script(SETTLE)

    async def reserve(self, key: ApiKey, worst: int, minimum: int,
                      replaces: Reservation | None = None) -> Reservation:
        """Reserve up to `worst` micro-dollars, at least `minimum`, or raise BudgetExceeded.

        `replaces` is freed in the same step, granted or not. Raises StoreDown when the
        store does not answer.
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
        args = [key.name, budget, worst, minimum, rid, self.hold_s, RESERVATIONS_KEPT_S,
                replaces.id if replaces is not None else ""]
        granted, spent, reserved = await self.store.run(
            lambda _: self._reserve(keys=_keys(key, day), args=args))
        seen = Balance(int(spent), int(reserved))
        if not granted:
            raise refusal(key, day, seen, minimum)
        return Reservation(key, day, rid, int(granted), seen)

    def settle(self, reservation: Reservation, charged: int) -> None:
        """Release the reservation and add the real cost, soon: the settlements of one moment
        go to the store together, in one round trip, off the request's path. Until then the
        reservation (never less than the cost) holds the money, so no budget is overspent."""
        self._queued.append(Settlement(reservation, charged, _new_id()))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_queued())

    async def _write_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                await self._apply(batch)
            except StoreDown:  # queued for the store's return, never dropped
                self._pending.extend(batch)
                if self._flusher is None or self._flusher.done():
                    self._flusher = asyncio.create_task(self._flush())

    async def _settle_all(self, redis: Redis, batch: list[Settlement]) -> None:
        async def send() -> None:
            pipe = redis.pipeline(transaction=False)
            for settlement in batch:
                reservation = settlement.reservation
                args = [reservation.key.name, reservation.id, settlement.charged, SPEND_KEPT_S,
                        SETTLED_MARKER_S]
                pipe.evalsha(self._settle.sha, 4, *_keys(reservation.key, reservation.day),
                             _settled_key(settlement.id), *args)
            await pipe.execute()

        try:
            await send()
        except NoScriptError:  # a restarted store forgot the script: load it, send again
            await redis.script_load(SETTLE)
            await send()

    async def drain(self) -> None:
        """Wait for queued settlements to reach the store (at shutdown)."""
        if self._writer is not None:
            await self._writer

    async def _apply(self, batch: list[Settlement]) -> None:
        await self.store.run(lambda redis: self._settle_all(redis, batch))

    async def _flush(self) -> None:
        log.warning("%d spend settlement(s) wait for the store", len(self._pending))
        while self._pending:
            await asyncio.sleep(1)
            while self._pending:
                try:
                    await self._apply(self._pending[:1])
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
        day = day or today()
        spent, reserved = await self.store.run(
            lambda _: self._balance(keys=_keys(key, day), args=[key.name]))
        return Balance(int(spent), int(reserved))

    async def spend_on(self, day: date) -> dict[str, int]:
        """Every key's spend that day, in micro-dollars."""
        raw = await self.store.run(lambda redis: redis.hgetall(spend_key(day)))
        return {name.decode(): int(value) for name, value in raw.items()}
