"""A request's money: its worst case reserved before the call, its real cost settled after.

The glue between one request and budget.py: bound the input, price the worst
case on the chain, reserve it (or count the input exactly when that does not
fit, then refuse, or lower max_tokens to what is left), then charge the
answer's usage, or counted tokens when a provider sent none (a stream cut
short, a client that left).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway import budget, cost, tokens, worst_case
from gateway.budget import Budgets, Reservation
from gateway.config import ApiKey, Config, Model
from gateway.errors import BudgetExceeded, NotReady
from gateway.store import StoreDown

Kind = Literal["chat", "embeddings"]
COUNT_INLINE_CHARS = 32_768  # counting more text than this moves off the event loop


@dataclass
class Metered:
    reservation: Reservation
    kind: Kind
    body: dict[str, Any]  # what is sent: max_tokens may have been lowered
    counted: tokens.Counted | None = None  # the tokenizer's count, when it was needed
    shortened: bool = False  # the gateway lowered max_tokens
    headers: dict[str, str] = field(default_factory=dict)


def _tally(body: dict[str, Any], kind: Kind) -> tokens.Tally:
    return tokens.chat_tally(body) if kind == "chat" else tokens.embeddings_tally(body)


async def _exact(tally: tokens.Tally) -> tokens.Counted:
    """The tokenizer's count: off the event loop for long text, or to load the tokenizer."""
    if tally.size < COUNT_INLINE_CHARS and tokens.loaded():
        return tally.counted()
    return await asyncio.to_thread(tally.counted)


def _worst(models: tuple[Model, ...], body: dict[str, Any], kind: Kind,
           counted: tokens.Counted) -> worst_case.WorstCase:
    if kind == "chat":
        return worst_case.of_chat(models, body, counted)
    return worst_case.of_embeddings(models, counted)


async def reserve(budgets: Budgets, config: Config, key: ApiKey, models: tuple[Model, ...],
                  body: dict[str, Any], kind: Kind) -> Metered:
    if budget.budget_microusd(key) is None:
        return Metered(Reservation(key, budget.today(), "", 0), kind, body)
    tally = _tally(body, kind)
    counted = None
    # Priced on the byte bound first: most requests fit and are never tokenized.
    worst = _worst(models, body, kind, tally.bound())
    reservation: Reservation | None = None
    try:
        with contextlib.suppress(BudgetExceeded):
            reservation = await budgets.reserve(key, worst.microusd, worst.minimum_microusd)
        if reservation is None or reservation.granted < worst.microusd:
            # The bound does not fit: count, and ask for what the request needs instead.
            counted = await _exact(tally)
            worst = _worst(models, body, kind, counted)
            reservation = await budgets.reserve(key, worst.microusd, worst.minimum_microusd,
                                                replaces=reservation)
    except StoreDown:
        if reservation is not None:  # the bound's reservation, when the store answers again
            budgets.settle(reservation, 0)
        if config.settings.budgets.on_store_error == "refuse":
            raise NotReady(f"the budget of key {key.name} cannot be checked: the store does "
                           "not answer; budgeted requests are refused until it does "
                           "(settings.budgets.on_store_error: refuse)") from None
        return Metered(Reservation(key, budget.today(), "", 0), kind, body, counted)
    metered = Metered(reservation, kind, body, counted)
    if reservation.granted < worst.microusd:
        max_tokens = worst.tokens_for(reservation.granted)
        metered.body = worst_case.with_max_tokens(body, max_tokens)
        metered.shortened = True
        metered.headers["x-gateway-max-tokens-clamped"] = str(max_tokens)
    elif worst.cap is not None:
        metered.body = worst_case.with_max_tokens(body, worst.cap)
        metered.shortened = True
    return metered


async def settle(budgets: Budgets, metered: Metered, model: Model,
                 answer: dict[str, Any]) -> tuple[cost.Usage, int]:
    """Charge the answer; sets the cost and remaining-budget headers. The usage and cost."""
    usage = cost.usage_of(answer)
    if usage is None:
        counted = metered.counted or await _exact(_tally(metered.body, metered.kind))
        output = await _exact(tokens.output_tally(answer))
        usage = cost.Usage(counted.for_model(model), output.for_model(model))
    charged = cost.of_usage(cost.Rates.of(model.price), usage)
    budgets.settle(metered.reservation, charged)
    metered.headers["x-gateway-cost-usd"] = cost.usd(charged)
    if (left := metered.reservation.remaining_after(charged)) is not None:
        metered.headers["x-gateway-budget-remaining-usd"] = cost.usd(left)
    return usage, charged


def release(budgets: Budgets, metered: Metered) -> None:
    """The request failed before any answer: nothing to charge, the reservation goes."""
    if metered.reservation.id:
        budgets.settle(metered.reservation, 0)
