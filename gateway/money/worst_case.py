"""What a request may cost on its chain, what is reserved up front, and the limit each
model is sent. Pure.

Per model of the chain (a fallback may land on any): the counted input, plus
`n` times the output limit the provider is sent, which is the client's
(output_limit.asked), else the model's own, else DEFAULT_OUTPUT_LIMIT.

How much of that output is reserved before the call depends on whether the
gateway sees the output as it is made:

- **Watched** (most models): a worst case up to SHARE of the key's daily budget
  is reserved whole; a larger one only up to a slice of output: at most
  `settings.budgets.output_slice_tokens`, and at most SHARE of the budget. The
  answer is streamed from the provider (internally, for a client that did not
  ask for a stream), and the reservation grows by a slice each time the output
  nears it (watch.py); when the budget cannot pay for more, the gateway ends
  the answer there with `finish_reason: "length"`. So a long limit
  does not hold a budget hostage, and no answer is cut that the budget can pay for.
- **Unseen** (models that think in tokens they bill but do not stream: OpenAI's
  o-series and gpt-5, Claude with `thinking` on, and any model litellm marks as
  reasoning): the whole limit is reserved up front; when it does not fit, the
  limit sent is lowered to what the reservation pays for (the clamp).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.config import Model
from gateway.money import cost
from gateway.money.tokens import Counted
from gateway.request import GatewayRequest

DEFAULT_OUTPUT_LIMIT = 8192
SHARE = 0.01  # of a daily budget: a worst case this small is reserved whole; else a slice


@dataclass(frozen=True)
class Priced:
    """One model's share of the worst case; money in pico-dollars."""

    model: Model
    input_pico: int
    output_pico: int  # per output token
    choices: int
    limit: int  # output tokens per choice the provider is sent
    watched: bool  # the output is seen as it is made: reserve a slice, then extend
    share_pico: int  # SHARE of the budget: a worst case up to it is reserved whole
    slice_pico: int  # output reserved up front, and added at a time, otherwise
    one_token: int = 1  # what one output token is counted as, for this model
    input_rate: int = 0  # per input token, as reserved (above the input price: cache writes)
    least: int = 1  # the lowest output limit the provider takes (OpenAI's Responses API: 16)

    @property
    def full_pico(self) -> int:
        return self.input_pico + self.output_pico * self.choices * self.limit

    @property
    def upfront_pico(self) -> int:
        output = self.output_pico * self.choices * self.limit
        if self.watched and self.full_pico > self.share_pico:
            output = min(output, self.slice_pico)
        return self.input_pico + output

    @property
    def minimum_pico(self) -> int:
        """The input and one output token, as the gateway counts one (two, for a model
        whose tokens are counted at 1.35x OpenAI's)."""
        return self.input_pico + self.output_pico * self.choices * max(self.one_token,
                                                                        self.least)

    def limit_for(self, granted_pico: int) -> int:
        """The output limit to send when `granted` is reserved: a watched model gets its
        whole limit (the gateway cuts it at the budget); an unseen one what is paid for."""
        if self.watched or not self.output_pico:
            return self.limit
        paid = (granted_pico - self.input_pico) // (self.output_pico * self.choices)
        return max(self.least, min(self.limit, paid))


