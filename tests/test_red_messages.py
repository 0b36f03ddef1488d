"""Red team: the Anthropic Messages surface (POST /v1/messages, count_tokens) against the
README's promises and issue 21's. Each test here failed against the gateway when written:
it shows one promise broken, with real processes (redis-server, the mock providers, a
`gateway serve`) spoken to over raw HTTP as the Anthropic SDK and Claude Code speak.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import RedisServer, serving, sha, usage_lines_of

KEY = "sk-red-messages-team"
PRICE = "price: {input_per_mtok: 1, output_per_mtok: 2, cached_input_per_mtok: 0.1, " \
        "cache_write_per_mtok: 1.25, cache_write_1h_per_mtok: 2}"
# 100 micro-dollars an output token: a small budget ends within a short answer.
PRICEY = "price: {input_per_mtok: 1, output_per_mtok: 100}"
OUTPUT_MICRO = 100


def budget_key(name: str) -> str:
    return f"sk-red-budget-{name}"


def router_yaml(mock_url: str, redis_url: str, tmp: Path) -> str:
    budgets = {"cut-native": 0.05, "cut-chat": 0.05, "refused": 0.01, "left-native": 100,
               "drop-native": 100, "left-chat": 100,
               "drop-chat": 100, "think-new": 100, "clamp": 0.002,
               "cut-plain": 0.05}
    return "\n".join([
        "providers:",
        f"  anthropic: {{api_key: sk-ant-red-secret-0123456789, api_base: '{mock_url}'}}",
        f"  openai: {{api_key: sk-openai-red-secret-0123456789, api_base: '{mock_url}/v1'}}",
        "models:",
        f"  claude: {{provider: anthropic, model: claude-sonnet-4-5, {PRICE}}}",
        f"  claude-down: {{provider: anthropic, model: claude-down, {PRICE}}}",
        f"  gpt: {{provider: openai, model: gpt-4o-mini, {PRICE}}}",
        f"  claude-pricey: {{provider: anthropic, model: claude-pricey, {PRICEY}}}",
        f"  gpt-pricey: {{provider: openai, model: gpt-pricey, {PRICEY}}}",
        # A Claude model newer than litellm's map (so not marked as reasoning).
        f"  claude-next: {{provider: anthropic, model: claude-opus-9, {PRICEY}, "
        "max_output_tokens: 32000}",
        f"  claude-think: {{provider: anthropic, model: claude-sonnet-4-5, {PRICEY}}}",
        "tiers:",
        "  smart: [claude, gpt]",
        "  fast: [gpt, claude]",
        "  across: [claude-down, gpt]",
        "  pricey: [claude-pricey]",
        "  pricey-chat: [gpt-pricey]",
        "keys:",
        f"  - {{name: team, key_sha256: {sha(KEY)}, daily_budget_usd: 100}}",
        *[f"  - {{name: {n}, key_sha256: {sha(budget_key(n))}, daily_budget_usd: {b}}}"
          for n, b in budgets.items()],
        "settings:",
        f"  redis_url: '{redis_url}'",
        f"  usage_log: {tmp}/usage.jsonl",
        "  cache: {enabled: true}",
        "  retry: {max_retries: 0}",
        "  budgets: {output_slice_tokens: 16, wait_s: 0.2}",
        "  cooldown: {after_failures: 1000, for_s: 0}",
        "  timeouts: {connect_s: 2, first_token_s: 5, total_s: 20}",
    ]) + "\n"


@pytest.fixture(scope="module")
def gateway(mock: MockProvider, redis_server: RedisServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("red-messages")
    config = router_yaml(mock.base_url, redis_server.url, tmp)  # type: ignore[attr-defined]
    with serving(tmp, config) as url:
        yield url, tmp


def headers(key: str = KEY, **more: str) -> dict[str, str]:
    return {"x-api-key": key, "anthropic-version": "2023-06-01", "cache-control": "no-store",
            **more}


def usage_line(tmp: Path, request_id: str, within_s: float = 5) -> dict[str, Any]:
    lines = usage_lines_of(tmp / "usage.jsonl", request_id, within_s)
    assert lines, f"no usage line for {request_id}"
    return lines[-1]


def sse_events(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    return events


def delivered_text(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"].get("text", "") for e in events
                   if e.get("type") == "content_block_delta")


LONG = " ".join(f"w{i}" for i in range(3000))  # 3000 pieces: 3000 output tokens, as the mock counts


# --- money -----------------------------------------------------------------------------

@pytest.mark.parametrize("tier,name,model,stream", [
    ("pricey", "cut-native", "claude-pricey", True),
    ("pricey-chat", "cut-chat", "gpt-pricey", True),
    ("pricey", "cut-plain", "claude-pricey", False)])
def test_an_answer_cut_at_the_budget_is_charged_for_the_tokens_it_carried(
        gateway: tuple[str, Path], mock: MockProvider, tier: str, name: str,
        model: str, stream: bool) -> None:
    """A $0.05 key, 100 micro-dollars an output token (500 tokens a day): the gateway ends
    the answer where the budget ends (stop_reason max_tokens). Its closing message_delta
    says output_tokens 0, and that is what is charged: the key pays for its input only, so
    it asks again, and again, each time for a budget's worth of output."""
    url, tmp = gateway
    key = budget_key(name)
    mock.always[model] = Step(text=LONG)
    carried, charged = [], []
    for _ in range(4):
        body = {"model": tier, "max_tokens": 4000, "stream": stream,
                "messages": [{"role": "user", "content": "Talk"}]}
        with httpx.stream("POST", f"{url}/v1/messages", headers=headers(key), timeout=20,
                          json=body) as r:
            if r.status_code != 200:
                break
            text = r.read().decode()
            rid = r.headers["x-request-id"]
        if stream:
            words = delivered_text(sse_events(text))
        else:
            words = "".join(b.get("text", "") for b in json.loads(text)["content"])
        carried.append(len(words.split()))
        charged.append(usage_line(tmp, rid)["output_tokens"])
    assert sum(carried) * OUTPUT_MICRO <= 50_000 + 4 * OUTPUT_MICRO, (
        f"output tokens carried to the client per request: {carried} (charged as {charged}), "
        "on a budget of 500 output tokens")
    assert all(c >= n for c, n in zip(charged, carried, strict=True)), (carried, charged)


