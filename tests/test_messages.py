"""Anthropic's Messages API inbound (POST /v1/messages), through the official `anthropic` SDK.

Two tiers: `smart` starts with a Claude model (the body goes to Anthropic as the client wrote
it), `fast` with an OpenAI-compatible one (translated both ways). Each is driven as an
Anthropic client drives it: create, stream, a tool turn, count_tokens, the error classes; and
the gateway's promises hold on this surface too: money from Anthropic's usage (cache reads
and writes included), the cache and its replay as events, fallbacks, the usage log's surface.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import RedisServer, serving, sha, usage_lines_of

KEY = "sk-test-messages-team"
TINY = "sk-test-messages-tiny"
PRICE = "price: {input_per_mtok: 1, output_per_mtok: 2, cached_input_per_mtok: 0.1, " \
        "cache_write_per_mtok: 1.25, cache_write_1h_per_mtok: 2}"
EVENT = TypeAdapter(RawMessageStreamEvent)
SIGNED_HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "Two and two.", "signature": "EqQBCkYIBhgCIkD="},
        {"type": "text", "text": "Four."}]},
    {"role": "user", "content": "And 3+3?"},
]


def nearly(i: int) -> str:
    return f"sk-test-messages-nearly-{i}"


def router_yaml(mock_url: str, redis_url: str, tmp: Path) -> str:
    return "\n".join([
        "providers:",
        f"  anthropic: {{api_key: sk-ant-test, api_base: '{mock_url}'}}",
        f"  openai: {{api_key: sk-openai-test, api_base: '{mock_url}/v1'}}",
        "models:",
        f"  claude: {{provider: anthropic, model: claude-sonnet-4-5, {PRICE}}}",
        f"  claude-down: {{provider: anthropic, model: claude-down, {PRICE}}}",
        f"  gpt: {{provider: openai, model: gpt-4o-mini, {PRICE}}}",
        "tiers:",
        "  smart: [claude, gpt]",
        "  fast: [gpt, claude]",
        "  across: [claude-down, gpt]",
        "keys:",
        f"  - {{name: team, key_sha256: {sha(KEY)}, daily_budget_usd: 100}}",
        f"  - {{name: tiny, key_sha256: {sha(TINY)}, daily_budget_usd: 0.000001}}",
        *[f"  - {{name: nearly-{i}, key_sha256: {sha(nearly(i))}, daily_budget_usd: 0.00005}}"
          for i in range(4)],
        "settings:",
        f"  redis_url: '{redis_url}'",
        f"  usage_log: {tmp}/usage.jsonl",
        "  cache: {enabled: true}",
        "  retry: {max_retries: 0}",
        "  cooldown: {after_failures: 1000, for_s: 0}",
        "  timeouts: {connect_s: 2, first_token_s: 5, total_s: 20}",
    ]) + "\n"


@pytest.fixture(scope="module")
def gateway(mock: MockProvider, redis_server: RedisServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("messages")
    config = router_yaml(mock.base_url, redis_server.url, tmp)  # type: ignore[attr-defined]
    with serving(tmp, config) as url:
        yield url, tmp


@pytest.fixture
def client(gateway: tuple[str, Path]) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway[0], api_key=KEY, max_retries=0) as made:
        yield made


def usage_lines(tmp: Path, request_id: str) -> list[dict[str, Any]]:
    return usage_lines_of(tmp / "usage.jsonl", request_id, within_s=3)


def texts(message: Message) -> list[str]:
    return [b.text for b in message.content if b.type == "text"]


def nocache() -> dict[str, str]:
    return {"cache-control": "no-store"}


@pytest.mark.parametrize("tier,model", [("smart", "claude"), ("fast", "gpt")])
def test_create_answers_a_message_the_sdk_parses(client: anthropic.Anthropic, mock: MockProvider,
                                                 tier: str, model: str) -> None:
    raw = client.messages.with_raw_response.create(
        model=tier, max_tokens=200, system="Be brief.", extra_headers=nocache(),
        messages=[{"role": "user", "content": "Name a colour"}])
    message = raw.parse()
    assert raw.headers["x-gateway-model"] == model
    assert message.type == "message" and message.role == "assistant"
    assert message.model == tier  # the name asked for, as Anthropic echoes it (Claude Code
    # keeps its signed thinking only for an answer that names the model it asked for)
    assert message.stop_reason == "end_turn"
    [block] = message.content
    assert block.type == "text" and "Name a colour" in block.text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    sent = mock.last_answer()
    assert message.usage.output_tokens == sent.output_tokens


def test_native_tier_passes_the_body_and_betas_through(client: anthropic.Anthropic,
                                                       mock: MockProvider) -> None:
    body: dict[str, Any] = {
        "model": "smart", "max_tokens": 300,
        "system": [{"type": "text", "text": "Answer in one word.",
                    "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "messages": SIGNED_HISTORY, "metadata": {"user_id": "user-7"},
        "thinking": {"type": "enabled", "budget_tokens": 256}}
    client.messages.create(**body, extra_headers={
        **nocache(), "anthropic-beta": "interleaved-thinking-2025-05-14"})
    [received] = mock.calls("claude-sonnet-4-5")
    assert received.path == "/v1/messages"
    assert received.headers.get("anthropic-beta") == "interleaved-thinking-2025-05-14"
    assert received.headers.get("x-api-key") == "sk-ant-test"  # the operator's, not the client's
    assert received.body == {**body, "model": "claude-sonnet-4-5"}


@pytest.mark.parametrize("tier", ["smart", "fast"])
def test_stream_is_anthropics_event_sequence(client: anthropic.Anthropic, tier: str) -> None:
    with client.messages.stream(model=tier, max_tokens=200, extra_headers=nocache(),
                                messages=[{"role": "user", "content": "Stream a sentence"}],
                                ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert "content_block_delta" in types and "message_delta" in types
    start = events[0]
    assert start.type == "message_start"
    assert start.message.usage.input_tokens > 0  # Claude Code's context meter reads it
    assert "Stream a sentence" in "".join(b.text for b in final.content if b.type == "text")
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}


@pytest.mark.parametrize("tier,stream", [("smart", False), ("fast", False), ("smart", True),
                                         ("fast", True)])
def test_tool_use_and_its_result_turn(client: anthropic.Anthropic, mock: MockProvider,
                                      tier: str, stream: bool) -> None:
    ask: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]

    def turn(messages: list[Any]) -> Message:
        if not stream:
            return client.messages.create(model=tier, max_tokens=300, tools=[WEATHER],
                                          messages=messages, extra_headers=nocache())
        with client.messages.stream(model=tier, max_tokens=300, tools=[WEATHER],
                                    messages=messages, extra_headers=nocache()) as s:
            return s.get_final_message()

    first = turn(ask)
    assert first.stop_reason == "tool_use"
    [use] = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather" and isinstance(use.input, dict) and "city" in use.input
    second = turn([*ask, {"role": "assistant", "content": first.content},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                                 "content": "18C and sunny"}]}])
    assert second.stop_reason == "end_turn"
    assert any(b.type == "text" and b.text for b in second.content)
    last = mock.calls()[-1].body
    # The provider got the result with the call it answers, in its own wire format.
    if tier == "smart":
        assert last["messages"][-1]["content"][0]["tool_use_id"] == use.id
    else:
        tool_turn = [m for m in last["messages"] if m["role"] == "tool"]
        assert tool_turn and tool_turn[0]["tool_call_id"] == use.id


@pytest.mark.parametrize("tier,model", [("smart", "claude"), ("fast", "gpt")])
def test_count_tokens(gateway: tuple[str, Path], client: anthropic.Anthropic, tier: str,
                      model: str) -> None:
    raw = client.messages.with_raw_response.count_tokens(
        model=tier, system="Be brief.", messages=[{"role": "user", "content": "Count me"}])
    counted = raw.parse()
    assert counted.input_tokens > 0
    [line] = usage_lines(gateway[1], raw.headers["x-request-id"])
    assert (line["surface"], line["model"], line["cost_usd"]) == (
        "messages.count_tokens", model, None)
    made = client.messages.create(model=tier, max_tokens=50, system="Be brief.",
                                  messages=[{"role": "user", "content": "Count me"}],
                                  extra_headers=nocache())
    if tier == "smart":  # Anthropic's own count, which its answer agrees with
        assert counted.input_tokens == made.usage.input_tokens
    else:  # the gateway's count, which errs high, never low
        assert counted.input_tokens >= made.usage.input_tokens


def test_errors_are_anthropic_shaped_with_the_sdks_classes(gateway: tuple[str, Path],
                                                           client: anthropic.Anthropic,
                                                           mock: MockProvider) -> None:
    ask: dict[str, Any] = {"max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(anthropic.NotFoundError) as unknown:
        client.messages.create(model="no-such-tier", **ask)
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert "no-such-tier" in unknown.value.message
    with (anthropic.Anthropic(base_url=gateway[0], api_key="sk-wrong", max_retries=0) as bad,
          pytest.raises(anthropic.AuthenticationError)):
        bad.messages.create(model="smart", **ask)
    with pytest.raises(anthropic.BadRequestError) as invalid:
        client.messages.create(model="smart", max_tokens=0,
                               messages=[{"role": "user", "content": "hi"}])
    assert "max_tokens" in invalid.value.message
    # A budget refusal: 429, and the SDK is told not to retry it (nothing changes by then).
    with anthropic.Anthropic(base_url=gateway[0], api_key=TINY, max_retries=2) as tiny:
        started = time.monotonic()
        with pytest.raises(anthropic.RateLimitError) as refused:
            tiny.messages.create(model="smart", **ask)
        assert time.monotonic() - started < 1.5
    assert refused.value.response.headers.get("x-should-retry") == "false"
    assert refused.value.body["type"] == "error"  # type: ignore[index]
    # Every model failing: a server error class, and what failed is said.
    mock.script("claude-down", Step(status=529))
    mock.script("gpt-4o-mini", Step(status=503))
    with pytest.raises(anthropic.InternalServerError) as failed:
        client.messages.create(model="across", **ask, extra_headers=nocache())
    assert "claude-down" in failed.value.message
    # A path of this API the gateway does not serve: Anthropic's shape too.
    missing = httpx.post(f"{gateway[0]}/v1/messages/batches", headers={"x-api-key": KEY},
                         json={})
    assert missing.status_code == 404 and missing.json()["type"] == "error"


def test_a_fallback_across_providers_does_not_replay_a_signature(
        client: anthropic.Anthropic, mock: MockProvider) -> None:
    """Claude is down: the OpenAI model answers a history holding Claude's signed thinking."""
    mock.script("claude-down", Step(status=529))
    raw = client.messages.with_raw_response.create(
        model="across", max_tokens=100, messages=SIGNED_HISTORY, extra_headers=nocache())
    assert raw.headers["x-gateway-model"] == "gpt"
    assert raw.parse().stop_reason == "end_turn"
    sent = mock.calls("gpt-4o-mini")[-1].body
    assert "EqQBCkYIBhgCIkD=" not in json.dumps(sent)


