"""Red team (rr3) on the Responses API surface: wire format and faults.

Every test starts real processes (a gateway on a real Redis, the mock provider speaking
OpenAI's and Anthropic's wire formats) and drives them with the official `openai` SDK or
raw httpx, as a hostile tenant, Codex, or a client behind a broken provider would.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pydantic
import pytest
from openai.types.responses import (
    ResponseFunctionToolCallItem,
    ResponseFunctionToolCallOutputItem,
    ResponseInputMessageItem,
    ResponseOutputMessage,
)

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import RedisServer, serving, sha

KEY = "sk-test-rr3-team"
OTHER = "sk-test-rr3-other"
NEARLY = "sk-test-rr3-nearly"
POOR = "sk-test-rr3-poor"
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
        f"  brokengpt: {{provider: openai, model: gpt-broken, {PRICE}}}",
        "tiers:",
        "  fast: [gpt, claude]",
        "  smart: [claude, gpt]",
        "  native: [brokengpt, claude]",
        "  nativeonly: [brokengpt]",
        "  claudeonly: [claude]",
        "keys:",
        f"  - {{name: rr3-team, key_sha256: {sha(KEY)}, daily_budget_usd: 100}}",
        f"  - {{name: rr3-other, key_sha256: {sha(OTHER)}, daily_budget_usd: 100}}",
        f"  - {{name: rr3-nearly, key_sha256: {sha(NEARLY)}, daily_budget_usd: 0.0002}}",
        f"  - {{name: rr3-poor, key_sha256: {sha(POOR)}, daily_budget_usd: 0.002}}",
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


def test_a_function_call_item_without_its_call_id_is_a_400_naming_it(
        gateway: str, mock: MockProvider) -> None:
    """OpenAI refuses it (missing_required_parameter); through the translation Claude is
    sent a tool_use with id "", which Anthropic refuses, and a later function_call_output
    can never be matched to it."""
    answer = post(gateway, {"model": "claudeonly", "input": [
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "name": "get_weather", "arguments": "{}"}]})
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
    types: dict[str, type[pydantic.BaseModel]] = {
        "function_call": ResponseFunctionToolCallItem,
        "function_call_output": ResponseFunctionToolCallOutputItem}
    kind = types.get(item["type"]) or (ResponseOutputMessage if item.get("role") == "assistant"
                                       else ResponseInputMessageItem)
    try:
        kind.model_validate(item)
    except pydantic.ValidationError as refused:
        return refused.errors()
    return []


# --- a broken native provider (OpenAI's /v1/responses): attacks that held, kept as coverage
# (no other test scripts a broken Responses upstream).

def event(data: dict[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: ".encode() + json.dumps(data).encode() + b"\n\n"


UPSTREAM = {"id": "resp_upstream1", "object": "response", "created_at": 1, "status": "in_progress",
            "model": "gpt-broken", "output": [], "parallel_tool_calls": True,
            "tool_choice": "auto", "tools": [], "error": None, "incomplete_details": None,
            "instructions": None, "metadata": {}, "temperature": 1, "top_p": 1}
OPENED = (event({"type": "response.created", "sequence_number": 0, "response": UPSTREAM})
          + event({"type": "response.in_progress", "sequence_number": 1, "response": UPSTREAM}))
FIRST_TOKEN = (
    event({"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
           "item": {"type": "message", "id": "msg_up", "role": "assistant",
                    "status": "in_progress", "content": []}})
    + event({"type": "response.content_part.added", "sequence_number": 3, "output_index": 0,
             "content_index": 0, "item_id": "msg_up",
             "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})
    + event({"type": "response.output_text.delta", "sequence_number": 4, "output_index": 0,
             "content_index": 0, "item_id": "msg_up", "delta": "Hel", "logprobs": []}))
FAILED = event({"type": "response.failed", "sequence_number": 5, "response": {
    **UPSTREAM, "status": "failed", "error": {"code": "server_error", "message": "broke"}}})
ERROR = event({"type": "error", "sequence_number": 0, "code": "server_error",
               "message": "boom", "param": None})

BEFORE_FIRST_TOKEN = {
    "malformed_sse": b"data: {not json\n\n",
    "error_event": ERROR,
    "response_failed": OPENED + FAILED,
    "no_terminal_event": OPENED,
    "json_body_on_a_stream": b'{"hello": 1}',
    "empty": b"",
}


@pytest.mark.parametrize("broken", BEFORE_FIRST_TOKEN)
def test_a_native_stream_broken_before_its_first_token_falls_back_as_one_stream(
        gateway: str, mock: MockProvider, broken: str) -> None:
    mock.script("gpt-broken", Step(raw=BEFORE_FIRST_TOKEN[broken]))
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0) as client, \
            client.responses.stream(model="native", input="Hello there",
                                    extra_headers=NOCACHE) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds.count("response.created") == 1 and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.model == "claude" and "Hello there" in final.output_text


AFTER_FIRST_TOKEN = {
    "response_failed": OPENED + FIRST_TOKEN + FAILED,
    "error_event": OPENED + FIRST_TOKEN + ERROR,
    "no_terminal_event": OPENED + FIRST_TOKEN,
}


@pytest.mark.parametrize("broken", AFTER_FIRST_TOKEN)
def test_a_native_stream_broken_after_its_first_token_ends_with_response_failed(
        gateway: str, mock: MockProvider, broken: str) -> None:
    mock.script("gpt-broken", Step(raw=AFTER_FIRST_TOKEN[broken]))
    answer = post(gateway, {"model": "native", "input": "hi", "stream": True})
    events = sse_events(answer.text)
    assert [e["type"] for e in events][-2:] == ["response.output_text.delta", "response.failed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["response"]["error"]["code"] == "server_error"
    # README: OpenAI's events as sent "but for model": the gateway's name, never OpenAI's id
    assert {e["response"]["model"] for e in events if "response" in e} == {"brokengpt"}
    assert healthy(gateway)


@pytest.mark.parametrize("body", [b'{"hello": 1}', b"[]", b"<html>oops</html>", json.dumps(
    {**UPSTREAM, "status": "failed", "error": {"code": "server_error", "message": "x"}}).encode()],
    ids=["not_a_response", "a_list", "html", "a_failed_response"])
def test_a_native_body_that_is_not_a_completed_response_falls_back(
        gateway: str, mock: MockProvider, body: bytes) -> None:
    mock.script("gpt-broken", Step(raw=body))
    answer = post(gateway, {"model": "native", "input": "Hello there"})
    assert answer.status_code == 200 and answer.headers["x-gateway-model"] == "claude"
    assert "Hello there" in answer.json()["output"][0]["content"][0]["text"]


@pytest.mark.parametrize("tier,model", [("claudeonly", "claude-sonnet-4-5"),
                                        ("fast", "gpt-4o-mini")])
def test_a_store_that_stalls_mid_stream_ends_it_with_response_failed(
        mock: MockProvider, tmp_path: Path, tier: str, model: str) -> None:
    """The response is written before the last event: a Redis that stops answering while
    the answer streams must end it with response.failed, in bounded time, not a completed
    response nobody can continue."""
    redis = RedisServer(tmp_path, debug=True).start()
    config = router_yaml(mock.base_url, redis.url, tmp_path).replace(  # type: ignore[attr-defined]
        "  cache: {enabled: true}", "  cache: {enabled: false}")
    stall = threading.Thread(target=stall_redis, args=(redis.port, 6))
    try:
        with serving(tmp_path, config) as url:
            mock.script(model, Step(text="one two three four five six seven eight",
                                    chunk_delay_s=0.15))
            started = time.monotonic()
            lines = []
            with httpx.stream("POST", f"{url}/v1/responses", timeout=30,
                              json={"model": tier, "input": "slow", "stream": True},
                              headers={"authorization": f"Bearer {KEY}"}) as answer:
                for line in answer.iter_lines():
                    lines.append(line)
                    if "response.output_text.delta" in line and not stall.is_alive():
                        stall.start()
            took = time.monotonic() - started
        events = sse_events("\n".join(lines))
        assert events[-1]["type"] == "response.failed"
        assert "response.completed" not in [e["type"] for e in events]
        assert "could not be stored" in events[-1]["response"]["error"]["message"]
        assert took < 10
    finally:
        if stall.is_alive():
            stall.join(10)
        redis.kill()


def stall_redis(port: int, seconds: int) -> None:
    """DEBUG SLEEP: the server stops answering anyone for `seconds`."""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds + 5) as connection:
        connection.sendall(f"DEBUG SLEEP {seconds}\r\n".encode())
        connection.recv(64)



@pytest.mark.parametrize("code,as_event", [("invalid_prompt", "response.failed"),
                                           ("rate_limit_exceeded", "error")])
def test_a_native_failure_after_the_first_token_keeps_openais_error_code(
        gateway: str, mock: MockProvider, code: str, as_event: str) -> None:
    """OpenAI's codes say whether trying again can help: `invalid_prompt` (the prompt was
    refused: retrying fails again) and `rate_limit_exceeded` (retry, later). Both are in the
    API's ResponseErrorCode enum, so the client's response.failed can carry them as sent;
    the gateway turns them into `server_error` (an `invalid_prompt` in response.failed, a
    rate limit in an `error` event), and a client such as Codex retries what will never
    pass, or retries a rate limit at once."""
    failure = (event({"type": "response.failed", "sequence_number": 5, "response": {
        **UPSTREAM, "status": "failed", "error": {"code": code, "message": "refused"}}})
        if as_event == "response.failed" else
        event({"type": "error", "sequence_number": 5, "code": code, "message": "refused",
               "param": None}))
    mock.script("gpt-broken", Step(raw=OPENED + FIRST_TOKEN + failure))
    answer = post(gateway, {"model": "nativeonly", "input": "hi", "stream": True})
    last = sse_events(answer.text)[-1]
    assert last["type"] == "response.failed"
    assert last["response"]["error"]["code"] == code, last["response"]["error"]


OPERATORS_SECRET = ("Incorrect API key provided: sk-live-abcdefghijklmnopqrstuvwx1234 for "
                    "account acct_operator_42")
FAILED_WITH_SECRET = {**UPSTREAM, "status": "failed",
                      "error": {"code": "server_error", "message": OPERATORS_SECRET}}


@pytest.mark.parametrize("streamed,raw", [
    (True, OPENED + FIRST_TOKEN + event({"type": "response.failed", "sequence_number": 5,
                                         "response": FAILED_WITH_SECRET})),
    (True, OPENED + event({"type": "response.failed", "sequence_number": 2,
                           "response": FAILED_WITH_SECRET})),
    (False, json.dumps(FAILED_WITH_SECRET).encode()),
], ids=["stream_after_first_token", "stream_before_first_token", "body"])
def test_what_a_native_provider_said_in_a_failed_response_stays_with_the_operator(
        gateway: str, mock: MockProvider, streamed: bool, raw: bytes) -> None:
    """README, Errors: a provider's own text can quote the operator's key or account, so
    tenants get a reason of the gateway's (an `error` event already is). A failed response
    from OpenAI's /v1/responses reaches the tenant word for word instead: in the
    response.failed it relays, and in the 502 when it came before the first token."""
    mock.script("gpt-broken", Step(raw=raw))
    answer = post(gateway, {"model": "nativeonly", "input": "hi", "stream": streamed})
    assert answer.status_code in (200, 502)
    assert "sk-live" not in answer.text and "acct_operator_42" not in answer.text, \
        answer.text[-300:]
