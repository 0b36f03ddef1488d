"""The adapters of the configurations that serve, from their building to their closing.

Each configuration gets one adapter per model when it starts to serve. A request
keeps the configuration it arrived with to its end (reload.py), so it asks here
for that configuration's adapters, and the adapters of a configuration replaced
by a reload stay open while a request that arrived on it may still call one: for
its read_body_s and total_s (the deadlines of such a request; its adapters are
taken once its body is in) and a second, from the reload. A model defined the same
in both configurations keeps its adapter; a new adapter for an address already
served shares that address's session (sessions.py), so a reload costs no warm
connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.config import Config
from gateway.errors import NotReady
from gateway.providers import build
from gateway.providers.base import Adapter
from gateway.providers.sessions import Sessions

ByModel = Mapping[str, Adapter]  # router.yaml model name -> its adapter


@dataclass(frozen=True)
class _Retiring:
    config: Config
    adapters: ByModel
    closes_at: float  # loop time


class Adapters:
    """The live configuration's adapters, and those of the configurations retiring."""

    def __init__(self, config: Config):
        self._sessions = Sessions()
        self._config = config
        self._live = self._built(config, {})
        self._retiring: list[_Retiring] = []

    def of(self, config: Config) -> ByModel:
        """The adapters of `config`, the live configuration or one replaced a moment ago."""
        if config is self._config:
            return self._live
        for retiring in self._retiring:
            if retiring.config is config:
                return retiring.adapters
        raise NotReady("the configuration this request arrived with has been replaced and its "
                       "provider connections closed; send the request again")

    def reconfigure(self, new: Config) -> None:
        """`new` serves from now on (call it as `new` replaces the configuration that serves)."""
        old, timeouts = self._config, self._config.settings.timeouts
        kept = {} if new.settings.timeouts.connect_s != timeouts.connect_s else {
            name: adapter for name, adapter in self._live.items()
            if new.models.get(name) == adapter.model}
        built = self._built(new, kept)
        grace_s = timeouts.read_body_s + timeouts.total_s + 1
        closes_at = asyncio.get_running_loop().time() + grace_s
        self._retiring.append(_Retiring(old, self._live, closes_at))
        self._config, self._live = new, built

    def _built(self, config: Config, kept: ByModel) -> dict[str, Adapter]:
        timeouts = config.settings.timeouts
        return {name: kept[name] if name in kept else build.adapter(model, timeouts,
                                                                    self._sessions)
                for name, model in config.models.items()}

    async def close_retired(self, now: float) -> None:
        """Close the adapters of retired configurations that no request can use any more."""
        due = [r for r in self._retiring if r.closes_at <= now]
        if not due:
            return
        self._retiring = [r for r in self._retiring if r.closes_at > now]
        in_use = {id(a) for adapters in self._serving() for a in adapters.values()}
        await _close(a for r in due for a in r.adapters.values() if id(a) not in in_use)

    def _serving(self) -> list[ByModel]:
        return [self._live, *(r.adapters for r in self._retiring)]

    async def close(self) -> None:
        """Every adapter and session: the process is stopping."""
        await _close(a for adapters in self._serving() for a in adapters.values())
        self._retiring = []
        await self._sessions.close()


async def _close(adapters: Iterable[Adapter]) -> None:
    closed: set[int] = set()  # an adapter kept across reloads is in several configurations
    for adapter in adapters:
        if id(adapter) not in closed:
            closed.add(id(adapter))
            await adapter.close()