@pytest.mark.parametrize("tier,name,model", [("pricey", "left-native", "claude-pricey"),
                                             ("pricey-chat", "left-chat", "gpt-pricey")])
def test_a_client_that_leaves_mid_stream_is_charged_for_what_it_was_sent(
        gateway: tuple[str, Path], mock: MockProvider, tier: str, name: str,
        model: str) -> None:
    """Claude Code's Esc: the client closes the stream after reading part of it. The
    provider has made (and bills) at least what the client read; the usage log must say so."""
    url, tmp = gateway
    mock.always[model] = Step(text=LONG, chunk_delay_s=0.002)
    seen: list[str] = []
    with httpx.stream("POST", f"{url}/v1/messages", headers=headers(budget_key(name)),
                      timeout=20, json={"model": tier, "max_tokens": 4000, "stream": True,
                                        "messages": [{"role": "user", "content": "Talk"}]}) as r:
        assert r.status_code == 200
        rid = r.headers["x-request-id"]
        for line in r.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                if event.get("type") == "content_block_delta":
                    seen.append(event["delta"].get("text", ""))
            if len(seen) >= 200:
                break
    read = len("".join(seen).split())
    line = usage_line(tmp, rid)
    assert line["status"] == 499
    assert line["output_tokens"] >= read, (f"the client read {read} tokens; charged "
                                           f"{line['output_tokens']}: {line}")


@pytest.mark.parametrize("tier,name,model", [("pricey", "drop-native", "claude-pricey"),
                                             ("pricey-chat", "drop-chat", "gpt-pricey")])
def test_a_provider_that_drops_mid_stream_is_charged_for_what_was_relayed(
        gateway: tuple[str, Path], mock: MockProvider, tier: str, name: str,
        model: str) -> None:
    """The provider's connection dies after 300 events (tokens already relayed): the client
    gets an error event, and the tokens it got must be charged."""
    url, tmp = gateway
    mock.script(model, Step(text=LONG, drop_after=300))
    with httpx.stream("POST", f"{url}/v1/messages", headers=headers(budget_key(name)),
                      timeout=20, json={"model": tier, "max_tokens": 4000, "stream": True,
                                        "messages": [{"role": "user", "content": "Talk"}]}) as r:
        assert r.status_code == 200
        rid = r.headers["x-request-id"]
        text = r.read().decode()
    events = sse_events(text)
    assert events[-1]["type"] == "error"
    read = len(delivered_text(events).split())
    assert read > 100
    line = usage_line(tmp, rid)
    assert line["output_tokens"] >= read, (f"the client got {read} tokens; charged "
                                           f"{line['output_tokens']}: {line}")


