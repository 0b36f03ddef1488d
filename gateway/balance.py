"""Balanced groups: the order, per request, in which a tier's groups offer their models.

A tier's chain as configured (Config.tiers) is what the cache key follows; the
order a request tries its models in is drawn here, group by group, each by its
strategy:

- weighted: a weighted random draw first, then the others in weighted random
  order without replacement;
- least-busy: fewest requests in flight first, this process's count plus the
  last snapshot of other replicas' (`others`); ties in configured order;
- latency: lowest recent latency first (an EWMA of the time to a whole answer
  or a stream's first token); a model with no measurement yet goes first.

The Balancer holds this process's counts and latencies; it forgets nothing on a
reload (a model's name is what is counted).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.config import Config, Group, Model

EWMA_ALPHA = 0.3  # the weight of the newest latency: a few answers move it


@dataclass
class Balancer:
    rng: random.Random = field(default_factory=random.Random)
    busy: dict[str, int] = field(default_factory=dict)  # this process's requests in flight
    latency_s: dict[str, float] = field(default_factory=dict)  # EWMA, per model
    _others: dict[str, int] = field(default_factory=dict)

    def others(self, busy: dict[str, int]) -> None:
        """Other replicas' requests in flight per model, as last learned; least-busy adds
        them to this process's count."""
        self._others = dict(busy)

    def in_flight(self, model: str) -> int:
        return self.busy.get(model, 0) + self._others.get(model, 0)

    def started(self, model: str) -> Callable[[], None]:
        """A call of `model` begins; the function returned ends it (once; more calls do
        nothing)."""
        self.busy[model] = self.busy.get(model, 0) + 1
        ended = False

        def end() -> None:
            nonlocal ended
            if not ended:
                ended = True
                left = self.busy.get(model, 0) - 1
                if left > 0:
                    self.busy[model] = left
                else:
                    self.busy.pop(model, None)

        return end

    def answered(self, model: str, elapsed_s: float) -> None:
        """`model` answered (or sent a stream's first token) after `elapsed_s`."""
        before = self.latency_s.get(model)
        self.latency_s[model] = (elapsed_s if before is None
                                 else EWMA_ALPHA * elapsed_s + (1 - EWMA_ALPHA) * before)

    def order(self, config: Config, name: str) -> tuple[Model, ...]:
        """The models behind tier or model `name`, in the order this request tries them."""
        steps = config.groups.get(name)
        if steps is None:
            return config.chain(name) or ()
        names: list[str] = []
        for step in steps:
            names += [step] if isinstance(step, str) else self._ordered(step)
        return tuple(config.models[n] for n in names)

    def _ordered(self, group: Group) -> list[str]:
        members = list(group.members)
        if group.balance == "least-busy":
            return sorted(members, key=self.in_flight)  # stable: ties keep configured order
        if group.balance == "latency":
            unmeasured = [m for m in members if m not in self.latency_s]
            measured = sorted((m for m in members if m in self.latency_s),
                              key=self.latency_s.__getitem__)
            return unmeasured + measured
        drawn: list[str] = []
        while members:
            pick = self.rng.choices(members, weights=[group.weight(m) for m in members])[0]
            drawn.append(pick)
            members.remove(pick)
        return drawn
