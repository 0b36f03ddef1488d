"""The ledger: a quota's changes to the store, batched per turn of the event loop, and
kept through an outage.

Every quota (the daily budgets, budget.py; the rate limits, quotas.py; the
cooldowns and loads shared between replicas, fleet.py) keeps its counters in
the store and changes them through one Lua script, the book (book.py), which
takes a whole batch of entries in one command and applies them atomically:
each entry names its operation (`op`), a function of the book. The ledger
carries two kinds of entry:
- a write must land once, sooner or later: it is sent off the request's path,
  and when the store cannot take it, it is queued in memory and replayed once
  a second until the store answers again (so the book's script must apply a
  write once however often it is sent: redis-py also resends a command whose
  reply timed out);
- an ask wants an answer now (a grant, say); when the store cannot answer, the
  asker gets StoreDown. An ask that may have changed the store but whose answer
  nobody will use (its asker was cancelled, or the reply was lost) is taken
  back by the write its `undo` returns.

The entries of one turn of the event loop go to the store together at the next
turn, in one command: a busy gateway pays one round trip for many requests.
Reads see this process's own writes: what is queued is sent first.

A quota with other counters joins this round trip by joining the book: its
operations become further functions of the one script (one command per turn
must stay one; a second script would cost a second round trip, since redis-py
checks a pipeline's scripts with a round trip of its own).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson
from redis.commands.core import AsyncScript

from gateway.store import Store, StoreDown

log = logging.getLogger("gateway")
BATCH_MAX = 200  # writes, and asks, per command: one script must not hold Redis long
Arg = str | int


@dataclass(frozen=True)
class Write:
    op: str  # the book's function that applies it
    keys: tuple[str, ...]
    args: tuple[Arg, ...]


def _keep_nothing(answer: list[int] | None) -> Write | None:
    return None


@dataclass
class Ask:
    op: str
    keys: tuple[str, ...]
    args: tuple[Arg, ...]
    width: int  # numbers in its answer
    # Given its answer (None: unknown, the command failed), the write that takes it back
    # when nobody uses that answer; None: nothing to take back.
    undo: Callable[[list[int] | None], Write | None] = _keep_nothing
    # Set by Ledger.ask; None: nobody waits for it (Ledger.post)
    answer: asyncio.Future[list[int]] | None = field(default=None, init=False)


@dataclass
class Ledger:
    store: Store
    # Lua (book.py). ARGV[1]: the entries, a JSON array of [op, keys, args as strings].
    # Returns the asks' answers one after another (a write answers nothing).
    book: str
    _writes: list[Write] = field(default_factory=list)  # not yet sent
    _asks: list[Ask] = field(default_factory=list)  # not yet sent
    _next: asyncio.Task[None] | None = None  # the batch that takes what is queued
    _sending: set[asyncio.Task[None]] = field(default_factory=set)
    _pending: list[Write] = field(default_factory=list)  # the store was down
    _flusher: asyncio.Task[None] | None = None
    _scripts: dict[str, AsyncScript] = field(default_factory=dict)

    def write(self, write: Write) -> None:
        """Apply `write` soon, off the caller's path; it lands even through an outage."""
        self._writes.append(write)
        self._send_soon()

    def post(self, ask: Ask) -> None:
        """Send an ask nobody waits for with the next batch; lost if the store is down."""
        self._asks.append(ask)
        self._send_soon()

    async def ask(self, ask: Ask) -> list[int]:
        """Its answer from the store, with the next batch. Raises StoreDown."""
        answer: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        ask.answer = answer
        self.post(ask)
        try:
            return await answer
        except asyncio.CancelledError:
            # Answered, then cancelled before this task resumed: the answer goes back.
            if answer.done() and not answer.cancelled() and answer.exception() is None and (
                    undo := ask.undo(answer.result())) is not None:
                self.write(undo)
            raise

    async def read(self, script: str, keys: Sequence[str], args: Sequence[Arg]) -> list[int]:
        """What a read-only script answers (numbers), after this process's writes."""
        await self.flush()
        run = self._script(script)
        raw = await self.store.run(lambda _: run(keys=keys, args=args))
        return [int(n) for n in raw]

    async def counters(self, key: str) -> dict[str, int]:
        """A hash of counters in the store, after this process's writes."""
        await self.flush()
        raw = await self.store.run(lambda redis: redis.hgetall(key))
        return {_text(name): int(value) for name, value in raw.items()}

    def _script(self, source: str) -> AsyncScript:
        # redis-py's Script loads it again into a restarted store that forgot it.
        if source not in self._scripts:
            self._scripts[source] = self.store.redis.register_script(source)
        return self._scripts[source]

    def _send_soon(self) -> None:
        """A batch leaves at the next turn of the loop, with whatever has queued by then."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_task(self._send())
            self._sending.add(self._next)
            self._next.add_done_callback(self._sending.discard)

    async def _send(self) -> None:
        self._next = None
        asks, self._asks = self._asks[:BATCH_MAX], self._asks[BATCH_MAX:]
        writes, self._writes = self._writes[:BATCH_MAX], self._writes[BATCH_MAX:]
        if self._asks or self._writes:  # the rest goes in the next batch, at once
            self._send_soon()
        if not asks and not writes:
            return
        try:
            answers = await self._apply(writes, asks)
        except StoreDown as exc:
            self._keep(writes + self._undo_unknown(asks))
            for ask in asks:
                if ask.answer is not None and not ask.answer.done():
                    ask.answer.set_exception(StoreDown(str(exc)))
            return
        except asyncio.CancelledError:  # shutdown: nobody waits forever
            self._keep(writes + self._undo_unknown(asks))
            for ask in asks:
                if ask.answer is not None:
                    ask.answer.cancel()
            raise
        at = 0
        for ask in asks:
            answer, at = answers[at:at + ask.width], at + ask.width
            if ask.answer is not None and not ask.answer.done():
                ask.answer.set_result(answer)
            elif (undo := ask.undo(answer)) is not None:  # its asker left while it was sent
                self.write(undo)

    @staticmethod
    def _undo_unknown(asks: list[Ask]) -> list[Write]:
        """An ask whose command failed may have been applied all the same (the reply was
        lost): it is taken back when the store answers again."""
        return [undo for ask in asks if (undo := ask.undo(None)) is not None]

    def _keep(self, writes: list[Write]) -> None:
        """Writes the store did not take wait for its return; none is dropped."""
        if not writes:
            return
        self._pending.extend(writes)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _apply(self, writes: list[Write], asks: list[Ask]) -> list[int]:
        entries: list[Write | Ask] = [*writes, *asks]
        batch = orjson.dumps([(e.op, e.keys, [str(a) for a in e.args]) for e in entries])
        run = self._script(self.book)
        raw = await self.store.run(lambda _: run(keys=(), args=(batch,)))
        return [int(n) for n in raw]

    async def flush(self) -> None:
        """Send what is queued now, and wait for every batch on its way (for reads, and at
        shutdown)."""
        if self._writes or self._asks:
            self._send_soon()
        if self._sending:
            await asyncio.wait(set(self._sending))

    async def _flush(self) -> None:
        log.warning("%d write(s) (settlements, usage) wait for the store", len(self._pending))
        while self._pending:
            await asyncio.sleep(1)
            while self._pending:
                try:
                    await self._apply(self._pending[:1], [])
                except StoreDown:
                    break
                self._pending.pop(0)
        log.warning("queued writes written to the store")

    def close(self) -> None:
        if unwritten := len(self._pending) + len(self._writes):
            log.error("%d write(s) (settlements, usage) could not be written: the store did "
                      "not answer before shutdown", unwritten)
        if self._flusher is not None:
            self._flusher.cancel()


def _text(name: bytes | str) -> str:
    return name.decode() if isinstance(name, bytes) else name
