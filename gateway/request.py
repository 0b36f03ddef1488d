"""One request as every layer sees it: what happened to it (the trace)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from gateway.config import Model
from gateway.errors import Attempt, ProviderError


@dataclass
class Trace:
    """What happened to one request, for headers, errors and the usage log."""

    requested: str
    deadline: float  # loop time by which the whole request must be done
    request_id: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[ProviderError] = field(default_factory=list)
    cooled: list[str] = field(default_factory=list)  # models whose cooldown this request began

    def record(self, model: Model, started: float, error: ProviderError | None) -> None:
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        if error is None:
            self.attempts.append(Attempt(model.name, 200, None, latency_ms))
        else:
            self.attempts.append(Attempt(model.name, error.status, error.message, latency_ms))
            self.failures.append(error)

    def remaining_s(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()
