"""Providers that answer badly: the client gets the next model's answer, or a clear error.

Each case scripts the first model of a two-model tier (`broken: [broken-x, backup]`,
OpenAI and Anthropic wire formats) with a body a real provider can send on a bad
day; the gateway must fall back when it can, and never pass the mess on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import orjson
import pytest

from gateway.demo import mockwire
from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import KEY_A, gateway_running, sha, wait_for

HELLO = [{"role": "user", "content": "hello"}]
FIRST_TOKEN_S = 1.0
MAX_RESPONSE_MB = 1
MB = 1024 * 1024
ROLE_CHUNK = mockwire.sse({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                           "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant"},
                                                      "finish_reason": None}]})
OVERLOADED = mockwire.sse({"type": "error", "error": {"type": "overloaded_error",
                                                      "message": "Overloaded"}}, "error")


def router_yaml(mock_url: str, tmp: Path) -> str:
    price = "price: {input_per_mtok: 1, output_per_mtok: 2}"
    return "\n".join([
        "providers:",
        f"  openai: {{api_key: sk-o, api_base: '{mock_url}/v1'}}",
        f"  anthropic: {{api_key: sk-a, api_base: '{mock_url}'}}",
        f"  deepseek: {{api_key: sk-d, api_base: '{mock_url}/v1'}}",  # litellm's path
        "models:",
        f"  broken-openai: {{provider: openai, model: gpt-broken, {price}}}",
        f"  broken-claude: {{provider: anthropic, model: claude-broken, {price}, "
        "max_output_tokens: 100}",
        f"  backup: {{provider: openai, model: gpt-backup, {price}}}",
        f"  broken-litellm: {{provider: deepseek, model: deepseek-broken, {price}}}",
        "tiers:",
        "  openai: [broken-openai, backup]",
        "  claude: [broken-claude, backup]",
        "  litellm: [broken-litellm, backup]",
        "  alone: [broken-openai]",
        "keys:", f"  - {{name: team-a, key_sha256: {sha(KEY_A)}}}",
        "settings:",
        "  retry: {max_retries: 0}",
        f"  timeouts: {{connect_s: 1, first_token_s: {FIRST_TOKEN_S}, total_s: 8}}",
        "  cooldown: {after_failures: 1000, window_s: 60, for_s: 1}",
        "  cache: {enabled: false}",
        f"  max_response_mb: {MAX_RESPONSE_MB}",
        f"  data_dir: {tmp}/data", f"  usage_log: {tmp}/usage.jsonl",
    ]) + "\n"


@pytest.fixture(scope="module")
def broken_gateway(mock: MockProvider, tmp_path_factory: pytest.TempPathFactory,
                   ) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("broken")
    config = tmp / "router.yaml"
    config.write_text(router_yaml(mock.base_url, tmp))  # type: ignore[attr-defined]
    with gateway_running(config, tmp / "gateway.log") as base_url:
        yield base_url
    assert b"Traceback" not in (tmp / "gateway.log").read_bytes()


@pytest.fixture
def client(connect: Callable[..., openai.OpenAI], broken_gateway: str) -> openai.OpenAI:
    return connect(base_url=f"{broken_gateway}/v1")


@pytest.fixture
def usage_log(broken_gateway: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "broken0" / "usage.jsonl"


PLAIN_BODIES = {
    "html": b"<html><body>502 Bad Gateway</body></html>",
    "truncated": b'{"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"index": 0, "mes',
    "error-inside": orjson.dumps({"error": {"message": "upstream overloaded",
                                            "type": "server_error"}}),
    "array": b"[]",
    "no-choices": orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion",
                                "created": 1, "model": "gpt-broken"}),
    "empty": b"",
}


@pytest.mark.parametrize("name", PLAIN_BODIES)
def test_a_bad_200_body_falls_back_to_the_next_model(client: openai.OpenAI, mock: MockProvider,
                                                     name: str) -> None:
    mock.script("gpt-broken", Step(raw=PLAIN_BODIES[name]))
    raw = client.chat.completions.with_raw_response.create(model="openai", messages=HELLO)
    answer = raw.parse()
    assert answer.model == "backup" and answer.choices[0].message.content
    assert raw.headers["x-gateway-attempts"] == "2"


@pytest.mark.parametrize("name", ["html", "error-inside", "empty"])
def test_a_bad_claude_body_falls_back_to_the_next_model(client: openai.OpenAI,
                                                        mock: MockProvider, name: str) -> None:
    body = PLAIN_BODIES[name]
    if name == "error-inside":  # as the Messages API words it
        body = orjson.dumps({"type": "error", "error": {"type": "overloaded_error",
                                                        "message": "Overloaded"}})
    mock.script("claude-broken", Step(raw=body))
    answer = client.chat.completions.create(model="claude", messages=HELLO)
    assert answer.model == "backup"


def test_when_no_model_is_left_the_error_says_what_the_provider_sent(
        client: openai.OpenAI, mock: MockProvider) -> None:
    mock.script("gpt-broken", Step(raw=PLAIN_BODIES["html"]))
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="alone", messages=HELLO)
    assert caught.value.status_code == 502
    assert "broken-openai" in caught.value.message and "not valid JSON" in caught.value.message


STREAM_BODIES = {
    "eof-before-a-token": ROLE_CHUNK,
    "garbage-lines": b"hello there\nthis is not SSE\n\n: a comment\n\n",
    "data-not-json": ROLE_CHUNK + b"data: {\"choices\": [{\"delta\": {\"content\": \n\n",
    "error-inside": ROLE_CHUNK + mockwire.sse({"error": {"message": "overloaded",
                                                         "type": "server_error"}}),
    "empty": b"",
}


@pytest.mark.parametrize("name", STREAM_BODIES)
def test_a_bad_stream_before_its_first_token_falls_back(client: openai.OpenAI,
                                                        mock: MockProvider, name: str) -> None:
    mock.script("gpt-broken", Step(raw=STREAM_BODIES[name]))
    raw = client.chat.completions.with_raw_response.create(model="openai", messages=HELLO,
                                                           stream=True)
    chunks = list(raw.parse())
    assert raw.headers["x-gateway-model"] == "backup"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "mock answer from gpt-backup to: hello"


def test_a_claude_stream_that_says_overloaded_falls_back(client: openai.OpenAI,
                                                         mock: MockProvider) -> None:
    start = mockwire.sse({"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-broken",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 1}}}, "message_start")
    mock.script("claude-broken", Step(raw=start + OVERLOADED))
    raw = client.chat.completions.with_raw_response.create(model="claude", messages=HELLO,
                                                           stream=True)
    list(raw.parse())
    assert raw.headers["x-gateway-model"] == "backup"


def test_a_complete_stream_without_done_is_a_complete_answer(client: openai.OpenAI,
                                                             mock: MockProvider) -> None:
    # Some OpenAI-compatible servers end a finished stream without `data: [DONE]`.
    mock.script("gpt-broken", Step(omit_done=True))
    stream = client.chat.completions.create(model="openai", messages=HELLO, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "mock answer from gpt-broken to: hello"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_a_stream_that_ends_mid_answer_without_done_ends_with_an_error(
        client: openai.OpenAI, mock: MockProvider) -> None:
    content = mockwire.sse({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                            "model": "m", "choices": [{"index": 0, "delta": {"content": "Half"},
                                                       "finish_reason": None}]})
    mock.script("gpt-broken", Step(raw=ROLE_CHUNK + content))
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(model="openai", messages=HELLO,
                                                    stream=True):
            received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(received) == "Half"
    assert "broken-openai" in str(caught.value.message)


@pytest.mark.parametrize("stream", [False, True])
def test_a_provider_dripping_a_byte_a_second_times_out_and_falls_back(
        client: openai.OpenAI, mock: MockProvider, stream: bool) -> None:
    mock.script("gpt-broken", Step(drip_s=0.2))  # a whole answer would take about a minute
    raw = client.chat.completions.with_raw_response.create(model="openai", messages=HELLO,
                                                           stream=stream)
    assert raw.headers["x-gateway-model"] == "backup"
    attempts = raw.headers["x-gateway-attempts"]
    assert attempts == "2"
    if stream:
        raw.parse().close()


def words(total_bytes: int, word_bytes: int = 10_000) -> str:
    """A text that streams as deltas of `word_bytes` each, no two alike (litellm ends a stream
    that repeats one chunk a hundred times)."""
    return " ".join(f"{i:08d}" + "x" * (word_bytes - 8) for i in range(total_bytes // word_bytes))


BROKEN = {"openai": "gpt-broken", "claude": "claude-broken", "litellm": "deepseek-broken"}


@pytest.mark.parametrize("model", ["openai", "claude", "litellm"])
def test_an_answer_over_max_response_mb_falls_back(client: openai.OpenAI, mock: MockProvider,
                                                   model: str) -> None:
    mock.script(BROKEN[model], Step(text=words(2 * MB, word_bytes=30_000)))  # in Claude's 100
    raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO)
    assert raw.headers["x-gateway-model"] == "backup"
    assert raw.parse().choices[0].message.content == "mock answer from gpt-backup to: hello"
    assert raw.headers["x-gateway-attempts"] == "2"


@pytest.mark.parametrize("model", ["openai", "litellm"])
def test_one_sse_line_over_max_response_mb_falls_back(client: openai.OpenAI, mock: MockProvider,
                                                      model: str) -> None:
    mock.script(BROKEN[model], Step(text="x" * (MAX_RESPONSE_MB * MB + 1)))
    raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO,
                                                           stream=True)
    assert raw.headers["x-gateway-model"] == "backup"
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)


def test_an_sse_line_over_512_kib_within_the_bound_is_relayed_whole(client: openai.OpenAI,
                                                                    mock: MockProvider) -> None:
    long_word = "y" * (700 * 1024)  # aiohttp's own line limit is 512 KiB
    mock.script("gpt-broken", Step(text=long_word))
    chunks = list(client.chat.completions.create(model="openai", messages=HELLO, stream=True))
    assert {c.model for c in chunks} == {"broken-openai"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == long_word


@pytest.mark.parametrize("model", ["openai", "litellm"])
def test_a_stream_growing_past_max_response_mb_ends_with_an_error_event(
        client: openai.OpenAI, mock: MockProvider, usage_log: Path, model: str) -> None:
    mock.script(BROKEN[model], Step(text="first " + words(2 * MB)))
    lines_before = len(usage_log.read_bytes().splitlines())
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(model=model, messages=HELLO,
                                                    stream=True):
            received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    text = "".join(received)
    assert text.startswith("first ") and len(text) < MAX_RESPONSE_MB * MB
    assert "max_response_mb" in str(caught.value.message)
    # a thread writes the usage log
    wait_for(lambda: len(usage_log.read_bytes().splitlines()) > lines_before, within_s=5)
    last = orjson.loads(usage_log.read_bytes().splitlines()[-1])
    assert last["status"] == 502 and last["model"] == f"broken-{model}"  # not the client's 499
