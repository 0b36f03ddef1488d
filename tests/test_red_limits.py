"""Red team: attacks on the rate limits, the shared cooldowns and the budget alerts.

Two `gateway serve --workers 2` processes on one real Redis of this module's own (so that
it can be stalled, killed and started again without touching the session's), the mock
provider at the network edge, the official openai and anthropic SDKs and httpx. Each test
is a promise of the README's *Rate limits*, *Budget alerts* or *Cooldown* attacked the
way a hostile tenant, a busy agent, a slow or dead Redis or a broken provider would.
The store's outage tests come last: they stop the Redis the others use.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import redis

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import RedisServer, gateway_running, sha, wait_for
from tests.test_limits import Webhook

PRICE = "price: {input_per_mtok: 1000, output_per_mtok: 2000}"  # $0.001 / $0.002 a token
CUT_BUDGET_USD = 0.05
HOOK_TOKEN = "red-hook-secret-token"

# Key name -> its extra fields; every test has keys of its own.
KEYS = {
    "red-stream": "limits: {max_in_flight: 1}",
    "red-silent": "limits: {max_in_flight: 1}",
    "red-pipe": "limits: {max_in_flight: 1}",
    "red-gone": "limits: {max_in_flight: 1}",
    "red-cache": "limits: {rpm: 2}",
    "red-msg": "limits: {rpm: 1}",
    "red-msg-flight": "limits: {max_in_flight: 1}",
    "red-resp": "limits: {rpm: 1}",
    "red-emb": "limits: {rpm: 1}",
    "red:colon:équipe": "limits: {rpm: 3}",
    "red-burst": "limits: {rpm: 25}",
    "red-flight": "limits: {max_in_flight: 1}",
    "red-tpm-stream": "limits: {tpm: 60}",
    "red-reload": "limits: {rpm: 50}",
    "red-cut": f"daily_budget_usd: {CUT_BUDGET_USD}, alert_at_percent: [100]",
    "red-slow-store": "limits: {rpm: 1000, max_in_flight: 50}",
    "red-outage": "limits: {rpm: 3}",
    "red-early-gone": "limits: {max_in_flight: 1}",
    "red-drop": "limits: {max_in_flight: 1}",
    "red-resp-stream": "limits: {max_in_flight: 1}",
    "red-msg-stream": "limits: {max_in_flight: 1}",
    "red-broke": "daily_budget_usd: 0.000001, limits: {max_in_flight: 1}",
    "red-flushed": "limits: {rpm: 2}",
    "red-open": "",
}


def key_of(name: str) -> str:
    return "sk-red-" + sha(name)[:24]


def router_yaml(mock_url: str, redis_url: str, webhook_url: str, tmp: Path,
                keys: dict[str, str]) -> str:
    lines = [f"  - {{name: {json.dumps(name)}, key_sha256: {sha(key_of(name))}"
             + (f", {extra}" if extra else "") + "}" for name, extra in keys.items()]
    return "\n".join([
        "providers:",
        f"  openai: {{api_key: sk-o, api_base: '{mock_url}/v1'}}",
        f"  anthropic: {{api_key: sk-ant-red, api_base: '{mock_url}'}}",
        "models:",
        f"  plain: {{provider: openai, model: gpt-red-plain, {PRICE}}}",
        f"  slow: {{provider: openai, model: gpt-red-slow, {PRICE}}}",
        f"  long: {{provider: openai, model: gpt-red-long, {PRICE}, max_output_tokens: 2000}}",
        f"  claude: {{provider: anthropic, model: claude-red, {PRICE}, max_output_tokens: 100}}",
        f"  claude-scarce: {{provider: anthropic, model: claude-red-scarce, {PRICE},"
        " max_output_tokens: 100, limits: {rpm: 1}}",
        f"  emb: {{provider: openai, model: text-embedding-red, {PRICE}}}",
        f"  'q:a': {{provider: openai, model: 'gpt-red:q:a', {PRICE}, limits: {{rpm: 2}}}}",
        f"  'q:b': {{provider: openai, model: 'gpt-red:q:b', {PRICE}}}",
        f"  retried: {{provider: openai, model: gpt-red-retried, {PRICE}, limits: {{rpm: 2}}}}",
        f"  backup: {{provider: openai, model: gpt-red-backup, {PRICE}}}",
        "tiers:",
        "  basic: [plain]",
        "  slowly: [slow]",
        "  lengthy: [long]",
        "  sonnet: [claude]",
        "  scarce: [claude-scarce]",
        "  vectors: [emb]",
        "  colon: ['q:a', 'q:b']",
        "  retrying: [retried, backup]",
        "keys:", *lines,
        "settings:",
        f"  redis_url: '{redis_url}'",
        "  cache: {enabled: true}",
        "  retry: {max_retries: 2, initial_backoff_s: 0.05, max_backoff_s: 1}",
        "  cooldown: {after_failures: 100, window_s: 60, for_s: 1}",
        "  timeouts: {connect_s: 2, first_token_s: 8, total_s: 20}",
        f"  alerts: {{webhook_url: '{webhook_url}', attempts: 2, timeout_s: 2}}",
        f"  usage_log: {tmp}/usage.jsonl",
    ]) + "\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """This module's own Redis: durable (a restart keeps its counts), stallable."""
    server = RedisServer(tmp_path_factory.mktemp("red-redis"), durable=True, debug=True).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    server = Webhook(failures=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("red-limits")


def hook_url(webhook: Webhook) -> str:
    return f"http://127.0.0.1:{webhook.server_address[1]}/hook/{HOOK_TOKEN}"


@pytest.fixture(scope="module")
def replicas(mock: MockProvider, store: RedisServer, webhook: Webhook,
             tmp: Path) -> Iterator[list[str]]:
    """Two replicas of two workers each, one router.yaml, one Redis."""
    config = tmp / "router.yaml"
    config.write_text(router_yaml(mock.base_url, store.url,  # type: ignore[attr-defined]
                                  hook_url(webhook), tmp, KEYS))
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(gateway_running(config, tmp / f"gateway-{i}.log",
                                                   workers=2)) for i in range(2)]