@dataclass(frozen=True)
class WorstCase:
    per_model: tuple[Priced, ...]

    @property
    def microusd(self) -> int:
        """What is reserved before the call."""
        return cost.microusd(max((p.upfront_pico for p in self.per_model), default=0))

    @property
    def minimum_microusd(self) -> int:
        """The input and one output token on the cheapest model of the chain: below that, no
        answer can be paid for."""
        return cost.microusd(min((p.minimum_pico for p in self.per_model), default=0))

    def affords(self, model: Model, granted_microusd: int) -> bool:
        """Whether the grant pays for this model's input and one output token: a model it
        does not is left out of the chain, rather than the request refused."""
        priced = self.priced(model)
        granted = granted_microusd * cost.PICO_PER_MICRO
        return priced is None or priced.minimum_pico <= granted

    def priced(self, model: Model) -> Priced | None:
        return next((p for p in self.per_model if p.model is model), None)

    def limits(self, granted_microusd: int) -> dict[str, int]:
        """Per model name, the output limit it is sent."""
        granted = granted_microusd * cost.PICO_PER_MICRO
        return {p.model.name: p.limit_for(granted) for p in self.per_model}

    def clamped(self, granted_microusd: int) -> int | None:
        """The lowest limit sent below its model's own, when the grant made one lower."""
        granted = granted_microusd * cost.PICO_PER_MICRO
        lowered = [p.limit_for(granted) for p in self.per_model
                   if p.limit_for(granted) < p.limit]
        return min(lowered) if lowered else None

    def covered(self, granted_microusd: int) -> bool:
        """Whether the grant pays for everything the provider may produce on every model
        (no answer needs watching)."""
        granted = granted_microusd * cost.PICO_PER_MICRO
        return all(not p.watched or p.full_pico <= granted for p in self.per_model)


def thinks_unseen(model: Model, body: dict[str, Any]) -> bool:
    """Whether the model may bill output tokens it does not stream. Claude thinks only when
    asked, and then streams a summary of what it bills: whether or not litellm's map knows
    the model yet (a new Claude release is not in it), thinking asked of Claude is unseen."""
    if model.provider.type == "anthropic":
        thinking = body.get("thinking")
        return isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled")
    return model.reasoning


# Where a request's web_search tool runs, billed by the search: on the provider whose API
# the request speaks natively (a translation onto chat drops the tool).
SEARCHES_ON = {"messages": "anthropic", "responses": "openai"}


# The lowest output limit a provider's API takes: a budget that cannot pay for it leaves the
# model out, rather than send a limit it refuses or one above what was paid for.
LEAST_OUTPUT = {("responses", "openai"): 16}


def searches_on(model: Model, request: GatewayRequest) -> bool:
    return SEARCHES_ON.get(request.kind) == model.provider.type


def of_chat(models: tuple[Model, ...], request: GatewayRequest, counted: Counted,
            slice_tokens: int, budget_microusd: int) -> WorstCase:
    share = round(budget_microusd * SHARE) * cost.PICO_PER_MICRO
    choices, asked = request.n, request.output_limit
    per_model = []
    writes_cache, searches = request.writes_cache, request.web_searches
    for model in models:
        rates = cost.rates(model.price)
        # A body marked for the prompt cache may have all its input written to it, billed
        # above the input price (an hour's writes at 2x on Anthropic): reserved at the most.
        input_rate = (max(rates.input, rates.cache_write, rates.cache_write_1h)
                      if writes_cache else rates.input)
        fees = searches * cost.WEB_SEARCH_PICO if searches_on(model, request) else 0
        limits = [v for v in (asked, model.max_output_tokens) if v is not None]
        one_token = Counted(1, 4, 0).for_model(model)
        limit = min(limits) if limits else DEFAULT_OUTPUT_LIMIT
        least = min(limit, LEAST_OUTPUT.get((request.kind, model.provider.type), 1))
        # At least the minimum's output a choice: a smaller slice could never be granted,
        # and a budget with money left would refuse the request.
        slice_pico = max(rates.output * choices * max(one_token, least),
                         min(rates.output * slice_tokens, share))
        per_model.append(Priced(model, counted.for_model(model) * input_rate + fees, rates.output,
                                choices, limit, not thinks_unseen(model, request.body), share,
                                slice_pico, one_token, input_rate, least))
    return WorstCase(tuple(per_model))


def of_embeddings(models: tuple[Model, ...], counted: Counted) -> WorstCase:
    return WorstCase(tuple(Priced(m, counted.for_model(m) * cost.rates(m.price).input, 0, 1,
                                  0, False, 0, 0) for m in models))
