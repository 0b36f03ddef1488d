"""Red team (rr3) on the Responses API surface: wire format and faults.

Every test starts real processes (a gateway on a real Redis, the mock provider speaking
OpenAI's and Anthropic's wire formats) and drives them with the official `openai` SDK or
raw httpx, as a hostile tenant, Codex, or a client behind a broken provider would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import RedisServer, serving, sha

KEY = "sk-test-rr3-team"
OTHER = "sk-test-rr3-other"
NEARLY = "sk-test-rr3-nearly"
PRICE = "price: {input_per_mtok: 1, output_per_mtok: 2}"
NOCACHE = {"cache-control": "no-store"}


def router_yaml(mock_url: str, redis_url: str, tmp: Path) -> str:
    return "\n".join([
        "providers:",
        f"  anthropic: {{api_key: sk-ant-test, api_base: '{mock_url}'}}",
        f"  openai: {{api_key: sk-openai-test, api_base: '{mock_url}/v1'}}",
        "models:",
        f"  claude: {{provider: anthropic, model: claude-sonnet-4-5, {PRICE}}}",
        f"  gpt: {{provider: openai, model: gpt-4o-mini, {PRICE}}}",
        f"  gpt-broken: {{provider: openai, model: gpt-broken, {PRICE}}}",
        "tiers:",
        "  fast: [gpt, claude]",
        "  smart: [claude, gpt]",
        "  native: [gpt-broken, claude]",
        "  nativeonly: [gpt-broken]",
        "  claudeonly: [claude]",
        "keys:",
        f"  - {{name: rr3-team, key_sha256: {sha(KEY)}, daily_budget_usd: 100}}",
        f"  - {{name: rr3-other, key_sha256: {sha(OTHER)}, daily_budget_usd: 100}}",
        f"  - {{name: rr3-nearly, key_sha256: {sha(NEARLY)}, daily_budget_usd: 0.0002}}",
        "settings:",
        f"  redis_url: '{redis_url}'",
        f"  usage_log: {tmp}/usage.jsonl",
        "  cache: {enabled: true}",
        "  retry: {max_retries: 0}",
        "  cooldown: {after_failures: 1000, for_s: 0}",
        "  timeouts: {connect_s: 2, first_token_s: 3, total_s: 10}",
    ]) + "\n"


@pytest.fixture(scope="module")
def gateway(mock: MockProvider, redis_server: RedisServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("rr3")
    with serving(tmp, router_yaml(mock.base_url, redis_server.url, tmp)) as url:  # type: ignore[attr-defined]
        yield url


def post(gateway: str, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(f"{gateway}/v1/responses", json=body, timeout=15,
                      headers={"authorization": f"Bearer {KEY}", **NOCACHE, **headers})


def sse_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def healthy(gateway: str) -> bool:
    return httpx.get(f"{gateway}/health", timeout=5).status_code == 200


# Settings of a wrong value that OpenAI refuses with a 400 naming the field. A translated
# model (Claude here) must refuse them too: today the gateway answers 200, drops the
# setting on the way to Claude (or sends Claude a value it refuses, temperature 99), and
# echoes the bad value back in a Response that OpenAI's schema rejects.
INVALID_SETTINGS = [
    ("tool_choice", "sometimes"),
    ("tool_choice", {"type": "function"}),
    ("tool_choice", {"type": "function", "name": 7}),
    ("text", {"format": "x"}),
    ("reasoning", {"effort": "galactic"}),
    ("reasoning", {"effort": 5}),
    ("metadata", {"a": 5}),
    ("temperature", 99),
    ("truncation", 5),
    ("tools", [{"type": "function", "name": "f", "parameters": "x"}]),
]


@pytest.mark.parametrize("field,value", INVALID_SETTINGS,
                         ids=[f"{f}={json.dumps(v)}" for f, v in INVALID_SETTINGS])
def test_a_setting_of_a_wrong_value_is_a_400_naming_it_on_a_translated_model(
        gateway: str, mock: MockProvider, field: str, value: Any) -> None:
    answer = post(gateway, {"model": "claudeonly", "input": "hi", field: value})
    assert answer.status_code == 400, answer.text[:300]
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert str(error["param"]).startswith(field), error
    assert mock.calls() == [], "a refused body reached a provider"
    assert healthy(gateway)


@pytest.mark.parametrize("item", [
    {"type": "function_call", "name": "get_weather", "arguments": "{}"},
    {"type": "function_call_output", "output": "sunny"},
], ids=["function_call", "function_call_output"])
def test_a_tool_item_without_its_call_id_is_a_400_naming_it(gateway: str, mock: MockProvider,
                                                            item: dict[str, Any]) -> None:
    """OpenAI refuses both (missing_required_parameter); through the translation Claude is
    sent a tool_use with id "" (which Anthropic refuses) or the output as loose user text."""
    answer = post(gateway, {"model": "claudeonly", "input": [
        {"role": "user", "content": "weather?"}, item]})
    assert answer.status_code == 400, answer.text[:300]
    assert "call_id" in str(answer.json()["error"]["param"]), answer.json()
    assert mock.calls() == []


def test_a_malformed_item_on_a_claude_first_tier_is_a_400_not_a_fallback(
        gateway: str, mock: MockProvider) -> None:
    """Content of a wrong type is the client's mistake, not something Claude "cannot carry":
    it must be refused naming the field, not spent on the next model of the chain (OpenAI,
    whose own 400 reaches the client with `param: null`)."""
    answer = post(gateway, {"model": "smart", "input": [{"role": "user", "content": 5}]})
    assert answer.status_code == 400, (answer.status_code, answer.headers.get("x-gateway-model"))
    assert answer.json()["error"]["param"] == "input.0.content"
    assert mock.calls() == []


def test_an_input_text_of_a_wrong_type_names_the_input_field_not_chats(
        gateway: str, mock: MockProvider) -> None:
    """The client sent `input`; an error naming `messages` (the translation's chat body)
    points at a field it never wrote."""
    answer = post(gateway, {"model": "claudeonly", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": 5}]}]})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert str(error["param"]).startswith("input"), error
    assert "messages" not in error["message"], error["message"]


def test_an_error_quoting_a_long_response_id_is_cut(gateway: str) -> None:
    """README, Errors: what the client sent is quoted at most 128 characters, then
    `… (N characters)`."""
    headers = {"authorization": f"Bearer {KEY}"}
    missing = httpx.get(f"{gateway}/v1/responses/{'x' * 9000}", headers=headers)
    assert missing.status_code == 404
    assert len(missing.json()["error"]["message"]) < 400, len(missing.text)
    stored = post(gateway, {"model": "smart", "input": "keep me"}).json()["id"]
    after = httpx.get(f"{gateway}/v1/responses/{stored}/input_items",
                      params={"after": "a" * 5000}, headers=headers)
    assert after.status_code == 400
    assert len(after.json()["error"]["message"]) < 400, len(after.text)


def test_an_unknown_path_under_responses_lists_the_responses_endpoints(gateway: str) -> None:
    answer = httpx.get(f"{gateway}/v1/responses/resp_1/nothing",
                       headers={"authorization": f"Bearer {KEY}"})
    assert answer.status_code == 404
    assert "/v1/responses" in answer.json()["error"]["message"].split(";", 1)[1]


def final_response(answer: httpx.Response, streamed: bool) -> dict[str, Any]:
    return sse_events(answer.text)[-1]["response"] if streamed else answer.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("tier", ["smart", "fast"])
@pytest.mark.parametrize("streamed", [False, True], ids=["body", "stream"])
def test_a_cache_hit_is_a_response_of_its_own(gateway: str, tier: str, streamed: bool) -> None:
    """Two requests answered from one cache entry are still two responses: each its own id
    (deleting one must not delete the other) and its own bookkeeping (`store`, `metadata`:
    fields the cache does not key on, so the replay must not show the first request's)."""
    headers = {"authorization": f"Bearer {KEY}"}
    asked = {"model": tier, "input": f"rr3 one entry, two responses {tier} {streamed}",
             "stream": streamed}
    first = httpx.post(f"{gateway}/v1/responses", headers=headers, timeout=15,
                       json={**asked, "store": False, "metadata": {"run": "a"}})
    second = httpx.post(f"{gateway}/v1/responses", headers=headers, timeout=15,
                        json={**asked, "metadata": {"run": "b"}})
    assert second.headers["x-gateway-cache"] == "hit"
    one, two = final_response(first, streamed), final_response(second, streamed)
    assert two["store"] is True and two["metadata"] == {"run": "b"}, (two["store"], two["metadata"])
    assert one["id"] != two["id"]
    third = httpx.post(f"{gateway}/v1/responses", headers=headers, json=asked, timeout=15)
    three = final_response(third, streamed)
    assert httpx.delete(f"{gateway}/v1/responses/{two['id']}", headers=headers).status_code == 200
    assert httpx.get(f"{gateway}/v1/responses/{three['id']}", headers=headers).status_code == 200


def test_reasoning_effort_reaches_claude_as_thinking(gateway: str, mock: MockProvider) -> None:
    """README: the translation carries `reasoning.effort`. Claude is sent nothing of it
    (no `thinking`), so a client asking for high effort gets an answer without reasoning."""
    answer = post(gateway, {"model": "claudeonly", "input": "Think hard: 17 * 23?",
                            "reasoning": {"effort": "high", "summary": "auto"}})
    assert answer.status_code == 200
    [sent] = mock.calls()
    assert (sent.body.get("thinking") or {}).get("type") in ("enabled", "adaptive"), sent.body
    assert [item["type"] for item in answer.json()["output"]][0] == "reasoning"


WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


@pytest.mark.parametrize("tier", ["smart", "fast"])
def test_input_items_are_items_the_sdk_types_accept(gateway: str, tier: str) -> None:
    """GET /v1/responses/{id}/input_items must list items as OpenAI does: an assistant
    message and a function_call_output each with its `status` (the SDK's ResponseItemList
    requires it). tests/openai_conformance.py does not look at this path (its OPENAI_PATH
    stops at /v1/responses), so the SDK's own types check each item here."""
    headers = {"authorization": f"Bearer {KEY}"}
    first = post(gateway, {"model": tier, "tools": [WEATHER], "tool_choice": "required", "input": [
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Hello.", "annotations": []}]},
        {"role": "user", "content": "Weather in Paris?"}]}).json()
    [call] = [item for item in first["output"] if item["type"] == "function_call"]
    second = post(gateway, {"model": tier, "tools": [WEATHER], "previous_response_id": first["id"],
                            "input": [{"type": "function_call_output", "call_id": call["call_id"],
                                       "output": "sunny"}]}).json()
    listed = httpx.get(f"{gateway}/v1/responses/{second['id']}/input_items", headers=headers)
    assert listed.status_code == 200
    assert [item["type"] for item in listed.json()["data"]] == [
        "function_call_output", "function_call", "message", "message"]
    problems = [f"{item['type']}/{item.get('role')}: {error['loc']} {error['msg']}"
                for item in listed.json()["data"]
                for error in item_errors(item)]
    assert problems == []


def item_errors(item: dict[str, Any]) -> list[Any]:
    """What the SDK's type for this item refuses in it (one type per item, so the errors
    name the item's own fields rather than every member of the union)."""
    import pydantic
    from openai.types.responses import (ResponseFunctionToolCallItem,
                                        ResponseFunctionToolCallOutputItem,
                                        ResponseInputMessageItem, ResponseOutputMessage)
    kind: type[pydantic.BaseModel] = {
        "function_call": ResponseFunctionToolCallItem,
        "function_call_output": ResponseFunctionToolCallOutputItem,
    }.get(item["type"]) or (ResponseOutputMessage if item.get("role") == "assistant"
                            else ResponseInputMessageItem)
    try:
        kind.model_validate(item)
    except pydantic.ValidationError as refused:
        return refused.errors()
    return []
