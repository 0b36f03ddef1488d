"""Which models are cooling down: `after_failures` failed calls in `window_s` -> skipped `for_s`.

Failures are counted twice: here, in the process, and in the store, where every
process and replica adds its own (fleet.py reports them, through `report`, and
brings back the cooldowns the store decided, into `shared`). A model cools when
either says so: with the store down, each process falls back to its own counts.
Client errors never count; a provider's auth error cools the model at once.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

from gateway.schema import CooldownSettings

# A failed call, told to the other replicas: model, settings, whether it cools at once.
Report = Callable[[str, CooldownSettings, bool], None]


def _unreported(model: str, settings: CooldownSettings, at_once: bool) -> None:
    pass


class Cooldowns:
    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}
        self._until: dict[str, float] = {}
        self.shared: dict[str, float] = {}  # model -> monotonic end of a fleet-wide cooldown
        self.report: Report = _unreported

    def cooling(self, model: str) -> bool:
        now = time.monotonic()
        if (shared := self.shared.get(model)) is not None and now < shared:
            return True
        until = self._until.get(model)
        if until is None:
            return False
        if now >= until:
            del self._until[model]
            return False
        return True

    def failed(self, model: str, settings: CooldownSettings, at_once: bool = False) -> bool:
        """Count a failed call; True when this failure starts a cooldown of this process."""
        self.report(model, settings, at_once)
        now = time.monotonic()
        failures = self._failures.setdefault(model, deque())
        failures.append(now)
        while failures and failures[0] <= now - settings.window_s:
            failures.popleft()
        if (at_once or len(failures) >= settings.after_failures) and not self.cooling(model):
            self._until[model] = now + settings.for_s
            failures.clear()
            return True
        return False

    def forget(self, models: Iterable[str]) -> None:
        """A model redefined by a reload starts afresh: its failures were another setup's."""
        for model in models:
            self._failures.pop(model, None)
            self._until.pop(model, None)
            self.shared.pop(model, None)
