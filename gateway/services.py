"""What lives for the whole process: the configuration, the store, the budgets, the records."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from gateway.balance import Balancer
from gateway.config import Config
from gateway.cooldown import Cooldowns
from gateway.fleet import Fleet
from gateway.money.budget import Budgets
from gateway.money.quotas import Quotas
from gateway.providers.adapters import Adapters
from gateway.records.records import Records
from gateway.server.overload import Overload
from gateway.store import Store


@dataclass
class Services:
    """What lives for the whole process; `config` is replaced whole, never edited.

    `adapters` holds each configuration's provider adapters, by configuration: a
    request calls those of the configuration it arrived with (`adapters.of(config)`).
    They are not a field of Config, which stays pure (parsed off the event loop, with
    no I/O), while adapters own sessions made on the loop.
    """

    config: Config
    adapters: Adapters
    cooldowns: Cooldowns
    store: Store
    budgets: Budgets
    quotas: Quotas
    fleet: Fleet
    records: Records
    overload: Overload
    balancer: Balancer = field(default_factory=Balancer)  # groups' in-flight counts, latencies
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` apart from the request (kept referenced until done)."""
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def reconfigure(self, new: Config) -> None:
        """`new` serves the requests that arrive from now on; each resource follows it in its
        own way. Requests in flight keep the configuration they arrived with."""
        old = self.config
        # The new adapters (those of models that changed; the others are kept) serve from
        # now on; the old ones close once no request can use them.
        self.adapters.reconfigure(new)
        self.budgets.reconfigure(new.settings.timeouts)
        redefined = [name for name, model in old.models.items()
                     if new.models.get(name) != model]
        self.cooldowns.forget(redefined)
        self.fleet.forget(redefined)
        self.config = new
        await self.records.reconfigure(old, new)
