"""What an answer costs: token usage x price, in integer micro-dollars. Pure.

Prices are USD per million tokens, which is micro-dollars per token. They are
turned into integer pico-dollars per token once, so that the arithmetic is
exact, and a request's cost is rounded up to the next micro-dollar: a budget
errs on the side of the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.config import Price

PICO_PER_MICRO = 1_000_000


@dataclass(frozen=True)
class Rates:
    """A model's price in pico-dollars per token."""

    input: int
    output: int
    cached_input: int

    @classmethod
    def of(cls, price: Price) -> Rates:
        cached = price.cached_input_per_mtok
        return cls(input=_pico(price.input_per_mtok), output=_pico(price.output_per_mtok),
                   cached_input=_pico(price.input_per_mtok if cached is None else cached))


def _pico(per_mtok: float) -> int:
    return round(per_mtok * PICO_PER_MICRO)


def microusd(pico: int) -> int:
    return -(-pico // PICO_PER_MICRO)  # rounded up


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0


def usage_of(reply: dict[str, Any]) -> Usage | None:
    """The token usage an OpenAI-shaped answer reports, or None if it reports none."""
    usage = reply.get("usage")
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details") or {}
    return Usage(input_tokens=int(usage.get("prompt_tokens") or 0),
                 output_tokens=int(usage.get("completion_tokens") or 0),
                 cached_tokens=int(details.get("cached_tokens") or 0))


def of_usage(rates: Rates, usage: Usage) -> int:
    """Micro-dollars for this usage; cached tokens are part of the input tokens."""
    cached = min(usage.cached_tokens, usage.input_tokens)
    pico = ((usage.input_tokens - cached) * rates.input + cached * rates.cached_input
            + usage.output_tokens * rates.output)
    return microusd(pico)


def usd(micro: int) -> str:
    """Micro-dollars as the USD string of headers and `gateway spend`: 0.001234."""
    return f"{micro / 1_000_000:.6f}"


def dollars(micro: int | None) -> float | None:
    """Micro-dollars as the USD number of JSON bodies, the usage log and metrics: 0.001234."""
    return None if micro is None else round(micro / 1_000_000, 6)
