"""Which models are cooling down: `after_failures` failed calls in `window_s` -> skipped `for_s`.

Kept in the process for now; with the store, every worker and replica will share it.
Client errors never count; a provider's auth error cools the model at once.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

from gateway.schema import CooldownSettings


class Cooldowns:
    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}
        self._until: dict[str, float] = {}

    def cooling(self, model: str) -> bool:
        until = self._until.get(model)
        if until is None:
            return False
        if time.monotonic() >= until:
            del self._until[model]
            return False
        return True

    def failed(self, model: str, settings: CooldownSettings, at_once: bool = False) -> bool:
        """Count a failed call; True when this failure starts a cooldown."""
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
