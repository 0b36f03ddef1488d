"""The mock speaks each provider's real wire format: the official SDKs parse every answer."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import openai
import orjson
import pytest

from gateway.demo.mockprovider import MockProvider, Step

HELLO = [{"role": "user", "content": "hello mock"}]


@pytest.fixture
def oai(mock: MockProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{mock.base_url}/v1", api_key="k", max_retries=0) as client:
        yield client


@pytest.fixture
def claude(mock: MockProvider) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=mock.base_url, api_key="k", max_retries=0) as client:
        yield client


def test_openai_sdk_parses_completion_and_stream(oai: openai.OpenAI, mock: MockProvider) -> None:
    reply = oai.chat.completions.create(model="m", messages=HELLO)
    assert reply.choices[0].message.content == "mock answer from m to: hello mock"
    chunks = list(oai.chat.completions.create(model="m", messages=HELLO, stream=True,
                                              stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        reply.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens


def test_openai_sdk_parses_embeddings_in_base64(oai: openai.OpenAI) -> None:
    reply = oai.embeddings.create(model="e", input=["one two", "three"])  # SDK asks base64
    assert len(reply.data) == 2
    assert reply.data[1].embedding == pytest.approx([0.2, 0.2, 0.3, 0.4])


def test_openai_errors_carry_status_code_and_retry_after(oai: openai.OpenAI,
                                                         mock: MockProvider) -> None:
    mock.script("m", Step(status=429, error_message="slow down", retry_after="3"))
    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(model="m", messages=HELLO)
    assert caught.value.body["message"] == "slow down"
    assert caught.value.response.headers["retry-after"] == "3"


def test_anthropic_sdk_parses_message_stream_and_tool_use(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="c", max_tokens=50, messages=HELLO)
    assert message.content[0].text == "mock answer from c to: hello mock"
    assert message.stop_reason == "end_turn"
    with claude.messages.stream(model="c", max_tokens=50, messages=HELLO,
                                tools=[{"name": "t", "input_schema": {"type": "object"}}]) as s:
        final = s.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == {"answer": "from c"}
    assert final.stop_reason == "tool_use"


def test_anthropic_mock_rejects_what_the_real_api_rejects(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="role"):
        claude.messages.create(model="c", max_tokens=5, messages=[{"role": "system",
                                                                   "content": "x"}])
    with pytest.raises(anthropic.BadRequestError, match="Extra inputs"):
        claude.messages.create(model="c", max_tokens=5, messages=HELLO,
                               extra_body={"frequency_penalty": 1})


def test_anthropic_overloaded_is_529_in_anthropics_shape(claude: anthropic.Anthropic,
                                                         mock: MockProvider) -> None:
    mock.script("c", Step(status=529, error_message="Overloaded"))
    with pytest.raises(anthropic.APIStatusError) as caught:
        claude.messages.create(model="c", max_tokens=5, messages=HELLO)
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"


def test_ollama_native_chat_streams_ndjson(mock: MockProvider) -> None:
    response = httpx.post(f"{mock.base_url}/api/chat", json={"model": "llama3.2",
                                                              "messages": HELLO})
    lines = [orjson.loads(line) for line in response.text.splitlines()]
    assert "".join(line["message"]["content"] for line in lines) == \
        "mock answer from llama3.2 to: hello mock"
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 7
    single = httpx.post(f"{mock.base_url}/api/chat", json={"model": "llama3.2", "stream": False,
                                                            "messages": HELLO}).json()
    assert single["message"]["content"] == "mock answer from llama3.2 to: hello mock"


def test_unknown_path_is_404_naming_the_path(mock: MockProvider) -> None:
    response = httpx.post(f"{mock.base_url}/v1/chat/complete", json={})
    assert response.status_code == 404
    assert "POST /v1/chat/complete" in response.json()["error"]["message"]


def test_max_tokens_cuts_the_answer_with_finish_reason_length(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(model="m", messages=HELLO, max_tokens=2)
    assert reply.choices[0].message.content == "mock answer"
    assert reply.choices[0].finish_reason == "length"
