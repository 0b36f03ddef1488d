"""The pure rules of the money: which output limit holds, in which field it is sent, what
is reserved up front, and which provider usage is believed. Table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import output_limit
from gateway.config import Model, Price, Provider
from gateway.money import cost, worst_case
from gateway.money.tokens import Counted
from gateway.request import GatewayRequest

ONE_TWO = Price(1, 2)


def model(provider_type: str = "openai", provider_model: str = "gpt-4o-mini",
          max_output_tokens: int | None = 1000, reasoning: bool = False,
          price: Price = ONE_TWO) -> Model:
    provider = Provider(provider_type, provider_type, "k", None, None, {}, None)
    return Model(provider_model, provider, provider_model, price, max_output_tokens, reasoning)


@pytest.mark.parametrize("body, limit", [
    ({}, None),
    ({"max_tokens": 5}, 5),
    ({"max_completion_tokens": 7}, 7),
    ({"max_tokens": 1, "max_completion_tokens": 2000}, 2000),  # as providers read them
    ({"max_tokens": 3000, "max_completion_tokens": 20}, 20),
    ({"max_tokens": True}, None),
])
def test_the_limit_is_the_one_providers_read(body: dict[str, Any], limit: int | None) -> None:
    assert output_limit.asked(body) == limit


@pytest.mark.parametrize("m, body, tokens, sent", [
    (model(), {}, None, {}),
    (model(), {}, 100, {"max_tokens": 100}),
    (model(), {"max_completion_tokens": 9}, 4, {"max_completion_tokens": 4}),
    (model(), {"max_tokens": 1, "max_completion_tokens": 2000}, None,
     {"max_tokens": 2000, "max_completion_tokens": 2000}),
    (model(provider_model="gpt-5"), {}, 100, {"max_completion_tokens": 100}),
    (model(provider_model="o3-mini"), {"max_tokens": 50}, None,
     {"max_completion_tokens": 50}),
    (model("anthropic", "claude-x"), {"max_tokens": 50}, 10, {"max_tokens": 10}),
    (model("groq", "gpt-5-oss"), {}, 10, {"max_tokens": 10}),  # not OpenAI's own
])
def test_each_model_gets_the_limit_in_the_field_it_reads(
        m: Model, body: dict[str, Any], tokens: int | None, sent: dict[str, Any]) -> None:
    assert output_limit.with_limit({"model": "x", **body}, m, tokens) == {"model": "x", **sent}


COUNTED = Counted(text_tokens=10, text_bytes=40, fixed_tokens=0)
CHAT = GatewayRequest("chat", {})


def test_a_small_worst_case_is_reserved_whole() -> None:
    worst = worst_case.of_chat((model(),), CHAT, COUNTED, 4096, budget_microusd=1_000_000)
    assert worst.microusd == 10 * 1 + 1000 * 2  # under 1% of the budget: whole
    assert worst.covered(worst.microusd)
    assert worst.limits(worst.microusd) == {"gpt-4o-mini": 1000}


def test_a_large_worst_case_reserves_a_slice_of_at_most_one_percent() -> None:
    big = model("anthropic", "claude-x", max_output_tokens=64_000, price=Price(3, 15))
    worst = worst_case.of_chat((big,), CHAT, COUNTED, 4096, budget_microusd=1_000_000)
    assert worst.microusd == 14 * 3 + 10_000  # 1% of $1, not 64,000 x $15 (14: 10 x 1.35)
    assert not worst.covered(worst.microusd)
    assert worst.limits(worst.microusd) == {"claude-x": 64_000}  # watched: sent whole
    roomy = worst_case.of_chat((big,), CHAT, COUNTED, 4096, budget_microusd=10_000_000)
    assert roomy.microusd == 14 * 3 + 4096 * 15  # output_slice_tokens bounds it too


def test_a_model_that_thinks_unseen_reserves_its_whole_limit_and_is_clamped() -> None:
    thinker = model(provider_model="gpt-5", max_output_tokens=128_000, reasoning=True)
    worst = worst_case.of_chat((thinker,), CHAT, COUNTED, 4096, budget_microusd=1_000_000)
    assert worst.microusd == 10 + 128_000 * 2
    assert worst.limits(100_010) == {"gpt-5": 50_000}
    assert worst.clamped(100_010) == 50_000
    claude = model("anthropic", "claude-x", max_output_tokens=64_000, reasoning=True)
    assert worst_case.thinks_unseen(claude, {"thinking": {"type": "enabled"}})
    assert not worst_case.thinks_unseen(claude, {})


@pytest.mark.parametrize("usage, reported", [
    (None, cost.Reported(None, None)),
    ({}, cost.Reported(None, None)),
    ({"prompt_tokens": 10, "completion_tokens": 5}, cost.Reported(10, 5)),
    ({"prompt_tokens": -1_000_000, "completion_tokens": 5}, cost.Reported(None, 5)),
    ({"prompt_tokens": 10.5, "completion_tokens": "5"}, cost.Reported(None, None)),
    ({"prompt_tokens": 10**12, "completion_tokens": 5}, cost.Reported(None, 5)),
    ({"prompt_tokens": 10, "completion_tokens": 5,
      "prompt_tokens_details": {"cached_tokens": 20}}, cost.Reported(None, 5)),
    ({"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {
        "cached_tokens": 10, "cache_creation_tokens": 60,
        "cache_creation_token_details": {"ephemeral_1h_input_tokens": 20}}},
     cost.Reported(100, 5, 10, 40, 20)),
])
def test_a_providers_usage_is_believed_only_when_it_adds_up(
        usage: Any, reported: cost.Reported) -> None:
    assert cost.usage_of({"usage": usage}) == reported


def test_cache_writes_are_priced_apart_from_plain_input() -> None:
    rates = cost.rates(Price(3, 15, 0.3))  # no write price given: Anthropic's multiples
    usage = cost.Usage(10_056, 1, cached_tokens=0, cache_write_tokens=6000,
                       cache_write_1h_tokens=4000)
    assert cost.of_usage(rates, usage) == 56 * 3 + 6000 * 3.75 + 4000 * 6 + 15
