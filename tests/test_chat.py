"""End to end: the official OpenAI SDK -> a real gateway process -> the mock provider."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import KEY_A, KEY_B, gateway_running, sha

HELLO = [{"role": "user", "content": "Hello there, gateway"}]

# router.yaml model -> (provider model the mock sees, path the provider is called on)
PROVIDERS = {
    "gpt": ("gpt-4o-mini", "/v1/chat/completions"),
    "claude": ("claude-sonnet-4-5", "/v1/messages"),
    "llama-groq": ("llama-3.3-70b-versatile", "/openai/v1/chat/completions"),
    "llama-local": ("llama3.2", "/v1/chat/completions"),
    "deepseek": ("deepseek-chat", "/v1/chat/completions"),  # through litellm
}


@pytest.mark.parametrize("model", PROVIDERS)
def test_answer_is_the_providers_text_usage_and_finish_reason(
        client: openai.OpenAI, mock: MockProvider, model: str) -> None:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO)
    reply = raw.parse()
    sent = mock.last_answer()
    provider_model, path = PROVIDERS[model]
    assert mock.calls(provider_model)[-1].path == path
    assert reply.choices[0].message.content == sent.text
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == sent.output_tokens
    assert reply.usage.prompt_tokens == sent.input_tokens
    assert reply.model == model
    assert raw.headers["x-gateway-model"] == model
    assert raw.headers["x-gateway-attempts"] == "1"
    assert raw.headers["x-request-id"]


@pytest.mark.parametrize("model", PROVIDERS)
def test_streamed_answer_is_the_providers_text_and_usage(
        client: openai.OpenAI, mock: MockProvider, model: str) -> None:
    stream = client.chat.completions.create(model=model, messages=HELLO, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    sent = mock.last_answer()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices
                and c.choices[0].finish_reason]
    assert text == sent.text
    assert finishes == ["stop"]
    assert {c.model for c in chunks} == {model}
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == sent.output_tokens
    assert chunks[-1].usage.prompt_tokens == sent.input_tokens


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="gpt", messages=HELLO, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_stream_reports_model_and_attempts_in_headers(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
            model="smart", messages=HELLO, stream=True) as response:
        assert response.headers["x-gateway-model"] == "claude"
        assert response.headers["x-gateway-attempts"] == "1"
        assert response.headers["content-type"].startswith("text/event-stream")


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


@pytest.mark.parametrize("model", ["gpt", "claude", "deepseek"])
def test_tool_call_comes_back_as_openai_tool_calls(client: openai.OpenAI, mock: MockProvider,
                                                   model: str) -> None:
    reply = client.chat.completions.create(model=model, messages=HELLO, tools=[WEATHER_TOOL])
    call = reply.choices[0].message.tool_calls[0]
    sent = mock.last_answer()
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == sent.tool_call[1]


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_streamed_tool_call_accumulates_to_the_same_call(client: openai.OpenAI, mock: MockProvider,
                                                         model: str) -> None:
    chunks = list(client.chat.completions.create(model=model, messages=HELLO,
                                                 tools=[WEATHER_TOOL], stream=True))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert deltas[0].id and deltas[0].function.name == "get_weather"
    assert json.loads(arguments) == mock.last_answer().tool_call[1]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_claude_receives_a_valid_messages_request(client: openai.OpenAI, mock: MockProvider,
                                                  ) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "user", "content": [{"type": "text", "text": "And this image?"},
                                     {"type": "image_url",
                                      "image_url": {"url": "data:image/png;base64,iVBORw0K"}}]},
    ]
    client.chat.completions.create(model="claude", messages=messages, tools=[WEATHER_TOOL],
                                   stop=["END"], temperature=0.2)
    request = mock.calls("claude-sonnet-4-5")[-1]
    body = request.body
    assert request.headers["x-api-key"] == "sk-ant-test"
    assert body["system"] == "Be brief."
    assert body["max_tokens"] == 64000  # the model's output limit from litellm's price map
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}]
    tool_result, text, image = body["messages"][2]["content"]
    assert tool_result == {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}
    assert text == {"type": "text", "text": "And this image?"}
    assert image["source"] == {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}
    assert body["stop_sequences"] == ["END"]
    assert body["tools"][0]["input_schema"] == WEATHER_TOOL["function"]["parameters"]


def test_response_format_json_schema_through_claude_returns_json_content(
        client: openai.OpenAI, mock: MockProvider) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    reply = client.chat.completions.create(
        model="claude", messages=HELLO,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
    body = mock.calls("claude-sonnet-4-5")[-1].body
    assert body["tool_choice"] == {"type": "tool", "name": "json_tool_call"}
    assert body["tools"][0]["input_schema"] == schema
    assert json.loads(reply.choices[0].message.content) == {"answer": "from claude-sonnet-4-5"}
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.tool_calls is None


def test_response_format_reaches_openai_providers_untouched(client: openai.OpenAI,
                                                            mock: MockProvider) -> None:
    client.chat.completions.create(model="gpt", messages=HELLO,
                                   response_format={"type": "json_object"})
    assert mock.calls("gpt-4o-mini")[-1].body["response_format"] == {"type": "json_object"}


def test_unknown_fields_pass_through_to_openai_compatible_providers(
        client: openai.OpenAI, mock: MockProvider) -> None:
    client.chat.completions.create(model="llama-groq", messages=HELLO, seed=7,
                                   extra_body={"reasoning_format": "parsed", "x_custom": 1})
    request = mock.calls("llama-3.3-70b-versatile")[-1]
    assert request.body["reasoning_format"] == "parsed"
    assert request.body["x_custom"] == 1
    assert request.body["seed"] == 7
    assert request.body["model"] == "llama-3.3-70b-versatile"
    assert request.headers["Authorization"] == "Bearer gsk-test"


def test_provider_secret_comes_from_the_environment(client: openai.OpenAI,
                                                    mock: MockProvider) -> None:
    client.chat.completions.create(model="gpt", messages=HELLO)
    assert mock.calls("gpt-4o-mini")[-1].headers["Authorization"] == "Bearer sk-openai-test"


def test_model_without_its_secret_is_skipped(client: openai.OpenAI, mock: MockProvider) -> None:
    raw = client.chat.completions.with_raw_response.create(model="resilient", messages=HELLO)
    assert raw.headers["x-gateway-model"] == "claude-slow"
    assert raw.headers["x-gateway-attempts"] == "1"
    assert [r.path for r in mock.calls()] == ["/v1/messages"]


def test_falls_back_when_first_model_returns_529(client: openai.OpenAI, mock: MockProvider) -> None:
    mock.script("claude-sonnet-4-5", Step(status=529, error_message="Overloaded"))
    raw = client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
    assert raw.parse().model == "gpt-backup"
    assert raw.headers["x-gateway-attempts"] == "2"


def test_falls_back_when_provider_rejects_its_key(client: openai.OpenAI,
                                                  mock: MockProvider) -> None:
    mock.script("gpt-4o-mini", Step(status=401, error_message="Incorrect API key"))
    reply = client.chat.completions.create(model="fast", messages=HELLO)
    assert reply.model == "llama-groq"


def test_client_error_is_returned_at_once_with_the_providers_status(
        client: openai.OpenAI, mock: MockProvider) -> None:
    mock.script("claude-sonnet-4-5", Step(status=400, error_message="temperature: too high"))
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="smart", messages=HELLO)
    assert "temperature: too high" in caught.value.message
    assert caught.value.response.headers["x-gateway-attempts"] == "1"
    assert mock.calls("gpt-backup") == []


def test_context_overflow_falls_back(client: openai.OpenAI, mock: MockProvider) -> None:
    mock.script("gpt-4o-mini", Step(status=400, error_code="context_length_exceeded",
                                    error_message="maximum context length is 128000 tokens"))
    assert client.chat.completions.create(model="fast", messages=HELLO).model == "llama-groq"


def test_every_model_failing_answers_502_listing_each_attempt(
        client: openai.OpenAI, mock: MockProvider) -> None:
    mock.script("claude-sonnet-4-5", Step(status=529, error_message="Overloaded"))
    mock.script("gpt-backup", Step(status=503, error_message="down for maintenance"))
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="smart", messages=HELLO)
    error = caught.value
    assert error.status_code == 502
    assert "claude: 529 the provider failed (overloaded_error)" in error.message
    assert "gpt-backup: 503 the provider failed (server_error)" in error.message
    assert "Overloaded" not in error.message  # the provider's own words are not passed on
    assert error.response.headers["x-gateway-attempts"] == "2"


def test_a_hanging_provider_times_out_and_falls_back(client: openai.OpenAI,
                                                     mock: MockProvider) -> None:
    mock.script("claude-sonnet-4-5", Step(hang=True))
    raw = client.chat.completions.with_raw_response.create(model="smart", messages=HELLO)
    assert raw.parse().model == "gpt-backup"
    assert raw.headers["x-gateway-attempts"] == "2"


def test_stream_falls_back_before_its_first_token(client: openai.OpenAI,
                                                  mock: MockProvider) -> None:
    mock.script("claude-sonnet-4-5", Step(drop_after=1))  # message_start, then the line dies
    chunks = list(client.chat.completions.create(model="smart", messages=HELLO, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert {c.model for c in chunks} == {"gpt-backup"}
    assert text == mock.last_answer().text


def test_stream_failing_after_its_first_token_ends_with_an_error_event(
        client: openai.OpenAI, mock: MockProvider) -> None:
    mock.script("gpt-4o-mini", Step(drop_after=3))  # role chunk and two words, then cut
    stream = client.chat.completions.create(model="fast", messages=HELLO, stream=True)
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "mock answer"
    assert "closed the connection" in caught.value.message
    assert mock.calls("llama-3.3-70b-versatile") == []


def test_a_stream_that_hangs_before_its_first_token_falls_back(client: openai.OpenAI,
                                                               mock: MockProvider) -> None:
    mock.script("claude-sonnet-4-5", Step(hang=True))
    with client.chat.completions.with_streaming_response.create(
            model="smart", messages=HELLO, stream=True) as response:
        assert response.headers["x-gateway-model"] == "gpt-backup"
        assert response.headers["x-gateway-attempts"] == "2"
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == mock.last_answer().text



def test_a_cookie_one_callers_answer_set_never_reaches_the_provider_again(
        tmp_path: Path, mock: MockProvider) -> None:
    # A host name, not 127.0.0.1: a cookie jar would keep a host's cookies, never an IP's.
    base = mock.base_url.replace("127.0.0.1", "localhost")  # type: ignore[attr-defined]
    config = tmp_path / "router.yaml"
    config.write_text(f"providers:\n  openai: {{api_key: k, api_base: '{base}/v1'}}\n"
                      "models:\n  gpt: {provider: openai, model: gpt-4o-mini}\n"
                      f"keys:\n  - {{name: a, key_sha256: {sha(KEY_A)}}}\n"
                      f"  - {{name: b, key_sha256: {sha(KEY_B)}}}\n"
                      f"settings: {{data_dir: {tmp_path}/data, usage_log: ''}}\n")
    mock.script("gpt-4o-mini", Step(set_cookie="session=team-a-secret; Path=/"))
    with gateway_running(config, tmp_path / "gateway.log") as base_url:
        for key, text in ((KEY_A, "first"), (KEY_B, "second")):
            with openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0) as client:
                client.chat.completions.create(
                    model="gpt", messages=[{"role": "user", "content": text}])
    _, second = mock.calls("gpt-4o-mini")
    assert "cookie" not in {name.lower() for name in second.headers}