def headers(name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key_of(name)}"}


def chat(base_url: str, name: str, tier: str = "basic", text: str | None = None,
         timeout: float = 20, **extra: Any) -> httpx.Response:
    text = text if text is not None else f"hello {uuid.uuid4()}"  # no cache hit unless asked
    return httpx.post(f"{base_url}/v1/chat/completions", timeout=timeout, headers=headers(name),
                      json={"model": tier, "messages": [{"role": "user", "content": text}],
                            **extra})


def openai_client(base_url: str, name: str, **options: Any) -> openai.OpenAI:
    options.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key_of(name), **options)


def assert_limit_refusal(answer: httpx.Response) -> None:
    """A key's rate-limit 429 as the README promises it: worth a retry, and says when."""
    assert answer.status_code == 429, (answer.status_code, answer.text)
    assert int(answer.headers["retry-after"]) >= 1
    assert int(answer.headers["retry-after-ms"]) >= 1
    assert answer.headers["x-should-retry"] == "true"


# --- streams, clients that leave, cache hits ---------------------------------------------------


def _stream_left_after_its_first_chunk(replicas: list[str], key: str) -> float:
    """A stream of `key` (max_in_flight 1) on one replica: it holds its place while its
    client reads the first chunk; then the client hangs up. How long the place took to
    free, seen from the other replica."""
    with httpx.Client(timeout=20) as client, client.stream(
            "POST", f"{replicas[0]}/v1/chat/completions", headers=headers(key),
            json={"model": "slowly", "stream": True,
                  "messages": [{"role": "user", "content": "tell me"}]}) as s:
        assert s.status_code == 200
        chunks = s.iter_bytes()  # held: a generator dropped would close the connection
        next(chunks)
        assert_limit_refusal(chat(replicas[1], key))  # the stream holds its place
    # the client has hung up
    return wait_for(lambda: chat(replicas[1], key).status_code == 200, within_s=3)


