"""What this process shares with the others through the store: failures, cooldowns, load.

Every failed call is written to the store (fleet_scripts.py), where the
failures of all processes and replicas add up to one cooldown; twice a second
each process syncs: it tells the store its requests in flight per model and
brings back the cooldowns in force and the other processes' requests in flight
(for least-busy groups). Both travel on the ledger's batches, off the request's
path. The store down, the last view ages out and each process goes by its own
counts (cooldown.py): a shared cooldown must never become an outage.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.cooldown import Cooldowns
from gateway.fleet_scripts import BUSY_KEY, COOLING_KEY, failures_key
from gateway.money.ledger import Ask, Ledger
from gateway.schema import CooldownSettings
from gateway.store import StoreDown

log = logging.getLogger("gateway")
SYNC_S = 0.5
LEASE_S = 5.0  # a process that has not synced for this long counts no requests in flight


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


@dataclass
class Fleet:
    ledger: Ledger
    cooldowns: Cooldowns
    models: Callable[[], list[str]]  # the configuration's model names, now
    busy: Callable[[], dict[str, int]]  # this process's requests in flight per model
    others: Callable[[dict[str, int]], None]  # told the other processes' in flight per model
    process: str = field(default_factory=lambda: f"{random.getrandbits(64):016x}")

    def __post_init__(self) -> None:
        self.cooldowns.report = self.failed

    def failed(self, model: str, settings: CooldownSettings, at_once: bool) -> None:
        failure = f"{self.process}:{random.getrandbits(64):016x}"
        self.ledger.post(Ask("fail", (failures_key(model), COOLING_KEY),
                             (model, failure, settings.after_failures, _ms(settings.window_s),
                              _ms(settings.for_s), "1" if at_once else ""), 0))

    def forget(self, models: list[str]) -> None:
        """Models a reload redefined start afresh on every replica."""
        for model in models:
            self.ledger.post(Ask("forget", (failures_key(model), COOLING_KEY), (model,), 0))

    async def sync(self) -> None:
        names = self.models()
        busy = self.busy()
        args: list[str | int] = [self.process, _ms(LEASE_S)]
        for name in names:
            args += (name, busy.get(name, 0))
        answer = await self.ledger.ask(Ask("sync", (COOLING_KEY, BUSY_KEY), tuple(args),
                                           2 * len(names)))
        now = time.monotonic()
        shared: dict[str, float] = {}
        others: dict[str, int] = {}
        for i, name in enumerate(names):
            left_ms, theirs = answer[2 * i], answer[2 * i + 1]
            if left_ms > 0:
                shared[name] = now + left_ms / 1000
            if theirs:
                others[name] = theirs
        for name in shared.keys() - self.cooldowns.shared.keys():
            log.warning("model %s cools down for %.1fs: the replicas' failures add up to a "
                        "cooldown", name, shared[name] - now)
        self.cooldowns.shared = shared
        self.others(others)

    async def run(self) -> None:
        """Sync twice a second until cancelled."""
        while True:
            try:
                await self.sync()
            except StoreDown:
                self.others({})  # the other processes' load is not guessed
            await asyncio.sleep(SYNC_S)
