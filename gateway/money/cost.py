"""What an answer costs: token usage x price, in integer micro-dollars. Pure.

Prices are USD per million tokens, which is micro-dollars per token. They are
turned into integer pico-dollars per token once, so that the arithmetic is
exact, and a request's cost is rounded up to the next micro-dollar: a budget
errs on the side of the budget.

A provider's usage is read, never trusted: a count that is missing, not a whole
number, negative or absurd is reported as missing, and the gateway counts those
tokens itself. Prompt-cache reads and writes are kept apart from plain input,
since they are priced apart (Anthropic bills a 5-minute write at 1.25x input, a
1-hour write at 2x, a read at 0.1x).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from gateway.config import Price

PICO_PER_MICRO = 1_000_000
MAX_TOKENS_REPORTED = 100_000_000  # no request uses more; beyond it a count is garbage
# Where a price sets no rate for cache writes: Anthropic's, the only provider that bills them.
CACHE_WRITE_X, CACHE_WRITE_1H_X = 1.25, 2.0
# A web search Claude runs (its server tool), on top of the tokens: Anthropic's list price,
# $10 per 1,000 searches, in pico-dollars.
WEB_SEARCH_PICO = 10 * 10**12 // 1000


@dataclass(frozen=True)
class Rates:
    """A model's price in pico-dollars per token."""

    input: int
    output: int
    cached_input: int
    cache_write: int  # 5-minute prompt-cache writes
    cache_write_1h: int


@functools.lru_cache(maxsize=1024)
def rates(price: Price) -> Rates:
    def given(per_mtok: float | None, times_input: float) -> int:
        return _pico(price.input_per_mtok * times_input if per_mtok is None else per_mtok)

    return Rates(input=_pico(price.input_per_mtok), output=_pico(price.output_per_mtok),
                 cached_input=given(price.cached_input_per_mtok, 1),
                 cache_write=given(price.cache_write_per_mtok, CACHE_WRITE_X),
                 cache_write_1h=given(price.cache_write_1h_per_mtok, CACHE_WRITE_1H_X))


def _pico(per_mtok: float) -> int:
    return round(per_mtok * PICO_PER_MICRO)


def microusd(pico: int) -> int:
    return -(-pico // PICO_PER_MICRO)  # rounded up


@dataclass(frozen=True)
class Usage:
    """Token counts as billed. `input_tokens` is the whole prompt (OpenAI's `prompt_tokens`):
    cache reads and writes are parts of it."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0  # read from the provider's prompt cache
    cache_write_tokens: int = 0  # written to it for 5 minutes
    cache_write_1h_tokens: int = 0  # written to it for an hour
    web_searches: int = 0  # Claude's web searches, billed apart


@dataclass(frozen=True)
class Reported:
    """What a provider's usage says; None for a count that is missing or not believable."""

    input_tokens: int | None
    output_tokens: int | None
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    web_searches: int = 0

    def complete(self, input_tokens: int, output_tokens: int) -> Usage:
        """The usage, with counted tokens where the provider's are missing."""
        return Usage(input_tokens if self.input_tokens is None else self.input_tokens,
                     output_tokens if self.output_tokens is None else self.output_tokens,
                     self.cached_tokens, self.cache_write_tokens, self.cache_write_1h_tokens,
                     self.web_searches)


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and (
            0 <= value <= MAX_TOKENS_REPORTED):
        return value
    return None


def usage_of(reply: dict[str, Any]) -> Reported:
    """The token usage an OpenAI-shaped answer reports; cache writes as litellm writes them
    (`prompt_tokens_details.cache_creation_tokens`, split by TTL in
    `cache_creation_token_details`)."""
    usage = reply.get("usage")
    if not isinstance(usage, dict):
        return Reported(None, None)
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    split = details.get("cache_creation_token_details")
    split = split if isinstance(split, dict) else {}
    prompt = _count(usage.get("prompt_tokens"))
    cached = _count(details.get("cached_tokens")) or 0
    written = _count(details.get("cache_creation_tokens")) or 0
    written_1h = min(_count(split.get("ephemeral_1h_input_tokens")) or 0, written)
    if prompt is not None and cached + written > prompt:
        prompt = None  # parts larger than the whole: not believable, counted instead
    if prompt is None:
        cached = written = written_1h = 0
    completion = _count(usage.get("completion_tokens"))
    made = usage.get("completion_tokens_details")
    reasoning = _count(made.get("reasoning_tokens")) if isinstance(made, dict) else None
    if completion is not None and reasoning is not None and reasoning > completion:
        completion = None  # a part larger than the whole: not believable, counted instead
    return Reported(prompt, completion, cached, written - written_1h, written_1h)


def of_usage(rates: Rates, usage: Usage) -> int:
    """Micro-dollars for this usage."""
    parts = usage.cached_tokens + usage.cache_write_tokens + usage.cache_write_1h_tokens
    plain = max(0, usage.input_tokens - parts)
    pico = (plain * rates.input + usage.cached_tokens * rates.cached_input
            + usage.cache_write_tokens * rates.cache_write
            + usage.cache_write_1h_tokens * rates.cache_write_1h
            + usage.output_tokens * rates.output + usage.web_searches * WEB_SEARCH_PICO)
    return microusd(pico)


def usd(micro: int) -> str:
    """Micro-dollars as the USD string of headers and `gateway spend`: 0.001234."""
    return f"{micro / 1_000_000:.6f}"


def dollars(micro: int | None) -> float | None:
    """Micro-dollars as the USD number of JSON bodies, the usage log and metrics: 0.001234."""
    return None if micro is None else round(micro / 1_000_000, 6)