def test_cost_counts_anthropics_cache_reads_and_writes(
        gateway: tuple[str, Path], client: anthropic.Anthropic, mock: MockProvider) -> None:
    mock.script("claude-sonnet-4-5", Step(cached_input_tokens=1000, cache_write_tokens=200,
                                          cache_write_1h_tokens=100))
    raw = client.messages.with_raw_response.create(
        model="smart", max_tokens=100, extra_headers=nocache(),
        messages=[{"role": "user", "content": "A long cached prompt " + "word " * 1500}])
    message = raw.parse()
    usage = message.usage
    assert usage.cache_read_input_tokens == 1000 and usage.cache_creation_input_tokens == 300
    plain = usage.input_tokens
    # per token: plain 1, read 0.1, write 1.25, 1h write 2, output 2 (micro-dollars)
    expected = plain * 1 + 1000 * 0.1 + 200 * 1.25 + 100 * 2 + usage.output_tokens * 2
    assert float(raw.headers["x-gateway-cost-usd"]) == pytest.approx(expected / 1e6, abs=1e-6)
    [line] = usage_lines(gateway[1], raw.headers["x-request-id"])
    assert line["surface"] == "messages" and line["model"] == "claude"
    assert line["cache_read_tokens"] == 1000
    assert (line["cache_write_tokens"], line["cache_write_1h_tokens"]) == (200, 100)
    assert line["input_tokens"] == plain + 1300