def test_a_stream_whose_client_leaves_frees_its_place_in_flight_at_once(
        replicas: list[str], mock: MockProvider) -> None:
    """max_in_flight 1: a client reads the first chunk of a long stream and hangs up. The
    stream is closed upstream at once, so its place must be free within moments, not when
    the provider would have finished (6 s)."""
    mock.script("gpt-red-slow", Step(text="word " * 30, chunk_delay_s=0.2))
    assert _stream_left_after_its_first_chunk(replicas, "red-stream") < 3


def test_a_stream_left_while_its_provider_is_silent_frees_its_place_at_once(
        replicas: list[str], mock: MockProvider) -> None:
    """The same, with the provider silent for 6 s between chunks (a model thinking; the
    first token comes after one such pause, within first_token_s): the gateway learns of
    the hang-up from the connection, not at its next write, so the place frees within
    moments, not when the next chunk would have come."""
    mock.script("gpt-red-slow", Step(text="word " * 30, chunk_delay_s=6))
    assert _stream_left_after_its_first_chunk(replicas, "red-silent") < 3


def test_a_pipelined_stream_left_mid_way_frees_its_place_and_logs_no_error(
        replicas: list[str], mock: MockProvider, tmp: Path) -> None:
    """Two streamed requests in one write (HTTP/1.1 pipelining); the client reads the first
    stream's first events and hangs up while its provider is silent. uvicorn tells only the
    connection's newest request: the first stream must still learn of it at once, and
    nothing may write to the closed connection."""
    mock.script("gpt-red-slow", Step(text="word " * 30, chunk_delay_s=6),
                Step(text="word " * 30, chunk_delay_s=6))
    host, port = replicas[0].removeprefix("http://").split(":")
    body = json.dumps({"model": "slowly", "stream": True,
                       "messages": [{"role": "user", "content": "pipelined"}]}).encode()
    one = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n"
           b"content-type: application/json\r\n"
           + f"authorization: Bearer {key_of('red-pipe')}\r\n".encode()
           + f"content-length: {len(body)}\r\n\r\n".encode() + body)
    logs = [tmp / f"gateway-{i}.log" for i in range(2)]
    logged = [len(log.read_text()) for log in logs]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(one + one)
        assert b"200 OK" in sock.recv(65536)  # the first stream's head
        assert_limit_refusal(chat(replicas[1], "red-pipe"))
    waited = wait_for(lambda: chat(replicas[1], "red-pipe").status_code == 200, within_s=3)
    assert waited < 3
    time.sleep(0.5)
    new_lines = "".join(log.read_text()[at:] for log, at in zip(logs, logged, strict=True))
    assert "Traceback" not in new_lines and "internal error" not in new_lines, new_lines


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/responses"])
def test_a_stream_left_before_its_first_token_frees_its_place_when_the_token_comes(
        replicas: list[str], mock: MockProvider, path: str) -> None:
    """A user cancels while the model thinks (its first token after 1 s, then 30 more 0.4 s
    apart): the gateway learns it when the stream begins, and closes it there, not 12 s
    later at the provider's end."""
    step = Step(delay_s=1, text="word " * 30, chunk_delay_s=0.4)
    mock.script("gpt-red-slow", step)
    mock.script("claude-red", step)
    model = "sonnet" if path == "/v1/messages" else "slowly"
    body: dict[str, Any] = {"model": model, "stream": True, "max_tokens": 100,
                            "messages": [{"role": "user", "content": "think"}]}
    if path == "/v1/responses":
        body = {"model": model, "stream": True, "input": "think", "store": False}
    with contextlib.suppress(httpx.TimeoutException):
        httpx.post(f"{replicas[0]}{path}", headers=headers("red-stream"), json=body,
                   timeout=0.3)
    waited = wait_for(lambda: chat(replicas[1], "red-stream").status_code == 200, within_s=4)
    assert waited < 4


def test_a_client_that_leaves_before_its_answer_gives_its_place_back(
        replicas: list[str], mock: MockProvider) -> None:
    mock.script("gpt-red-slow", Step(delay_s=1.5))
    with pytest.raises(httpx.ReadTimeout):
        chat(replicas[0], "red-gone", tier="slowly", timeout=0.3)
    # The call under way is let finish (the provider bills it); then the place is free.
    wait_for(lambda: chat(replicas[1], "red-gone").status_code == 200, within_s=4)


