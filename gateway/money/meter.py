"""A request's money: reserved before the call, watched while it streams, settled after.

The glue between one request and budget.py: bound the input, price what is
reserved up front on the chain (worst_case.py), reserve it (or count the input
exactly when that does not fit, then refuse, or lower an unseen model's limit
to what is left), send each model the limit that was paid for, then charge the
answer's usage, with counted tokens wherever a provider's count is missing or
not believable (a stream cut short, a client that left, a broken provider).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from gateway.config import ApiKey, Config, Model
from gateway.errors import BudgetExceeded, NotReady
from gateway.money import budget, cost, tokens, worst_case
from gateway.money.budget import Budgets, Reservation
from gateway.request import GatewayRequest
from gateway.store import StoreDown

COUNT_INLINE_CHARS = 32_768  # counting more text than this moves off the event loop
WAIT_FIRST_S, WAIT_MAX_S = 0.02, 0.5  # pauses while waiting for other requests' holds
WAIT_LAST_S = 0.25  # the last attempt's own time, once the wait is over
PER_CHOICE = 8  # output tokens a choice may bill that it does not show (its end of turn)
CHARS_PER_TOKEN = 3  # the crash tally's estimate for ASCII text: high for prose
T = TypeVar("T")


@dataclass
class Metered:
    reservation: Reservation
    request: GatewayRequest  # as the client sent it
    worst: worst_case.WorstCase | None = None  # None: not metered
    counted: tokens.Counted | None = None  # the tokenizer's count, when it was needed
    bound: tokens.Counted | None = None  # the input's byte bound
    limits: dict[str, int] = field(default_factory=dict)  # model name -> output limit sent
    # "clamped": a limit was lowered to what the budget pays; "cut": the answer was ended
    # where the budget was. Such an answer is not cached if it ended at that limit.
    limited: Literal["clamped", "cut"] | None = None
    on_store_error: str = "refuse"
    # The output a watched stream has sent so far, in tokens (money/watch.py sets it).
    seen_output: Callable[[], int] | None = None
    wait_s: float = 0  # settings.budgets.wait_s
    headers: dict[str, str] = field(default_factory=dict)
    # The model whose input a stream's first tally, written with its reservation, priced.
    tallied: str | None = None

    def body_for(self, model: Model) -> dict[str, Any]:
        """The body as this model is sent it: the limit paid for, in the field it reads."""
        return self.request.form.with_limit(self.request.body, model,
                                            self.limits.get(model.name))

    def input_estimate(self, model: Model) -> int:
        """Input tokens as the tally guesses them: the count, else CHARS_PER_TOKEN bytes a
        token."""
        return _input_estimate(model, self.counted, self.bound)

    def output_allowed(self, model: Model, answer: dict[str, Any], seen: int = 0) -> int | None:
        """The most output this answer may be charged for, if metered: n x the limit the
        model was sent, and, for a model that shows all it writes, the answer's own bytes
        (no token is shorter than a byte; PER_CHOICE more a choice for its ending), or, cut
        short, what the watch saw sent (`seen`: a tool call cut mid-arguments shows as {})."""
        priced = self.worst.priced(model) if self.worst is not None else None
        limit = self.limits.get(model.name)
        if priced is None or limit is None:
            return None
        allowed = priced.choices * limit
        if priced.watched:
            form = self.request.form
            shown = form.output_tally(answer).bound()
            allowed = min(allowed, max(seen, shown.text_tokens + shown.fixed_tokens)
                          + PER_CHOICE * max(1, form.choices(answer)))
        return allowed

    @property
    def needs_watching(self) -> bool:
        """Whether some answer may outgrow the reservation, so that the provider must be
        streamed from and watched even for a client that did not ask for a stream."""
        return (bool(self.reservation.id) and self.worst is not None
                and not self.worst.covered(self.reservation.granted))


def _input_estimate(model: Model, counted: tokens.Counted | None,
                    bound: tokens.Counted | None) -> int:
    if counted is not None:
        return counted.for_model(model)
    if bound is None:
        return 0
    return -(-bound.text_bytes // CHARS_PER_TOKEN) + bound.fixed_tokens


def opening_tally(model: Model, request: GatewayRequest, counted: tokens.Counted | None,
                  bound: tokens.Counted | None) -> int:
    """What a stream has used when it opens, as the crash tally counts it (micro-dollars):
    its input, and the web searches reserved for it."""
    searches = request.web_searches if worst_case.searches_on(model, request) else 0
    return cost.microusd(_input_estimate(model, counted, bound) * cost.rates(model.price).input
                         + searches * cost.WEB_SEARCH_PICO)


async def counted_input(metered: Metered) -> tokens.Counted:
    """The input as the tokenizer counts it (counted now if it was not yet)."""
    if metered.counted is None:
        metered.counted = await exact(metered.request.form.input_tally(metered.request.body))
    return metered.counted


async def exact(tally: tokens.Tally) -> tokens.Counted:
    """The tokenizer's count: off the event loop for long text, or to load the tokenizer."""
    if tally.size < COUNT_INLINE_CHARS and tokens.loaded():
        return tally.counted()
    return await asyncio.to_thread(tally.counted)


def _worst(config: Config, key: ApiKey, models: tuple[Model, ...], request: GatewayRequest,
           counted: tokens.Counted) -> worst_case.WorstCase:
    if request.kind != "embeddings":
        return worst_case.of_chat(models, request, counted,
                                  config.settings.budgets.output_slice_tokens,
                                  budget.budget_microusd(key) or 0)
    return worst_case.of_embeddings(models, counted)