@pytest.mark.parametrize("tier", ["smart", "fast"])
def test_cache_hit_and_its_replay_as_events(gateway: tuple[str, Path], tier: str,
                                            mock: MockProvider) -> None:
    ask = {"model": tier, "max_tokens": 100,
           "messages": [{"role": "user", "content": f"Cache me on {tier} {time.time()}"}]}
    with anthropic.Anthropic(base_url=gateway[0], api_key=KEY, max_retries=0) as client:
        first = client.messages.with_raw_response.create(**ask)  # type: ignore[call-overload]
        assert first.headers["x-gateway-cache"] == "miss"
        calls = len(mock.calls())
        again = client.messages.with_raw_response.create(**ask)  # type: ignore[call-overload]
        assert again.headers["x-gateway-cache"] == "hit"
        assert again.parse().content == first.parse().content
        with client.messages.stream(**ask) as stream:  # type: ignore[arg-type]
            replayed = stream.get_final_message()
        assert texts(replayed) == texts(first.parse())
        assert len(mock.calls()) == calls  # no provider was called for either
    # The same words as an OpenAI chat request are another request: no hit across APIs.
    chat = httpx.post(f"{gateway[0]}/v1/chat/completions",
                      headers={"authorization": f"Bearer {KEY}"},
                      json={"model": tier, "max_tokens": 100, "messages": ask["messages"]})
    assert chat.headers["x-gateway-cache"] == "miss"


