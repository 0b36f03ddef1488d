"""OpenAI's Responses API inbound (POST /v1/responses), through the official `openai` SDK.

Two tiers: `fast` starts with an OpenAI model (the body goes to OpenAI's /v1/responses
as the client wrote it), `smart` with a Claude model (translated onto chat, and on to
Anthropic). Each is driven as an SDK client drives it: create, stream, a tool round
trip, structured output, previous_response_id; and the gateway's promises hold on this
surface too: conversation state written before the last event (read at once from
another replica), a key reading only its own responses, store: false storing nothing,
money, the cache's replay as events, errors in OpenAI's shape. Every body and event the
SDK receives is checked against OpenAI's OpenAPI description (conftest's autouse check).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import RedisServer, serving, sha, usage_lines_of

KEY = "sk-test-responses-team"
OTHER = "sk-test-responses-other"
TINY = "sk-test-responses-tiny"
NEARLY = "sk-test-responses-nearly"
POOR = "sk-test-responses-poor"
PRICE = "price: {input_per_mtok: 1, output_per_mtok: 2}"
TIERS = [("fast", "gpt"), ("smart", "claude")]
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}


def router_yaml(mock_url: str, redis_url: str, tmp: Path) -> str:
    return "\n".join([
        "providers:",
        f"  anthropic: {{api_key: sk-ant-test, api_base: '{mock_url}'}}",
        f"  openai: {{api_key: sk-openai-test, api_base: '{mock_url}/v1'}}",
        "models:",
        f"  claude: {{provider: anthropic, model: claude-sonnet-4-5, {PRICE}}}",
        f"  gpt: {{provider: openai, model: gpt-4o-mini, {PRICE}}}",
        f"  gpt-down: {{provider: openai, model: gpt-down, {PRICE}}}",
        "tiers:",
        "  fast: [gpt, claude]",
        "  smart: [claude, gpt]",
        "  across: [gpt-down, claude]",
        "keys:",
        f"  - {{name: resp-team, key_sha256: {sha(KEY)}, daily_budget_usd: 100}}",
        f"  - {{name: resp-other, key_sha256: {sha(OTHER)}, daily_budget_usd: 100}}",
        f"  - {{name: resp-tiny, key_sha256: {sha(TINY)}, daily_budget_usd: 0.000001}}",
        f"  - {{name: resp-nearly, key_sha256: {sha(NEARLY)}, daily_budget_usd: 0.0002}}",
        f"  - {{name: resp-poor, key_sha256: {sha(POOR)}, daily_budget_usd: 0.05}}",
        "settings:",
        f"  redis_url: '{redis_url}'",
        f"  usage_log: {tmp}/usage.jsonl",
        "  cache: {enabled: true}",
        "  retry: {max_retries: 0}",
        "  cooldown: {after_failures: 1000, for_s: 0}",
        "  timeouts: {connect_s: 2, first_token_s: 5, total_s: 20}",
    ]) + "\n"


@pytest.fixture(scope="module")
def replicas(mock: MockProvider, redis_server: RedisServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """Two gateway processes on one Redis, as two replicas behind a load balancer."""
    tmp, tmp2 = tmp_path_factory.mktemp("responses"), tmp_path_factory.mktemp("responses2")
    config = router_yaml(mock.base_url, redis_server.url, tmp)  # type: ignore[attr-defined]
    with serving(tmp, config) as one, serving(tmp2, config) as two:
        yield one, two, tmp


@pytest.fixture
def gateway(replicas: tuple[str, str, Path]) -> str:
    return replicas[0]


def sdk(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


@pytest.fixture
def client(gateway: str) -> Iterator[openai.OpenAI]:
    with sdk(gateway) as made:
        yield made


NOCACHE = {"cache-control": "no-store"}


def input_texts(body: dict[str, Any]) -> str:
    """Everything a provider was sent as the conversation, as one string to search."""
    return json.dumps([body.get("input"), body.get("messages"), body.get("system")])


@pytest.mark.parametrize("tier,model", TIERS)
def test_create_answers_a_response_the_sdk_parses(client: openai.OpenAI, mock: MockProvider,
                                                  tier: str, model: str) -> None:
    raw = client.responses.with_raw_response.create(
        model=tier, instructions="Be brief.", input="Name a colour", extra_headers=NOCACHE)
    response = raw.parse()
    assert raw.headers["x-gateway-model"] == model
    assert response.object == "response" and response.status == "completed"
    assert "Name a colour" in response.output_text
    assert response.usage is not None and response.usage.input_tokens > 0
    assert response.usage.output_tokens == mock.last_answer().output_tokens
    [received] = mock.calls()
    if model == "gpt":  # native: OpenAI gets the body as written, but for the model and
        assert received.path == "/v1/responses"  # the output limit the budget reserved
        assert received.body == {"model": "gpt-4o-mini", "instructions": "Be brief.",
                                 "input": "Name a colour", "max_output_tokens": 16384}
    else:
        assert received.path == "/v1/messages"


@pytest.mark.parametrize("tier,model", TIERS)
def test_stream_is_the_full_event_sequence(client: openai.OpenAI, tier: str,
                                           model: str) -> None:
    with client.responses.stream(model=tier, input="Stream a sentence",
                                 extra_headers=NOCACHE) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    for needed in ("response.output_item.added", "response.content_part.added",
                   "response.output_text.delta", "response.output_text.done",
                   "response.content_part.done", "response.output_item.done"):
        assert needed in kinds, needed
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "Stream a sentence" in final.output_text
    assert final.usage is not None and final.usage.output_tokens > 0


@pytest.mark.parametrize("tier,model", TIERS)
def test_tool_round_trip_with_previous_response_id(client: openai.OpenAI, mock: MockProvider,
                                                   tier: str, model: str) -> None:
    first = client.responses.create(
        model=tier, tools=[WEATHER], extra_headers=NOCACHE,
        input='What is the weather? mock:tool get_weather {"city": "Paris"}')
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    mock.reset()
    second = client.responses.create(
        model=tier, tools=[WEATHER], previous_response_id=first.id, extra_headers=NOCACHE,
        input=[{"type": "function_call_output", "call_id": call.call_id,
                "output": "Sunny, 21C"}])
    assert second.previous_response_id == first.id
    assert "Sunny, 21C" in second.output_text  # the mock answers with the tool's result
    [received] = mock.calls()
    sent = input_texts(received.body)
    assert "What is the weather?" in sent and "Sunny, 21C" in sent  # the whole conversation
    assert "previous_response_id" not in received.body  # the gateway's, expanded


@pytest.mark.parametrize("tier,model", TIERS)
def test_structured_output(client: openai.OpenAI, tier: str, model: str) -> None:
    schema = {"type": "object", "properties": {"colour": {"type": "string"}},
              "required": ["colour"], "additionalProperties": False}
    response = client.responses.create(
        model=tier, input="Pick a colour", extra_headers=NOCACHE,
        text={"format": {"type": "json_schema", "name": "pick", "schema": schema,
                         "strict": True}})
    assert set(json.loads(response.output_text)) == {"colour"}


def test_conversation_survives_a_fallback_to_another_provider(
        client: openai.OpenAI, mock: MockProvider) -> None:
    first = client.responses.create(model="fast", input="My name is Ada.",
                                    extra_headers=NOCACHE)
    assert first.model == "gpt"
    mock.reset()
    mock.script("gpt-down", Step(status=503))
    second = client.responses.create(model="across", input="What is my name?",
                                     previous_response_id=first.id, extra_headers=NOCACHE)
    assert second.model == "claude"
    [*_, received] = mock.calls()
    assert received.path == "/v1/messages"
    assert "My name is Ada." in input_texts(received.body)
    assert first.output_text in input_texts(received.body)  # its answer came along too
    # and back from the translated turn to OpenAI: the gateway's ids are not sent to it
    mock.reset()
    third = client.responses.create(model="fast", input="And again?",
                                    previous_response_id=second.id, extra_headers=NOCACHE)
    assert third.model == "gpt"
    [received] = mock.calls()
    items = received.body["input"]
    assert not [i for i in items if "_gw_" in str(i.get("id", ""))]
    assert "My name is Ada." in json.dumps(items)


def test_stored_before_the_last_event_another_replica_continues_at_once(
        replicas: tuple[str, str, Path], mock: MockProvider) -> None:
    one, two, _ = replicas
    with sdk(one) as first_client, sdk(two) as second_client, first_client.responses.stream(
            model="smart", input="Remember: the word is kiwi.", extra_headers=NOCACHE) as stream:
        for event in stream:
            if event.type == "response.completed":  # at once, on the other replica
                second = second_client.responses.create(
                    model="smart", input="Which word?", extra_headers=NOCACHE,
                    previous_response_id=event.response.id)
                break
    assert second.status == "completed"
    assert "Remember: the word is kiwi." in input_texts(mock.calls()[-1].body)


def test_retrieve_input_items_delete(client: openai.OpenAI) -> None:
    first = client.responses.create(model="fast", input="One", extra_headers=NOCACHE)
    second = client.responses.create(model="fast", input="Two", previous_response_id=first.id,
                                     extra_headers=NOCACHE)
    got = client.responses.retrieve(second.id)
    assert got.id == second.id and got.output_text == second.output_text
    assert got.previous_response_id == first.id
    page = client.responses.input_items.list(second.id, order="asc")
    texts = [json.dumps(item.model_dump()) for item in page.data]
    assert len(texts) == 3 and "One" in texts[0] and "Two" in texts[2]  # with first's answer
    assert all(item.id for item in page.data)
    newest = client.responses.input_items.list(second.id, limit=1)
    assert len(newest.data) == 1 and newest.has_more and "Two" in json.dumps(
        newest.data[0].model_dump())
    client.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)
    with pytest.raises(openai.BadRequestError):  # a deleted turn cannot be continued
        client.responses.create(model="smart", input="Three", previous_response_id=second.id,
                                extra_headers=NOCACHE)


@pytest.mark.parametrize("tier,model", TIERS)
def test_a_key_reads_and_continues_only_its_own(gateway: str, mock: MockProvider,
                                                tier: str, model: str) -> None:
    with sdk(gateway) as team, sdk(gateway, OTHER) as other:
        mine = team.responses.create(model=tier, input="The secret is 4711.",
                                     extra_headers=NOCACHE)
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.input_items.list(mine.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(mine.id)
        mock.reset()
        for asked in ("fast", "smart"):  # refused, even to OpenAI, which would answer it
            with pytest.raises(openai.BadRequestError):
                other.responses.create(model=asked, input="What is the secret?",
                                       previous_response_id=mine.id, extra_headers=NOCACHE)
        assert not mock.calls()
        assert team.responses.retrieve(mine.id).id == mine.id  # still the owner's


def test_store_false_stores_nothing(client: openai.OpenAI) -> None:
    response = client.responses.create(model="smart", input="Forget me", store=False,
                                       extra_headers=NOCACHE)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="smart", input="Again", store=False,
                                previous_response_id=response.id, extra_headers=NOCACHE)
    assert response.id in refused.value.message


def test_cache_hit_replays_as_events(client: openai.OpenAI) -> None:
    asked: dict[str, Any] = {"model": "smart", "input": "Cache me", "store": False}
    first = client.responses.create(**asked)
    raw = client.responses.with_raw_response.create(**asked, stream=True)
    assert raw.headers["x-gateway-cache"] == "hit"
    events = list(raw.parse())
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == first.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_budget_refusal_and_cut(gateway: str, mock: MockProvider) -> None:
    with sdk(gateway, TINY) as tiny, pytest.raises(openai.RateLimitError) as refused:
        tiny.responses.create(model="smart", input="Hello", extra_headers=NOCACHE)
    assert refused.value.response.headers.get("x-should-retry") == "false"
    assert refused.value.code == "budget_exceeded"
    mock.script("claude-sonnet-4-5", Step(text="word " * 400, ignore_limit=True))
    with sdk(gateway, NEARLY) as nearly, nearly.responses.stream(
            model="smart", input="Write at length", extra_headers=NOCACHE) as stream:
        events = list(stream)
    assert events[-1].type == "response.incomplete"
    final = events[-1].response
    assert final.incomplete_details is not None
    assert final.incomplete_details.reason == "max_output_tokens"
    assert final.usage is not None and 0 < final.usage.output_tokens < 400
    with sdk(gateway, NEARLY) as nearly:
        budget = nearly.get("/budget", cast_to=httpx.Response).json()
    assert budget["spent_usd"] <= 0.0002


def test_errors_are_openai_shaped(gateway: str, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="fast", input=7, extra_headers=NOCACHE)  # type: ignore[arg-type]
    assert refused.value.param == "input"
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="fast", input="x", conversation="conv_1",
                                extra_headers=NOCACHE)
    assert "previous_response_id" in refused.value.message
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-tier", input="x")
    socket = httpx.get(f"{gateway}/v1/responses", headers={
        "authorization": f"Bearer {KEY}", "connection": "Upgrade", "upgrade": "websocket",
        "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert socket.status_code == 426 and "POST /v1/responses" in socket.json()["error"]["message"]


def test_usage_log_names_the_surface(replicas: tuple[str, str, Path],
                                     client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(model="fast", input="Log me",
                                                    extra_headers=NOCACHE)
    [line] = usage_lines_of(replicas[2] / "usage.jsonl", raw.headers["x-request-id"], 3)
    assert line["surface"] == "responses" and line["model"] == "gpt"
    assert line["output_tokens"] > 0 and line["status"] == 200


def test_expiry_and_a_store_that_cannot_keep_the_response(
        mock: MockProvider, tmp_path: Path) -> None:
    """settings.responses.ttl_s bounds how long a response can be continued; a response that
    cannot be stored is not sent as if it had been (stored is what store: true promises)."""
    redis = RedisServer(tmp_path).start()
    config = router_yaml(mock.base_url, redis.url, tmp_path).replace(  # type: ignore[attr-defined]
        "  cache: {enabled: true}", "  cache: {enabled: false}\n  responses: {ttl_s: 1}")
    config = config.replace("daily_budget_usd: 100}", "}")  # no budget: the store is optional
    try:
        with serving(tmp_path, config) as url, sdk(url) as client:
            kept = client.responses.create(model="fast", input="Brief")
            assert client.responses.retrieve(kept.id).id == kept.id
            time.sleep(2.1)
            with pytest.raises(openai.NotFoundError):
                client.responses.retrieve(kept.id)
            redis.kill()
            with pytest.raises(openai.InternalServerError) as refused:
                client.responses.create(model="fast", input="Keep me")
            assert refused.value.status_code == 503
            assert "could not be stored" in refused.value.message
            with client.responses.stream(model="smart", input="Keep me too") as stream:
                kinds = [event.type for event in stream]
            assert kinds[-1] == "response.failed" and "response.completed" not in kinds
            unkept = client.responses.create(model="smart", input="Nothing to keep",
                                             store=False)
            assert unkept.status == "completed"  # store: false needs no store
    finally:
        redis.kill()


@pytest.mark.parametrize("tier,model", TIERS)
def test_item_references_resolve_for_their_key_only(gateway: str, mock: MockProvider,
                                                    tier: str, model: str) -> None:
    """The Vercel AI SDK sends an earlier answer back as {"type": "item_reference", "id"}:
    the item is taken from the store, for any model of the chain (here: the other kind)."""
    with sdk(gateway) as team, sdk(gateway, OTHER) as other:
        first = team.responses.create(model=tier, input="Remember: 8086.", extra_headers=NOCACHE)
        [said] = [item for item in first.output if item.type == "message"]
        mock.reset()
        then = "smart" if tier == "fast" else "fast"
        second = team.responses.create(model=then, extra_headers=NOCACHE, input=[
            {"role": "user", "content": "Remember: 8086."},
            {"type": "item_reference", "id": said.id},
            {"role": "user", "content": "What was it?"}])
        assert second.status == "completed"
        [received] = mock.calls()
        assert first.output_text in input_texts(received.body)
        assert "item_reference" not in input_texts(received.body)
        mock.reset()  # another key is told it has no such item, even one OpenAI made (OpenAI
        for asked in ("fast", "smart"):  # itself would answer it for anyone of the account)
            with pytest.raises(openai.BadRequestError) as refused:
                other.responses.create(model=asked, extra_headers=NOCACHE, input=[
                    {"type": "item_reference", "id": said.id}])
            assert "item_reference" in refused.value.message
        assert not mock.calls()


def searched_stream(searches: int) -> bytes:
    """OpenAI's stream for an answer that ran `searches` web searches, then said a sentence."""
    from gateway.providers.responses_translate import skeleton

    opened = skeleton({"tools": [{"type": "web_search"}]}, "gpt-4o-mini", "resp_ws", 1)
    calls = [{"type": "web_search_call", "id": f"ws_{i}", "status": "completed",
              "action": {"type": "search", "query": f"weather {i}"}} for i in range(searches)]
    said = {"type": "message", "id": "msg_ws", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": "Sunny.", "annotations": [],
                         "logprobs": []}]}
    events: list[dict[str, Any]] = [{"type": "response.created", "response": opened}]
    for index, item in enumerate([*calls, said]):
        events += [{"type": "response.output_item.added", "output_index": index, "item": item},
                   {"type": "response.output_item.done", "output_index": index, "item": item}]
    events.append({"type": "response.completed", "response": {
        **opened, "status": "completed", "output": [*calls, said],
        "usage": {"input_tokens": 100,
                  "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                  "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": 120}}})
    return b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(
        {**e, "sequence_number": n}).encode()) for n, e in enumerate(events))


def test_web_searches_are_charged_where_they_run(replicas: tuple[str, str, Path],
                                                 mock: MockProvider) -> None:
    """OpenAI bills each web_search_call apart from tokens: charged to the key. A translated
    model drops the tool, so a key too poor for ten searches is still served by one."""
    gateway, _, tmp = replicas
    mock.script("gpt-4o-mini", Step(raw=searched_stream(3)))
    with sdk(gateway) as client:
        raw = client.responses.with_raw_response.create(
            model="fast", input="Weather?", tools=[{"type": "web_search"}], stream=True,
            extra_headers=NOCACHE)
        kinds = [event.type for event in raw.parse()]
    assert kinds[-1] == "response.completed"
    [line] = usage_lines_of(tmp / "usage.jsonl", raw.headers["x-request-id"], 3)
    assert line["cost_usd"] >= 3 * 10 / 1000  # $10 per 1,000 searches
    with sdk(gateway, POOR) as poor:  # $0.05 left: not ten searches' worth
        served = poor.responses.create(model="smart", input="Weather?", max_output_tokens=20,
                                       tools=[{"type": "web_search"}], extra_headers=NOCACHE)
    assert served.model == "claude" and served.status in ("completed", "incomplete")


def test_a_response_openai_made_outside_the_gateway_is_continued_by_openai(
        client: openai.OpenAI, mock: MockProvider) -> None:
    """An id the gateway never stored is OpenAI's to resolve: passed to an OpenAI model as is,
    and a translated model (which cannot) is skipped for it."""
    made = httpx.post(f"{mock.base_url}/v1/responses", json={  # type: ignore[attr-defined]
        "model": "gpt-4o-mini", "input": "My code is 99."}).json()
    alone = client.responses.create(model="fast", input="What is my code?",
                                    extra_headers=NOCACHE)
    for tier in ("fast", "smart"):
        mock.reset()
        answer = client.responses.create(model=tier, input="What is my code?",
                                         previous_response_id=made["id"], extra_headers=NOCACHE)
        assert answer.model == "gpt" and answer.previous_response_id == made["id"]
        [received] = mock.calls()
        assert received.path == "/v1/responses"
        assert received.body["previous_response_id"] == made["id"]
        assert answer.usage is not None and alone.usage is not None  # OpenAI had the
        assert answer.usage.input_tokens > alone.usage.input_tokens  # conversation


@pytest.mark.parametrize("tier,model", TIERS)
def test_input_tokens_are_counted_with_the_conversation(
        replicas: tuple[str, str, Path], client: openai.OpenAI, mock: MockProvider,
        tier: str, model: str) -> None:
    """POST /v1/responses/input_tokens (the SDK's responses.input_tokens.count): the gateway's
    count, which its budgets use, of the input a create would send; no model is called."""
    alone = client.responses.input_tokens.count(model=tier, input="How long is this?")
    assert alone.object == "response.input_tokens" and alone.input_tokens > 0
    first = client.responses.create(model=tier, input="Remember a long sentence. " * 20,
                                    extra_headers=NOCACHE)
    mock.reset()
    raw = client.responses.input_tokens.with_raw_response.count(
        model=tier, input="How long is this?", previous_response_id=first.id)
    assert raw.parse().input_tokens > alone.input_tokens + 100  # the conversation counts
    assert not mock.calls()
    [line] = usage_lines_of(replicas[2] / "usage.jsonl", raw.headers["x-request-id"], 3)
    assert line["surface"] == "responses.input_tokens" and line["model"] == model
    assert line["cost_usd"] in (None, 0)
