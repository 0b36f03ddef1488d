"""A request's money: its worst case reserved before the call, its real cost settled after.

The glue between one request and budget.py: count the input, price the worst
case on the chain, reserve it (or refuse, or lower max_tokens to what is
left), then charge the answer's usage, or counted tokens when a provider sent
none (a stream cut short, a client that left).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway import budget, cost, tokens, worst_case
from gateway.budget import Budgets, Reservation
from gateway.config import ApiKey, Config, Model
from gateway.errors import NotReady
from gateway.store import StoreDown

Kind = Literal["chat", "embeddings"]
COUNT_INLINE_CHARS = 32_768  # counting more text than this moves off the event loop


@dataclass
class Metered:
    reservation: Reservation
    kind: Kind
    body: dict[str, Any]  # what is sent: max_tokens may have been lowered
    counted: tokens.Counted | None = None
    shortened: bool = False  # the gateway lowered max_tokens
    headers: dict[str, str] = field(default_factory=dict)


async def _count(body: dict[str, Any], kind: Kind) -> tokens.Counted:
    tally = tokens.chat_tally(body) if kind == "chat" else tokens.embeddings_tally(body)
    if tally.size < COUNT_INLINE_CHARS:
        return tally.counted()
    return await asyncio.to_thread(tally.counted)


async def reserve(budgets: Budgets, config: Config, key: ApiKey, models: tuple[Model, ...],
                  body: dict[str, Any], kind: Kind) -> Metered:
    if budget.budget_microusd(key) is None:
        return Metered(Reservation(key, budget.today(), "", 0), kind, body)
    counted = await _count(body, kind)
    if kind == "chat":
        worst = worst_case.of_chat(models, body, counted)
    else:
        worst = worst_case.of_embeddings(models, counted)
    try:
        reservation = await budgets.reserve(key, worst.microusd, worst.minimum_microusd)
    except StoreDown:
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
        counted = metered.counted or await _count(metered.body, metered.kind)
        usage = cost.Usage(counted.for_model(model), tokens.count_output(answer, model))
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
