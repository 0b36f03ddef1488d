"""What lives for the whole process: the configuration, the store, the budgets, the records."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.config import Config
from gateway.cooldown import Cooldowns
from gateway.money.budget import Budgets
from gateway.records.records import Records
from gateway.server.overload import Overload
from gateway.store import Store


@dataclass
class Services:
    """What lives for the whole process; `config` is replaced whole, never edited."""

    config: Config
    http: aiohttp.ClientSession
    cooldowns: Cooldowns
    store: Store
    budgets: Budgets
    records: Records
    overload: Overload
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` apart from the request (kept referenced until done)."""
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task