def test_a_cache_hit_counts_as_a_request_and_carries_the_limit_headers(
        replicas: list[str], mock: MockProvider) -> None:
    text = f"cache me {uuid.uuid4()}"
    first = chat(replicas[0], "red-cache", text=text)
    hit = chat(replicas[1], "red-cache", text=text)
    assert first.status_code == hit.status_code == 200
    assert hit.headers["x-gateway-cache"] == "hit"
    assert hit.headers["x-ratelimit-limit-requests"] == "2"
    assert hit.headers["x-ratelimit-remaining-requests"] == "0"
    third = chat(replicas[0], "red-cache", text=text)
    assert_limit_refusal(third)
    assert len(mock.calls("gpt-red-plain")) == 1


def test_a_stream_whose_client_leaves_before_its_first_token_frees_its_place(
        replicas: list[str], mock: MockProvider) -> None:
    """The client gives up while the provider has not yet answered (1 s): the stream opens
    to nobody. Its place must come back when it ends, not when its lease does (25 s)."""
    mock.script("gpt-red-slow", Step(delay_s=1.0, text="late " * 5))
    with pytest.raises(httpx.ReadTimeout):
        chat(replicas[0], "red-early-gone", tier="slowly", timeout=0.3, stream=True)
    wait_for(lambda: chat(replicas[1], "red-early-gone").status_code == 200, within_s=4)


def test_a_stream_its_provider_drops_frees_its_place(replicas: list[str],
                                                     mock: MockProvider) -> None:
    mock.script("gpt-red-slow", Step(text="word " * 30, drop_after=3))
    with openai_client(replicas[0], "red-drop") as client:
        stream = client.chat.completions.create(
            model="slowly", stream=True, messages=[{"role": "user", "content": "go"}])
        with pytest.raises(openai.APIError):
            list(stream)
    wait_for(lambda: chat(replicas[1], "red-drop").status_code == 200, within_s=2)


def test_a_stream_left_mid_way_on_messages_and_responses_frees_its_place(
        replicas: list[str], mock: MockProvider) -> None:
    for surface in ("responses", "messages"):
        mock.reset()
        if surface == "responses":
            name = "red-resp-stream"
            mock.script("gpt-red-slow", Step(text="word " * 30, chunk_delay_s=0.2))
            path, body = "/v1/responses", {"model": "slowly", "stream": True,
                                           "input": "tell me"}
        else:
            name = "red-msg-stream"
            mock.script("claude-red", Step(text="word " * 30, chunk_delay_s=0.2))
            path, body = "/v1/messages", {"model": "sonnet", "stream": True, "max_tokens": 100,
                                          "messages": [{"role": "user", "content": "tell me"}]}
        with httpx.Client(timeout=20) as client, client.stream(
                "POST", replicas[0] + path, headers=headers(name), json=body) as s:
            assert s.status_code == 200
            chunks = s.iter_bytes()
            next(chunks)
            assert_limit_refusal(chat(replicas[1], name))
        wait_for(lambda name=name: chat(replicas[1], name).status_code == 200, within_s=3)


def test_budget_refusals_give_their_place_in_flight_back(replicas: list[str]) -> None:
    for i in range(6):
        refused = chat(replicas[i % 2], "red-broke")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "budget_exceeded"  # never rate_limit
        assert refused.headers["x-should-retry"] == "false"


# --- the other surfaces: /v1/messages, /v1/responses, embeddings --------------------------------


