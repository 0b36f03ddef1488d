"""The response cache, end to end, on a real Redis and on the embedded store."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import KEY_A, KEY_B, RedisServer, gateway_running, sha, start_gateway

TTL_S = 3600
ROUTER_YAML = """\
providers:
  openai:    {{api_key: sk-openai-test, api_base: "{mock}/v1"}}
  anthropic: {{api_key: sk-ant-test, api_base: "{mock}"}}
models:
  gpt:    {{provider: openai, model: gpt-4o-mini}}
  claude: {{provider: anthropic, model: claude-sonnet-4-5}}
  embed:  {{provider: openai, model: text-embedding-3-small}}
tiers:
  fast:  [gpt]
  smart: [claude]
keys:
  - {{name: team-a, key_sha256: {digest_a}}}
  - {{name: team-b, key_sha256: {digest_b}}}
settings:
  retry: {{max_retries: 0}}
  timeouts: {{connect_s: 2, first_token_s: 5, total_s: 10}}
  cache: {{enabled: true, ttl_s: {ttl}}}
  data_dir: {tmp}/data
  usage_log: {tmp}/usage.jsonl
{store}"""

# router.yaml model -> the provider model id the mock sees
PROVIDER_MODEL = {"fast": "gpt-4o-mini", "gpt": "gpt-4o-mini", "smart": "claude-sonnet-4-5"}


class CachedGateway:
    def __init__(self, base_url: str, store_url: str):
        self.base_url = base_url
        self.store_url = store_url


@pytest.fixture(scope="module", params=["redis", "embedded"])
def cached(request: pytest.FixtureRequest, mock: MockProvider,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[CachedGateway]:
    tmp = tmp_path_factory.mktemp(f"cache-{request.param}")
    if request.param == "redis":
        store_url = request.getfixturevalue("redis_server").url
        store = f'  redis_url: "{store_url}"\n'
    else:
        store_url, store = f"unix://{tmp}/data/redis.sock", ""
    config = tmp / "router.yaml"
    config.write_text(ROUTER_YAML.format(mock=mock.base_url, digest_a=sha(KEY_A),  # type: ignore[attr-defined]
                                         digest_b=sha(KEY_B), tmp=tmp, ttl=TTL_S, store=store))
    with gateway_running(config, tmp / "gateway.log") as base_url:
        yield CachedGateway(base_url, store_url)


@pytest.fixture
def client(cached: CachedGateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{cached.base_url}/v1", api_key=KEY_A, max_retries=0) as made:
        yield made


def fresh() -> str:
    """A prompt no other test sends: entries never leak between tests."""
    return f"Tell me about {uuid.uuid4().hex}"


def ask(client: openai.OpenAI, content: str, model: str = "fast",
        **options: Any) -> tuple[str | None, httpx.Headers]:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], **options)
    return raw.parse().choices[0].message.content, raw.headers


def ask_streamed(client: openai.OpenAI, content: str, model: str = "fast",
                 **options: Any) -> tuple[str, httpx.Headers]:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], stream=True, **options)
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    return text, raw.headers


def calls(mock: MockProvider, model: str = "fast") -> int:
    return len(mock.calls(PROVIDER_MODEL[model]))


def test_an_identical_request_is_answered_from_the_cache_without_a_provider_call(
        client: openai.OpenAI, mock: MockProvider) -> None:
    prompt = fresh()
    first, miss = ask(client, prompt)
    second, hit = ask(client, prompt)
    assert (miss["x-gateway-cache"], hit["x-gateway-cache"]) == ("miss", "hit")
    assert second == first
    assert calls(mock) == 1
    assert hit["x-gateway-model"] == "gpt"
    assert hit["x-gateway-attempts"] == "0"
    assert float(hit["x-gateway-cost-usd"]) == 0


@pytest.mark.parametrize("stream_first", [True, False],
                         ids=["stream-then-plain", "plain-then-stream"])
@pytest.mark.parametrize("model", ["fast", "smart"])
def test_streamed_and_plain_requests_share_entries_with_identical_text(
        client: openai.OpenAI, mock: MockProvider, model: str, stream_first: bool) -> None:
    prompt = fresh()
    order = (ask_streamed, ask) if stream_first else (ask, ask_streamed)
    (first, miss), (second, hit) = (send(client, prompt, model) for send in order)
    assert (miss["x-gateway-cache"], hit["x-gateway-cache"]) == ("miss", "hit")
    assert second == first == mock.last_answer().text
    assert calls(mock, model) == 1


def sse_payloads(cached: CachedGateway, body: dict[str, Any]) -> list[str]:
    response = httpx.post(f"{cached.base_url}/v1/chat/completions", json=body,
                          headers={"authorization": f"Bearer {KEY_A}"}, timeout=10)
    assert response.headers["x-gateway-cache"] == "hit"
    assert response.text.endswith("data: [DONE]\n\n")
    events = [e for e in response.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    return [e.removeprefix("data: ") for e in events]


@pytest.mark.parametrize("include_usage", [True, False])
def test_a_replayed_stream_is_valid_sse_in_the_providers_order(
        client: openai.OpenAI, cached: CachedGateway, include_usage: bool) -> None:
    prompt = fresh()
    plain = client.chat.completions.create(model="fast",
                                           messages=[{"role": "user", "content": prompt}])
    body = {"model": "fast", "messages": [{"role": "user", "content": prompt}], "stream": True,
            "stream_options": {"include_usage": include_usage}}
    *chunks, done = sse_payloads(cached, body)
    assert done == "[DONE]"
    parsed = [json.loads(c) for c in chunks]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gpt" for c in parsed)
    assert parsed[0]["choices"][0]["delta"]["role"] == "assistant"
    with_choices = [c for c in parsed if c["choices"]]
    assert with_choices[-1]["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in with_choices)
    assert text == plain.choices[0].message.content
    if include_usage:
        assert parsed[-1]["choices"] == []
        assert plain.usage is not None
        assert parsed[-1]["usage"]["completion_tokens"] == plain.usage.completion_tokens
    else:
        assert all("usage" not in c for c in parsed)


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


@pytest.mark.parametrize("model", ["fast", "smart"])
def test_a_streamed_tool_call_is_replayed_as_the_same_tool_call(
        client: openai.OpenAI, mock: MockProvider, model: str) -> None:
    mock.script(PROVIDER_MODEL[model], Step(tool_call=("get_weather", {"city": "Paris"})))
    messages = [{"role": "user", "content": fresh()}]
    stream = client.chat.completions.create(model=model, messages=messages,  # type: ignore[arg-type]
                                            tools=[WEATHER_TOOL], stream=True)  # type: ignore[list-item]
    assert any(c.choices and c.choices[0].delta.tool_calls for c in list(stream))
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=messages, tools=[WEATHER_TOOL])  # type: ignore[arg-type,list-item]
    assert raw.headers["x-gateway-cache"] == "hit"
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert calls(mock, model) == 1


def test_key_order_and_whitespace_in_the_json_do_not_matter(
        cached: CachedGateway, mock: MockProvider) -> None:
    prompt = fresh()
    tool = json.dumps(WEATHER_TOOL)
    reordered = json.dumps({"type": "function", "function": {
        "parameters": {"properties": {"city": {"type": "string"}}, "type": "object"},
        "description": "Weather for a city", "name": "get_weather"}})
    first = (f'{{"model":"fast","messages":[{{"role":"user","content":"{prompt}"}}],'
             f'"tools":[{tool}],"temperature":0}}')
    second = (f'{{\n  "temperature": 0,\n  "tools": [ {reordered} ],\n  "messages": [ {{'
              f'"content": "{prompt}", "role": "user"}} ],\n  "model": "fast"\n}}')
    headers = {"authorization": f"Bearer {KEY_A}", "content-type": "application/json"}
    states = [httpx.post(f"{cached.base_url}/v1/chat/completions", content=body,
                         headers=headers, timeout=10).headers["x-gateway-cache"]
              for body in (first, second)]
    assert states == ["miss", "hit"]
    assert calls(mock) == 1


ANSWER_CHANGES: dict[str, dict[str, Any]] = {
    "temperature": {"temperature": 0.5},
    "top_p": {"top_p": 0.9},
    "max_tokens": {"max_tokens": 50},
    "stop": {"stop": ["\n\n"]},
    "seed": {"seed": 7},
    "tools": {"tools": [WEATHER_TOOL]},
    "response_format": {"response_format": {"type": "json_object"}},
    "reasoning_effort": {"reasoning_effort": "low"},
    "presence_penalty": {"presence_penalty": 0.5},
    "a provider's own field (top_k)": {"extra_body": {"top_k": 5}},
    "Ollama's num_ctx": {"extra_body": {"options": {"num_ctx": 4096}}},
    "the requested name (the model, not its tier)": {"model": "gpt"},
}


@pytest.mark.parametrize("change", ANSWER_CHANGES)
def test_a_change_in_a_field_that_changes_the_answer_misses(
        client: openai.OpenAI, mock: MockProvider, change: str) -> None:
    prompt = fresh()
    ask(client, prompt)
    options = dict(ANSWER_CHANGES[change])
    _, headers = ask(client, prompt, **options)
    assert headers["x-gateway-cache"] == "miss"
    assert calls(mock) == 2


def test_a_changed_message_misses(client: openai.OpenAI, mock: MockProvider) -> None:
    prompt = fresh()
    ask(client, prompt)
    _, headers = ask(client, prompt + "?")
    assert headers["x-gateway-cache"] == "miss"


BOOKKEEPING = {"user": {"user": "someone-else"}, "metadata": {"metadata": {"team": "x"},
                                                              "store": True},
               "stream_options": {"stream": True, "stream_options": {"include_usage": True}}}


@pytest.mark.parametrize("change", BOOKKEEPING)
def test_bookkeeping_fields_do_not_change_the_key(
        client: openai.OpenAI, mock: MockProvider, change: str) -> None:
    prompt = fresh()
    ask(client, prompt)
    raw = client.chat.completions.with_raw_response.create(
        model="fast", messages=[{"role": "user", "content": prompt}], **BOOKKEEPING[change])
    assert raw.headers["x-gateway-cache"] == "hit"
    assert calls(mock) == 1


def test_another_keys_identical_request_misses_by_default(
        cached: CachedGateway, client: openai.OpenAI, mock: MockProvider) -> None:
    """Entries are per key unless router.yaml shares them (tests/test_cache_scopes.py)."""
    prompt = fresh()
    ask(client, prompt)
    with openai.OpenAI(base_url=f"{cached.base_url}/v1", api_key=KEY_B, max_retries=0) as other:
        states = [ask(other, prompt)[1]["x-gateway-cache"] for _ in range(2)]
    assert states == ["miss", "hit"]
    assert calls(mock) == 2


def test_no_store_neither_reads_nor_writes(client: openai.OpenAI, mock: MockProvider) -> None:
    prompt = fresh()
    no_store = {"extra_headers": {"Cache-Control": "no-store"}}
    states = [ask(client, prompt, **no_store)[1]["x-gateway-cache"] for _ in range(2)]
    assert states == ["bypass", "bypass"]
    assert ask(client, prompt)[1]["x-gateway-cache"] == "miss"  # nothing was written
    assert calls(mock) == 3


def test_no_cache_skips_the_lookup_and_refreshes_the_entry(
        client: openai.OpenAI, mock: MockProvider) -> None:
    prompt = fresh()
    ask(client, prompt)
    mock.script("gpt-4o-mini", Step(text="a fresher answer"))
    text, headers = ask(client, prompt, extra_headers={"Cache-Control": "no-cache"})
    assert (text, headers["x-gateway-cache"]) == ("a fresher answer", "bypass")
    text, headers = ask(client, prompt)
    assert (text, headers["x-gateway-cache"]) == ("a fresher answer", "hit")
    assert calls(mock) == 2


@pytest.mark.parametrize("status", [500, 400])
def test_errors_are_never_cached(client: openai.OpenAI, mock: MockProvider,
                                 status: int) -> None:
    prompt = fresh()
    mock.script("gpt-4o-mini", Step(status=status, error_message="scripted failure"))
    with pytest.raises(openai.APIStatusError):
        ask(client, prompt)
    assert ask(client, prompt)[1]["x-gateway-cache"] == "miss"
    assert ask(client, prompt)[1]["x-gateway-cache"] == "hit"
    assert calls(mock) == 2


def test_a_stream_cut_by_the_provider_is_not_cached(client: openai.OpenAI,
                                                    mock: MockProvider) -> None:
    prompt = fresh()
    mock.script("gpt-4o-mini", Step(text="one two three four five six", drop_after=3))
    with pytest.raises(openai.APIError):
        ask_streamed(client, prompt)  # the gateway ends it with an error event
    assert ask(client, prompt)[1]["x-gateway-cache"] == "miss"
    assert calls(mock) == 2


def test_a_stream_the_client_abandons_is_not_cached(cached: CachedGateway,
                                                    mock: MockProvider) -> None:
    prompt = fresh()
    mock.script("gpt-4o-mini", Step(text="one two three four five six", chunk_delay_s=0.2))
    body = {"model": "fast", "messages": [{"role": "user", "content": prompt}], "stream": True}
    with httpx.stream("POST", f"{cached.base_url}/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {KEY_A}"}, timeout=10) as response:
        next(response.iter_raw())  # the first token, then the client leaves
    with openai.OpenAI(base_url=f"{cached.base_url}/v1", api_key=KEY_A, max_retries=0) as c:
        assert ask(c, prompt)[1]["x-gateway-cache"] == "miss"
    assert calls(mock) == 2


def test_embeddings_are_cached_and_keyed_by_their_fields(
        client: openai.OpenAI, mock: MockProvider) -> None:
    text = fresh()
    first = client.embeddings.with_raw_response.create(model="embed", input=[text, "second"])
    second = client.embeddings.with_raw_response.create(model="embed", input=[text, "second"])
    assert (first.headers["x-gateway-cache"], second.headers["x-gateway-cache"]) == (
        "miss", "hit")
    assert [d.embedding for d in second.parse().data] == [d.embedding for d in first.parse().data]
    assert second.headers["x-gateway-model"] == "embed"
    assert len(mock.calls("text-embedding-3-small")) == 1
    other = client.embeddings.with_raw_response.create(model="embed", input=[text, "second"],
                                                       dimensions=2)
    assert other.headers["x-gateway-cache"] == "miss"


def test_entries_expire_after_ttl_s(client: openai.OpenAI, cached: CachedGateway) -> None:
    store = redis.Redis.from_url(cached.store_url)
    try:
        before = set(store.scan_iter("gw:cache:v2:*"))  # other tests' entries, on one Redis
        ask(client, fresh())
        ttls = [store.ttl(key) for key in set(store.scan_iter("gw:cache:v2:*")) - before]
    finally:
        store.close()
    assert len(ttls) == 1 and TTL_S - 120 < ttls[0] <= TTL_S


def test_a_store_that_goes_down_is_not_an_outage(mock: MockProvider, tmp_path: Path) -> None:
    """Redis killed under a running gateway: it answers uncached, then caches again."""
    server = RedisServer(tmp_path).start()
    config = tmp_path / "router.yaml"
    config.write_text(ROUTER_YAML.format(
        mock=mock.base_url, digest_a=sha(KEY_A), digest_b=sha(KEY_B), tmp=tmp_path,  # type: ignore[attr-defined]
        ttl=TTL_S, store=f'  redis_url: "{server.url}"\n'))
    log = tmp_path / "gateway.log"
    process, base_url = start_gateway(config, log)
    try:
        with openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY_A, max_retries=0) as client:
            prompt = fresh()
            assert [ask(client, prompt)[1]["x-gateway-cache"] for _ in range(2)] == [
                "miss", "hit"]
            server.kill()
            for _ in range(5):
                text, headers = ask(client, prompt)
                assert headers["x-gateway-cache"] == "off"
                assert text == mock.last_answer().text
            ready = httpx.get(f"{base_url}/ready", timeout=5)
            assert ready.status_code == 503
            assert "does not answer" in ready.json()["reason"]
            server.start()
            assert httpx.get(f"{base_url}/ready", timeout=5).status_code == 200
            assert [ask(client, prompt)[1]["x-gateway-cache"] for _ in range(2)] == [
                "miss", "hit"]
    finally:
        process.terminate()
        process.wait(10)
        server.kill()
    lines = log.read_text().splitlines()
    assert sum("does not answer" in line for line in lines) == 1  # once per outage
    assert sum("answers again" in line for line in lines) == 1
