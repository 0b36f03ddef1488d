"""A request's worst-case cost, and the max_tokens a smaller reservation can pay for. Pure.

The worst case is priced on the dearest model of the chain (a fallback may land
there): its counted input, plus `n` times the output the provider may produce,
which is the client's `max_tokens`, else the model's output limit. A model
whose limit nobody knows gets DEFAULT_OUTPUT_LIMIT, sent as `max_tokens`, so
that the provider enforces what the gateway reserved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway import cost
from gateway.config import Model
from gateway.tokens import Counted

DEFAULT_OUTPUT_LIMIT = 8192
MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens")


@dataclass(frozen=True)
class Priced:
    """One model's share of the worst case, in pico-dollars."""

    input_pico: int
    output_pico_per_token: int  # times n: every choice may run to the limit
    output_tokens: int


@dataclass(frozen=True)
class WorstCase:
    per_model: tuple[Priced, ...]
    cap: int | None  # max_tokens the gateway must send for the reservation to hold

    @property
    def microusd(self) -> int:
        return cost.microusd(max((p.input_pico + p.output_pico_per_token * p.output_tokens
                                  for p in self.per_model), default=0))

    @property
    def minimum_microusd(self) -> int:
        """The input and one output token: below that, no answer can be paid for."""
        return cost.microusd(max((p.input_pico + p.output_pico_per_token
                                  for p in self.per_model), default=0))

    def tokens_for(self, granted_microusd: int) -> int:
        """The largest max_tokens that `granted` pays for on every model of the chain."""
        granted = granted_microusd * cost.PICO_PER_MICRO
        fits = [(granted - p.input_pico) // p.output_pico_per_token
                for p in self.per_model if p.output_pico_per_token]
        return min([*fits, *(p.output_tokens for p in self.per_model)])


def client_max_tokens(body: dict[str, Any]) -> int | None:
    given = [body[name] for name in MAX_TOKENS_FIELDS if isinstance(body.get(name), int)]
    return min(given) if given else None


def of_chat(models: tuple[Model, ...], body: dict[str, Any], counted: Counted) -> WorstCase:
    choices = body.get("n") if isinstance(body.get("n"), int) else 1
    asked = client_max_tokens(body)
    cap = asked
    if asked is None and any(m.max_output_tokens is None and m.price.output_per_mtok > 0
                             for m in models):
        cap = DEFAULT_OUTPUT_LIMIT
    per_model = []
    for model in models:
        rates = cost.Rates.of(model.price)
        limits = [v for v in (cap, model.max_output_tokens) if v is not None]
        output = min(limits) if limits else DEFAULT_OUTPUT_LIMIT
        per_model.append(Priced(counted.for_model(model) * rates.input,
                                rates.output * choices, output))
    return WorstCase(tuple(per_model), cap if asked is None else None)


def of_embeddings(models: tuple[Model, ...], counted: Counted) -> WorstCase:
    per_model = tuple(Priced(counted.for_model(m) * cost.Rates.of(m.price).input, 0, 0)
                      for m in models)
    return WorstCase(per_model, None)


def with_max_tokens(body: dict[str, Any], tokens: int) -> dict[str, Any]:
    """The body with its output limit lowered to `tokens`, in the field(s) the client used."""
    named = [name for name in MAX_TOKENS_FIELDS if name in body] or ["max_tokens"]
    return {**body, **dict.fromkeys(named, tokens)}