def test_a_rate_limit_on_messages_is_anthropic_shaped_with_the_headers(
        replicas: list[str]) -> None:
    body = {"model": "sonnet", "max_tokens": 20,
            "messages": [{"role": "user", "content": f"hi {uuid.uuid4()}"}]}
    first = httpx.post(f"{replicas[0]}/v1/messages", headers=headers("red-msg"), json=body)
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-limit-requests"] == "1"
    second = httpx.post(f"{replicas[1]}/v1/messages", headers=headers("red-msg"),
                        json={**body, "messages": [{"role": "user", "content": "again"}]})
    assert_limit_refusal(second)
    assert second.json()["type"] == "error"
    assert second.json()["error"]["type"] == "rate_limit_error"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    with anthropic.Anthropic(base_url=replicas[1], api_key=key_of("red-msg"),
                             max_retries=0) as client, pytest.raises(anthropic.RateLimitError):
        client.messages.create(model="sonnet", max_tokens=20,
                               messages=[{"role": "user", "content": "and again"}])


def test_the_anthropic_sdk_retries_a_max_in_flight_refusal_and_is_served(
        replicas: list[str], mock: MockProvider) -> None:
    mock.script("claude-red", Step(delay_s=1.5))
    body = {"model": "sonnet", "max_tokens": 20,
            "messages": [{"role": "user", "content": f"slow {uuid.uuid4()}"}]}
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(httpx.post, f"{replicas[0]}/v1/messages",
                           headers=headers("red-msg-flight"), json=body, timeout=20)
        time.sleep(0.5)
        with anthropic.Anthropic(base_url=replicas[1], api_key=key_of("red-msg-flight"),
                                 max_retries=4) as client:
            message = client.messages.create(
                model="sonnet", max_tokens=20,
                messages=[{"role": "user", "content": f"me too {uuid.uuid4()}"}])
        assert slow.result().status_code == 200
    assert message.content[0].type == "text"


def test_a_rate_limit_on_responses_is_openai_shaped(replicas: list[str]) -> None:
    with openai_client(replicas[0], "red-resp") as client:
        assert client.responses.create(model="basic", input=f"hi {uuid.uuid4()}").output_text
    with openai_client(replicas[1], "red-resp") as client, \
            pytest.raises(openai.RateLimitError) as refused:
        client.responses.create(model="basic", input=f"again {uuid.uuid4()}")
    assert refused.value.code == "rate_limit_exceeded"
    assert_limit_refusal(httpx.Response(429, headers=refused.value.response.headers))
    assert refused.value.response.headers["x-ratelimit-limit-requests"] == "1"


def test_embeddings_are_held_to_the_keys_rpm(replicas: list[str]) -> None:
    with openai_client(replicas[0], "red-emb") as client:
        raw = client.embeddings.with_raw_response.create(model="vectors", input=["a", "b"])
        assert raw.headers["x-ratelimit-remaining-requests"] == "0"
    with openai_client(replicas[1], "red-emb") as client, pytest.raises(openai.RateLimitError):
        client.embeddings.create(model="vectors", input=["c"])


# --- hostile names, bursts, workers and replicas -----------------------------------------------


def test_a_key_and_models_whose_names_hold_colons_and_unicode_are_limited_apart(
        replicas: list[str], mock: MockProvider) -> None:
    answers = [chat(replicas[i % 2], "red:colon:équipe", tier="colon") for i in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert "red:colon:équipe" in answers[3].json()["error"]["message"]
    # The model 'q:a' (rpm 2) served two; the chain moved on to 'q:b' without calling it.
    assert [a.headers["x-gateway-model"] for a in answers[:3]] == ["q:a", "q:a", "q:b"]
    assert len(mock.calls("gpt-red:q:a")) == 2


def test_a_burst_of_120_on_two_replicas_of_two_workers_gets_exactly_the_rpm(
        replicas: list[str]) -> None:
    with ThreadPoolExecutor(120) as pool:
        answers = list(pool.map(lambda i: chat(replicas[i % 2], "red-burst"), range(120)))
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 25 and statuses.count(429) == 95, statuses
    remaining = sorted(int(a.headers["x-ratelimit-remaining-requests"])
                       for a in answers if a.status_code == 200)
    assert remaining == list(range(25))
    # Retry-After says when the minute's oldest admission leaves the window: about 60 s now.
    refused = next(a for a in answers if a.status_code == 429)
    assert 50_000 <= int(refused.headers["retry-after-ms"]) <= 60_000
    assert refused.headers["x-ratelimit-reset-requests"] in {"59s", "1m0s", "58s", "57s"}


def test_max_in_flight_one_holds_across_workers_and_replicas(replicas: list[str],
                                                             mock: MockProvider) -> None:
    # Held 2 s: all 40 arrive while the one served holds its place, even on a loaded machine.
    mock.always["gpt-red-slow"] = Step(delay_s=2.0)
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda i: chat(replicas[i % 2], "red-flight", tier="slowly"),
                                range(40)))
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 1 and statuses.count(429) == 39, statuses