def test_a_budget_with_money_left_does_not_refuse_a_claude_request(
        gateway: tuple[str, Path]) -> None:
    """$0.01 left of $0.01, a Claude model at $100 per million output tokens: the request
    needs $0.000209 (its input and one output token, as the refusal itself says), and is
    refused. (The up-front reservation, input plus a slice of 1% of the budget, is smaller
    than the minimum, two tokens as Claude's are counted, so no grant can ever satisfy it.)"""
    url, _ = gateway
    answer = httpx.post(f"{url}/v1/messages", headers=headers(budget_key("refused")),
                        timeout=20, json={"model": "pricey", "max_tokens": 100,
                                          "messages": [{"role": "user", "content": "Hi"}]})
    assert answer.status_code == 200, answer.text


def deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


ODD_BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "tool_choice type a list": ("fast", {
        "tools": [{"name": "t", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": ["auto"]}}),
    "system text a number": ("fast", {"system": [{"type": "text", "text": 5}]}),
    "stop_sequences a number": ("fast", {"stop_sequences": 5}),
    "tools a number": ("fast", {"tools": 5}),
    "document content a number": ("fast", {"messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "content", "content": 5}}]}]}),
    "tool input nested 300 deep (translated)": ("fast", {"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "t",
                                           "input": {"a": deep(300)}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": "ok"}]}]}),
    "an unknown field nested 300 deep (native)": ("smart", {"x_extra": deep(300)}),
    "metadata nested 300 deep (native)": ("smart", {"metadata": {"user_id": deep(300)}}),
}


@pytest.mark.parametrize("case", list(ODD_BODIES))
def test_an_odd_body_is_a_400_in_anthropics_shape_not_a_500(gateway: tuple[str, Path],
                                                            case: str) -> None:
    url, _ = gateway
    tier, fields = ODD_BODIES[case]
    body = {"model": tier, "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}], **fields}
    answer = httpx.post(f"{url}/v1/messages", headers=headers(), json=body, timeout=20)
    assert answer.status_code < 500, f"{case}: {answer.status_code} {answer.text}"


# --- broken providers --------------------------------------------------------------------

def sse(*events: dict[str, Any] | str) -> bytes:
    out = b""
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        name = json.loads(data).get("type") if isinstance(event, str) else event["type"]
        out += f"event: {name}\ndata: {data}\n\n".encode()
    return out


START = {"type": "message_start", "message": {
    "id": "msg_broken", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [], "stop_reason": None, "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 1}}}
BROKEN_STREAMS: dict[str, bytes] = {
    "an error event whose error is a string": sse(START, {"type": "error",
                                                          "error": "Overloaded"}),
    "a content_block_delta whose delta is a string": sse(START, {
        "type": "content_block_delta", "index": 0, "delta": "hello"}),
}


@pytest.mark.parametrize("case", list(BROKEN_STREAMS))
def test_a_broken_anthropic_stream_before_the_first_token_falls_back(
        gateway: tuple[str, Path], mock: MockProvider, case: str) -> None:
    """A 200 that is not an answer is a 502 of that model: the next model, before the first
    token (README, Retries and fallbacks). The tier smart is [claude, gpt]."""
    url, _ = gateway
    mock.script("claude-sonnet-4-5", Step(raw=BROKEN_STREAMS[case]))
    with httpx.stream("POST", f"{url}/v1/messages", headers=headers(), timeout=20,
                      json={"model": "smart", "max_tokens": 50, "stream": True,
                            "messages": [{"role": "user", "content": "hi"}]}) as r:
        text = r.read().decode()
        assert r.status_code == 200, f"{case}: {r.status_code} {text}"
        assert r.headers["x-gateway-model"] == "gpt", case
    events = sse_events(text)
    assert events[-1]["type"] == "message_stop", f"{case}: {text[-300:]}"


def test_a_broken_event_after_the_first_token_ends_the_stream_with_an_error_event(
        gateway: tuple[str, Path], mock: MockProvider) -> None:
    """After the first token the stream cannot fall back: it must end with an `error` event
    that the SDK raises, not a connection torn mid-body."""
    url, _ = gateway
    mock.script("claude-sonnet-4-5", Step(raw=sse(
        START, {"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": "Hello"}},
        {"type": "error", "error": "Overloaded"})))
    try:
        with httpx.stream("POST", f"{url}/v1/messages", headers=headers(), timeout=20,
                          json={"model": "smart", "max_tokens": 50, "stream": True,
                                "messages": [{"role": "user", "content": "hi"}]}) as r:
            assert r.status_code == 200
            text = r.read().decode()
    except httpx.HTTPError as exc:
        pytest.fail(f"the stream was torn: {exc!r}")
    events = sse_events(text)
    assert events[-1]["type"] == "error", text[-300:]


# --- thinking ----------------------------------------------------------------------------

def test_thinking_on_a_claude_model_newer_than_the_price_map_is_charged_as_billed(
        gateway: tuple[str, Path], mock: MockProvider) -> None:
    """Claude 4 shows a summary of its thinking and bills the whole of it. On a Claude model
    litellm's map does not list (so not marked `reasoning`), `thinking` on is still metered
    as a model that shows all it writes: the charge is capped at what was shown, and the
    provider's bill (2,000 output tokens here) is not what the key pays."""
    url, tmp = gateway
    billed = {"input_tokens": 10, "output_tokens": 2000, "cache_creation_input_tokens": 0,
              "cache_read_input_tokens": 0}
    mock.script("claude-opus-9", Step(text="Four.", usage=billed))
    raw = httpx.post(f"{url}/v1/messages", headers=headers(budget_key("think-new")), timeout=20,
                     json={"model": "claude-next", "max_tokens": 4000,
                           "thinking": {"type": "enabled", "budget_tokens": 2048},
                           "messages": [{"role": "user", "content": "What is 2+2?"}]})
    assert raw.status_code == 200, raw.text
    line = usage_line(tmp, raw.headers["x-request-id"])
    assert line["output_tokens"] == 2000, line
    assert raw.json()["usage"]["output_tokens"] == 2000


def test_a_budget_clamp_never_sends_claude_a_max_tokens_below_its_thinking_budget(
        gateway: tuple[str, Path], mock: MockProvider) -> None:
    """Claude with thinking is reserved whole and, near a budget's end, sent a lower
    max_tokens. Anthropic refuses max_tokens <= thinking.budget_tokens (a 400 to the
    client). The clamped body must stay one Anthropic accepts (lower the thinking budget
    with it, or turn thinking off)."""
    url, _ = gateway
    raw = httpx.post(f"{url}/v1/messages", headers=headers(budget_key("clamp")), timeout=20,
                     json={"model": "claude-think", "max_tokens": 8000,
                           "thinking": {"type": "enabled", "budget_tokens": 4000},
                           "messages": [{"role": "user", "content": "What is 2+2?"}]})
    [sent] = mock.calls("claude-sonnet-4-5")
    assert raw.status_code == 200, raw.text
    assert raw.headers.get("x-gateway-max-tokens-clamped"), raw.headers
    thinking = sent.body.get("thinking") or {}
    assert thinking.get("type") != "enabled" or (
        sent.body["max_tokens"] > thinking["budget_tokens"]), (
        f"sent max_tokens {sent.body['max_tokens']} with thinking {thinking}")


# --- count_tokens --------------------------------------------------------------------------

def test_count_tokens_skips_a_model_that_cannot_carry_the_body_as_messages_does(
        gateway: tuple[str, Path], mock: MockProvider) -> None:
    """`fast` is [gpt, claude]. A body with Anthropic's web_search tool is served by claude
    (gpt cannot carry it: skipped), but count_tokens of the very same body is refused with a
    400 telling the client to remove the tool: it never asks claude."""
    url, _ = gateway
    web_search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}
    body = {"model": "fast", "tools": [web_search],
            "messages": [{"role": "user", "content": "Search the web"}]}
    served = httpx.post(f"{url}/v1/messages", headers=headers(), timeout=20,
                        json={**body, "max_tokens": 50})
    assert served.status_code == 200 and served.headers["x-gateway-model"] == "claude"
    counted = httpx.post(f"{url}/v1/messages/count_tokens", headers=headers(), timeout=20,
                         json=body)
    asked = [c.path for c in mock.calls() if c.path.endswith("/count_tokens")]
    assert counted.status_code != 400 and asked, (
        f"count_tokens: {counted.status_code} {counted.text}; count_tokens calls: {asked}")