def test_every_streamed_event_is_one_the_sdk_knows(gateway: tuple[str, Path]) -> None:
    """Raw SSE from the gateway, each `data:` validated as the SDK's event union, with the
    `event:` line naming its type."""
    for tier in ("smart", "fast"):
        with httpx.stream("POST", f"{gateway[0]}/v1/messages",
                          headers={"x-api-key": KEY, "anthropic-version": "2023-06-01",
                                   **nocache()},
                          json={"model": tier, "max_tokens": 100, "stream": True,
                                "tools": [WEATHER],
                                "messages": [{"role": "user", "content": "Weather?"}]}) as r:
            assert r.status_code == 200
            text = r.read().decode()
        pairs = [block.split("\n") for block in text.strip().split("\n\n")]
        for name, data in pairs:
            payload = json.loads(data.removeprefix("data: "))
            if payload == {"type": "ping"}:  # Anthropic's keep-alive: not in the SDK's union
                assert name == "event: ping"
                continue
            event = EVENT.validate_python(payload)
            assert name == f"event: {event.type}"


def test_models_listed_the_anthropic_way(client: anthropic.Anthropic) -> None:
    names = [model.id for model in client.models.list()]
    assert {"smart", "fast", "claude", "gpt"} <= set(names)
    assert client.models.retrieve("smart").id == "smart"


def test_a_model_that_cannot_carry_the_request_is_skipped(client: anthropic.Anthropic) -> None:
    """Anthropic's server tools have no chat translation: an OpenAI model first in the tier is
    skipped for the Claude model after it; asked for alone, it says what to change."""
    web_search: Any = {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}
    ask: dict[str, Any] = {"max_tokens": 100, "tools": [web_search], "extra_headers": nocache(),
                           "messages": [{"role": "user", "content": "Search the web"}]}
    raw = client.messages.with_raw_response.create(model="fast", **ask)
    assert raw.headers["x-gateway-model"] == "claude"
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="gpt", **ask)
    assert "web_search" in refused.value.message and "gpt" in refused.value.message


@pytest.mark.parametrize("case", range(4))
def test_a_nearly_spent_key_gets_the_message_up_to_where_its_budget_ends(
        gateway: tuple[str, Path], mock: MockProvider, case: int) -> None:
    """$50e-6 left; the answer asked for would cost about $200e-6. The message ends where the
    budget does, as Anthropic ends one at its limit, on both paths, streamed or not."""
    tier, stream = [("smart", False), ("fast", False), ("smart", True), ("fast", True)][case]
    mock.always.update({"claude-sonnet-4-5": Step(text="budget " * 100),
                        "gpt-4o-mini": Step(text="budget " * 100)})
    ask: Any = {"model": tier, "max_tokens": 100, "extra_headers": nocache(),
                "messages": [{"role": "user", "content": "Tell me about budgets"}]}
    with anthropic.Anthropic(base_url=gateway[0], api_key=nearly(case), max_retries=0) as c:
        if stream:
            with c.messages.stream(**ask) as streamed:
                message = streamed.get_final_message()
        else:
            message = c.messages.create(**ask)
    assert message.stop_reason == "max_tokens"
    assert 0 < len(texts(message)[0].split()) < 100
    balance = httpx.get(f"{gateway[0]}/v1/budget",
                        headers={"x-api-key": nearly(case)}).json()
    assert 0 < balance["spent_usd"] <= 0.00005 and balance["reserved_usd"] == 0


def test_a_fallback_to_claude_mid_tool_loop_with_thinking_on_is_answered(
        client: anthropic.Anthropic, mock: MockProvider) -> None:
    """The tool call was GPT's (its reasoning shown as unsigned thinking); the tool result
    goes to Claude when GPT fails. Anthropic refuses a tool result whose assistant turn does
    not open with a (signed) thinking block while thinking is on: the gateway drops the
    unsigned block and turns thinking off for that request, rather than a 400."""
    ask: dict[str, Any] = {"model": "fast", "max_tokens": 3000, "tools": [WEATHER],
                           "thinking": {"type": "enabled", "budget_tokens": 2000},
                           "extra_headers": nocache()}
    history: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.messages.create(**ask, messages=history)
    assert first.stop_reason == "tool_use"
    [use] = [b for b in first.content if b.type == "tool_use"]
    mock.script("gpt-4o-mini", Step(status=503))
    raw = client.messages.with_raw_response.create(**ask, messages=[
        *history, {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": "18C"}]}])
    assert raw.headers["x-gateway-model"] == "claude"
    assert raw.parse().stop_reason == "end_turn"
    sent = mock.calls("claude-sonnet-4-5")[-1].body
    assert sent["thinking"] == {"type": "disabled"}
    assert "gateway-unsigned" not in json.dumps(sent)