def test_every_retry_of_a_model_takes_a_place_under_its_quota(replicas: list[str],
                                                              mock: MockProvider) -> None:
    """rpm 2 and max_retries 2: a model failing 500 is called twice, not three times; the
    third call would pass its account's quota, so the chain moves on."""
    mock.script("gpt-red-retried", *[Step(status=500)] * 3)
    answer = chat(replicas[0], "red-open", tier="retrying")
    assert answer.status_code == 200 and answer.headers["x-gateway-model"] == "backup"
    assert len(mock.calls("gpt-red-retried")) == 2


def test_a_models_quota_used_up_on_messages_is_an_anthropic_rate_limit(
        replicas: list[str], mock: MockProvider) -> None:
    body = {"model": "scarce", "max_tokens": 20,
            "messages": [{"role": "user", "content": f"hi {uuid.uuid4()}"}]}
    first = httpx.post(f"{replicas[0]}/v1/messages", headers=headers("red-open"), json=body)
    assert first.status_code == 200, first.text
    second = httpx.post(f"{replicas[1]}/v1/messages", headers=headers("red-open"),
                        json={**body, "messages": [{"role": "user", "content": "more"}]})
    assert second.status_code == 429
    assert second.json()["type"] == "error"
    assert second.json()["error"]["type"] == "rate_limit_error"
    assert int(second.headers["retry-after"]) >= 1
    assert second.headers["x-should-retry"] == "true"
    assert len(mock.calls("claude-red-scarce")) == 1