async def waiting(wait_s: float, attempt: Callable[[bool], Awaitable[T]]) -> T:
    """`attempt(patient)`, again after a pause while it raises Blocked (what blocks it is
    held by requests in flight, and their holds go as they end), for up to `wait_s`; the
    last attempt is not patient: it takes what is left, or is refused."""
    loop = asyncio.get_running_loop()
    until, pause = loop.time() + wait_s, WAIT_FIRST_S
    while True:
        try:  # a store that stalls must not stretch the wait (the writes are idempotent)
            async with asyncio.timeout(max(until - loop.time(), WAIT_LAST_S)):
                return await attempt(loop.time() + pause < until)
        except budget.Blocked:
            await asyncio.sleep(pause)
            pause = min(pause * 2, WAIT_MAX_S)
        except TimeoutError:
            raise StoreDown(f"the store did not answer within {wait_s:g} s") from None


async def reserve(budgets: Budgets, config: Config, key: ApiKey, models: tuple[Model, ...],
                  request: GatewayRequest) -> Metered:
    on_store_error = config.settings.budgets.on_store_error
    if budget.budget_microusd(key) is None:
        return Metered(Reservation(key, budget.today(), "", 0), request)
    tally = request.form.input_tally(request.body)
    counted = None
    bound = tally.bound()
    # Priced on the byte bound first: most requests fit and are never tokenized.
    worst = _worst(config, key, models, request, bound)
    reservation: Reservation | None = None
    # A stream's first tally goes with its reservation (one store command, not two): the
    # input of the model it will most likely be answered by, the first (money/watch.py).
    first = models[0] if request.stream and models else None
    try:
        with contextlib.suppress(BudgetExceeded):
            reservation = await budgets.reserve(
                key, worst.microusd, worst.minimum_microusd,
                used=opening_tally(first, request, None, bound) if first else None)
        if reservation is None or reservation.granted < worst.microusd:
            # The bound does not fit: count, and ask for what the request needs instead.
            counted = await exact(tally)
            worst = _worst(config, key, models, request, counted)
            replaced = [reservation]  # freed by the first attempt
            used = opening_tally(first, request, counted, bound) if first else None

            async def attempt(patient: bool) -> Reservation:
                return await budgets.reserve(key, worst.microusd, worst.minimum_microusd,
                                             replaced.pop() if replaced else None, patient,
                                             used)

            reservation = await waiting(config.settings.budgets.wait_s, attempt)
    except StoreDown:
        if reservation is not None:  # the bound's reservation, when the store answers again
            budgets.settle(reservation, 0)
        if on_store_error == "refuse":
            raise NotReady(f"the budget of key {key.name} cannot be checked: the store does "
                           "not answer; budgeted requests are refused until it does "
                           "(settings.budgets.on_store_error: refuse)") from None
        return Metered(Reservation(key, budget.today(), "", 0), request, counted=counted)
    metered = Metered(reservation, request, worst, counted, bound,
                      on_store_error=on_store_error, wait_s=config.settings.budgets.wait_s,
                      tallied=first.name if first else None)
    if request.kind != "embeddings":
        metered.limits = worst.limits(reservation.granted)
        if (clamped := worst.clamped(reservation.granted)) is not None:
            metered.limited = "clamped"
            metered.headers["x-gateway-max-tokens-clamped"] = str(clamped)
    return metered


async def settle(budgets: Budgets, metered: Metered, model: Model, answer: dict[str, Any],
                 whole: bool = True) -> tuple[cost.Usage, int]:
    """Charge the answer; sets the cost and remaining-budget headers. The usage and cost.

    An answer cut short (`whole` False: the client or the provider left mid-stream, or the
    budget ended it) has no final usage: what a provider said before its end (Anthropic's
    message_start, a running count) is not what it made, so the output is counted, and the
    higher of the two is charged."""
    form = metered.request.form
    reported = form.reported(answer)
    input_tokens = output_tokens = 0
    if reported.input_tokens is None:
        input_tokens = (await counted_input(metered)).for_model(model)
    seen = 0
    if reported.output_tokens is None or not whole:
        # Cut short: also what was sent, as the watch counted it (an answer cut mid tool
        # call holds arguments that are not yet JSON, which the count of the answer misses).
        if not whole and metered.seen_output is not None:
            seen = metered.seen_output()
        counted = (await exact(form.output_tally(answer))).for_model(model)
        output_tokens = max(counted, reported.output_tokens or 0, seen)
        reported = dataclasses.replace(reported, output_tokens=None)
    usage = reported.complete(input_tokens, output_tokens)
    allowed = metered.output_allowed(model, answer, seen)
    if allowed is not None and usage.output_tokens > allowed:
        # Past its limit, or past what it showed, a provider writes at its own expense.
        usage = dataclasses.replace(usage, output_tokens=allowed)
        form.set_usage(answer, usage)
    elif reported.input_tokens is None or reported.output_tokens is None:
        form.set_usage(answer, usage)  # what the client reads is what was charged
    charged = cost.of_usage(cost.rates(model.price), usage)
    priced = metered.worst.priced(model) if metered.worst is not None else None
    if not whole and priced is not None and priced.watched and metered.reservation.id:
        # The watch sent no output the reservation did not pay for, counting it piece by
        # piece; counted whole here it can come out a token or two higher (the pieces'
        # separators), which must not take a budget past its end.
        charged = min(charged, metered.reservation.granted)
    budgets.settle(metered.reservation, charged)
    metered.headers["x-gateway-cost-usd"] = cost.usd(charged)
    if (left := metered.reservation.remaining_after(charged)) is not None:
        metered.headers["x-gateway-budget-remaining-usd"] = cost.usd(left)
    return usage, charged


def release(budgets: Budgets, metered: Metered) -> None:
    """The request failed before any answer: nothing to charge, the reservation goes."""
    if metered.reservation.id:
        budgets.settle(metered.reservation, 0)