def test_streamed_answers_count_their_real_tokens_against_tpm(replicas: list[str]) -> None:
    served, used = 0, 0
    with openai_client(replicas[0], "red-tpm-stream") as first, \
            openai_client(replicas[1], "red-tpm-stream") as second:
        for i in range(20):
            client = (first, second)[i % 2]
            try:
                stream = client.chat.completions.create(
                    model="basic", stream=True, stream_options={"include_usage": True},
                    messages=[{"role": "user", "content": f"count me {uuid.uuid4()}"}])
            except openai.RateLimitError as refused:
                assert refused.body["type"] == "tokens"  # type: ignore[index]
                break
            chunks = list(stream)
            usage = chunks[-1].usage
            assert usage is not None
            used += usage.total_tokens
            served += 1
            time.sleep(0.15)  # the usage is written once the stream has ended
        else:
            pytest.fail("the tokens-per-minute limit never refused a streamed request")
    per_request = used // served
    assert served == -(-60 // per_request), (served, used)


def test_a_limit_lowered_by_a_reload_holds_on_the_next_request(
        replicas: list[str], mock: MockProvider, store: RedisServer, webhook: Webhook,
        tmp: Path) -> None:
    for _ in range(3):
        assert chat(replicas[0], "red-reload").status_code == 200
    config = tmp / "router.yaml"
    lowered = {**KEYS, "red-reload": "limits: {rpm: 2}"}
    config.write_text(router_yaml(mock.base_url, store.url,  # type: ignore[attr-defined]
                                  hook_url(webhook), tmp, lowered))
    try:
        for base_url in replicas:  # every worker watches the file; wait for them all
            wait_for(lambda base_url=base_url: all(
                chat(base_url, "red-reload").status_code == 429 for _ in range(4)), 6)
    finally:
        config.write_text(router_yaml(mock.base_url, store.url,  # type: ignore[attr-defined]
                                      hook_url(webhook), tmp, KEYS))


# --- budget alerts ----------------------------------------------------------------------------


def test_the_100_percent_alert_fires_when_a_stream_is_cut_at_the_budgets_end(
        replicas: list[str], mock: MockProvider, webhook: Webhook, tmp: Path) -> None:
    """README: "A 100% alert fires when the spend reaches the whole budget, as a stream cut
    at the budget's end makes it"."""
    mock.always["gpt-red-long"] = Step(text="word " * 1500)
    with openai_client(replicas[0], "red-cut") as client:
        stream = client.chat.completions.create(
            model="lengthy", stream=True,
            messages=[{"role": "user", "content": "write a lot"}])
        finishes = [c.choices[0].finish_reason for c in stream if c.choices]
    assert finishes[-1] == "length"  # cut at the budget's end
    budget = httpx.get(f"{replicas[1]}/v1/budget", headers=headers("red-cut")).json()
    wait_for(lambda: any(a["key"] == "red-cut" for a in webhook.delivered), within_s=4)
    alert = next(a for a in webhook.delivered if a["key"] == "red-cut")
    assert alert["threshold_percent"] == 100, (alert, budget)


def test_the_webhook_url_is_never_logged_nor_shown(replicas: list[str], tmp: Path) -> None:
    shown = httpx.get(f"{replicas[0]}/admin/config").json()
    assert HOOK_TOKEN not in json.dumps(shown)
    assert shown["config"]["settings"]["alerts"]["webhook_url"]
    reloaded = httpx.post(f"{replicas[1]}/admin/reload")
    assert HOOK_TOKEN not in reloaded.text
    for log in tmp.glob("gateway-*.log"):
        assert HOOK_TOKEN not in log.read_text()
    assert HOOK_TOKEN not in (tmp / "usage.jsonl").read_text()


# --- a slow, then a dead store (last: they stop the module's Redis) ----------------------------


def _stall(store: RedisServer, seconds: float) -> threading.Thread:
    def stall() -> None:
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(store.url, socket_timeout=seconds + 5).execute_command(
                "DEBUG", "SLEEP", str(seconds))

    thread = threading.Thread(target=stall)
    thread.start()
    time.sleep(0.1)
    return thread


def test_a_stalled_store_neither_refuses_nor_stalls_limited_requests(
        replicas: list[str], store: RedisServer) -> None:
    stalled = _stall(store, 4)
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda i: chat(replicas[i % 2], "red-slow-store"),
                                    range(20)))
        elapsed = time.monotonic() - started
    finally:
        stalled.join()
    assert [a.status_code for a in answers] == [200] * 20
    assert elapsed < 3.5  # the store's own timeouts, not its 4 s stall


def test_a_store_that_forgot_its_scripts_and_data_still_counts(
        replicas: list[str], store: RedisServer) -> None:
    """A Redis restarted empty (or flushed) forgets the book's script: the next batch
    loads it again, and the limits count afresh."""
    with redis.Redis.from_url(store.url) as direct:
        direct.script_flush()
    answers = [chat(replicas[i % 2], "red-flushed") for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]


def test_redis_killed_and_started_again_under_load_never_becomes_an_outage(
        replicas: list[str], store: RedisServer, tmp: Path) -> None:
    for _ in range(3):
        assert chat(replicas[0], "red-outage").status_code == 200
    assert_limit_refusal(chat(replicas[1], "red-outage"))
    store.kill()
    try:
        time.sleep(0.2)
        with ThreadPoolExecutor(16) as pool:
            during = list(pool.map(lambda i: chat(replicas[i % 2], "red-outage"), range(32)))
        # Not enforced: a limit must not become an outage; nothing crashed.
        assert [a.status_code for a in during] == [200] * 32
        for base_url in replicas:
            assert httpx.get(f"{base_url}/health").status_code == 200
    finally:
        store.start()
    # Back: the durable Redis kept the minute's admissions, so the limit holds again.
    wait_for(lambda: httpx.get(f"{replicas[0]}/ready").status_code == 200, within_s=10)
    wait_for(lambda: httpx.get(f"{replicas[1]}/ready").status_code == 200, within_s=10)
    time.sleep(1.2)
    assert_limit_refusal(chat(replicas[0], "red-outage"))
    assert_limit_refusal(chat(replicas[1], "red-outage"))
