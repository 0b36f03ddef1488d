"""The mock speaks each provider's real wire format: the official SDKs parse every answer."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from gateway.demo.mockprovider import (
    ANTHROPIC_BLOCKS,
    ANTHROPIC_COUNT_FIELDS,
    ANTHROPIC_FIELDS,
    MockProvider,
    Step,
)

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
        claude.messages.create(model="c", max_tokens=5, messages=[{"role": "tool",
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


# --- what Claude Code needs of the Anthropic side --------------------------------------

THINKING = {"type": "enabled", "budget_tokens": 1024}
TOOLS = [{"name": name, "input_schema": {"type": "object", "properties": {
    "command": {"type": "string"}}}} for name in ("Bash", "Read", "Write")]
# Parameters the SDK sends as headers (anthropic-beta, ...), not in the body.
HEADER_PARAMS = {"betas", "user_profile_id", "workspace_id"}


def _sdk_fields(*typed_dicts: type) -> set[str]:
    return {name for t in typed_dicts for name in t.__annotations__} - HEADER_PARAMS


def _sdk_block_types(tp: Any) -> set[str]:
    """Every `type` literal of a union of the SDK's block classes."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _sdk_block_types(typing.get_args(tp)[0])
    if origin is typing.Union:
        return set().union(*(_sdk_block_types(arg) for arg in typing.get_args(tp)))
    if origin is typing.Literal:
        return {arg for arg in typing.get_args(tp) if isinstance(arg, str)}
    if origin is not None:  # Required[...]
        return _sdk_block_types(typing.get_args(tp)[0])
    fields = getattr(tp, "model_fields", None)
    return _sdk_block_types(fields["type"].annotation if fields else
                            typing.get_type_hints(tp)["type"])


def test_the_mock_takes_every_field_and_block_the_sdk_can_send() -> None:
    from anthropic.types import message_count_tokens_params, message_create_params
    from anthropic.types.beta import message_count_tokens_params as beta_count_params
    from anthropic.types.beta import message_create_params as beta_create_params
    from anthropic.types.beta.beta_content_block_param import BetaContentBlockParam
    from anthropic.types.content_block_param import ContentBlockParam

    sent = _sdk_fields(message_create_params.MessageCreateParamsBase,
                       beta_create_params.MessageCreateParamsBase) | {"stream"}
    assert sent <= ANTHROPIC_FIELDS, sent - ANTHROPIC_FIELDS
    counted = _sdk_fields(message_count_tokens_params.MessageCountTokensParams,
                          beta_count_params.MessageCountTokensParams)
    assert counted <= ANTHROPIC_COUNT_FIELDS, counted - ANTHROPIC_COUNT_FIELDS
    blocks = _sdk_block_types(ContentBlockParam) | _sdk_block_types(BetaContentBlockParam)
    assert blocks <= ANTHROPIC_BLOCKS, blocks - ANTHROPIC_BLOCKS


def test_a_beta_call_with_claude_codes_fields_is_answered_and_recorded_as_sent(
        claude: anthropic.Anthropic, mock: MockProvider) -> None:
    message = claude.beta.messages.create(
        model="c", max_tokens=64, messages=HELLO, betas=["context-management-2025-06-27"],
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        output_config={"effort": "high"}, metadata={"user_id": "u-1"}, service_tier="auto")
    assert message.content[0].type == "text"
    [received] = mock.calls("c")
    assert received.headers["Anthropic-Beta"] == "context-management-2025-06-27"
    assert received.body["context_management"]["edits"][0]["keep"] == "all"
    # Claude Code's TypeScript SDK marks its beta calls in the query, as `?beta=true`
    httpx.post(f"{mock.base_url}/v1/messages?beta=true", json={  # type: ignore[attr-defined]
        "model": "q", "max_tokens": 5, "messages": HELLO}, headers={
            "x-api-key": "k", "anthropic-version": "2023-06-01"}).raise_for_status()
    [received] = mock.calls("q")
    assert (received.method, received.path, received.query) == ("POST", "/v1/messages",
                                                                "beta=true")


def test_thinking_opens_the_answer_signed_and_the_stream_builds_the_same_message(
        claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="c", max_tokens=2048, messages=HELLO,
                                     thinking=THINKING)
    thinking, text = message.content
    assert thinking.type == "thinking" and "hello mock" in thinking.thinking
    assert thinking.signature and text.type == "text"
    assert message.usage.output_tokens == len(thinking.thinking.split()) + len(
        text.text.split())  # thinking is billed as output
    with claude.messages.stream(model="c", max_tokens=2048, messages=HELLO,
                                thinking={"type": "adaptive"}) as stream:
        kinds = [(e.type, getattr(getattr(e, "delta", None), "type", None)) for e in stream]
        final = stream.get_final_message()
    assert [b.model_dump() for b in final.content] == [b.model_dump() for b in message.content]
    assert kinds.index(("content_block_delta", "signature_delta")) > kinds.index(
        ("content_block_delta", "thinking_delta"))
    assert final.usage.output_tokens == message.usage.output_tokens


def test_thinking_with_display_omitted_is_empty_but_signed(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="c", max_tokens=2048, messages=HELLO,
                                     thinking={"type": "adaptive", "display": "omitted"})
    assert message.content[0].type == "thinking"
    assert message.content[0].thinking == "" and message.content[0].signature
    plain = claude.messages.create(model="c", max_tokens=2048, messages=HELLO)
    assert [b.type for b in plain.content] == ["text"]  # no thinking unless asked


def test_count_tokens_is_the_input_the_same_body_is_charged(
        claude: anthropic.Anthropic) -> None:
    prompt: Any = {"model": "c", "system": "Be brief, please.", "tools": TOOLS,
                   "messages": [*HELLO, {"role": "assistant", "content": "Hi there."},
                                {"role": "user", "content": "mock:tool none and more words"}]}
    counted = claude.messages.count_tokens(**prompt)
    charged = claude.messages.create(max_tokens=50, **prompt)
    assert counted.input_tokens == charged.usage.input_tokens > 10
    beta = claude.beta.messages.count_tokens(**prompt, betas=["token-counting-2024-11-01"])
    assert beta.input_tokens == counted.input_tokens
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        claude.messages.count_tokens(**prompt, extra_body={"max_tokens": 5})


def test_a_marker_in_the_prompt_calls_that_one_tool_then_the_result_is_quoted(
        claude: anthropic.Anthropic) -> None:
    asked = [{"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>\ncontext\n</system-reminder>"},
        {"type": "text", "text": 'Please mock:tool Bash {"command": "echo tok-7"} now'}]}]
    message = claude.messages.create(model="c", max_tokens=500, messages=asked, tools=TOOLS)
    [call] = message.content
    assert (call.type, call.name, call.input) == ("tool_use", "Bash", {"command": "echo tok-7"})
    assert message.stop_reason == "tool_use"
    turn: Any = [*asked, {"role": "assistant", "content": [call.model_dump()]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                               "content": "tok-7\n"}]},
                 {"role": "system", "content": "a mid-conversation system message"}]
    with claude.messages.stream(model="c", max_tokens=500, messages=turn, tools=TOOLS) as s:
        final = s.get_final_message()
    assert [b.type for b in final.content] == ["text"] and "tok-7" in final.content[0].text
    words = claude.messages.create(model="c", max_tokens=500, tools=TOOLS, messages=[
        {"role": "user", "content": "hi mock:tool none"}])
    assert words.content[0].text == "mock answer from c to: hi mock:tool none"
    missing = claude.messages.create(model="c", max_tokens=500, tools=TOOLS, messages=[
        {"role": "user", "content": "mock:tool Grep"}])
    assert "no tool Grep is offered (offered: Bash, Read, Write)" in missing.content[0].text


def test_the_marker_works_the_same_on_the_openai_side(oai: openai.OpenAI) -> None:
    tools: Any = [{"type": "function", "function": {"name": t["name"],
                                                    "parameters": t["input_schema"]}}
                  for t in TOOLS]
    asked: Any = [{"role": "user", "content": 'mock:tool Read {"command": "cat x"}'}]
    reply = oai.chat.completions.create(model="m", messages=asked, tools=tools)
    [call] = reply.choices[0].message.tool_calls or []
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "Read", {"command": "cat x"})
    turn = [*asked, reply.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "the file's text"}]
    chunks = oai.chat.completions.create(model="m", messages=turn, tools=tools, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "mock answer from m after the tool said: the file's text"


def test_a_json_schema_in_output_config_gets_json_that_fits(
        claude: anthropic.Anthropic) -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string"}},
              "required": ["title"], "additionalProperties": False}
    message = claude.messages.create(model="c", max_tokens=100, messages=HELLO, output_config={
        "format": {"type": "json_schema", "schema": schema}})
    assert set(json.loads(message.content[0].text)) == {"title"}


def test_a_system_message_first_in_messages_is_refused(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="must follow a user message"):
        claude.messages.create(model="c", max_tokens=5, messages=[
            {"role": "system", "content": "x"}, *HELLO])


def test_a_tool_result_whose_turn_lost_its_thinking_is_refused_as_anthropic_does(
        claude: anthropic.Anthropic) -> None:
    asked: Any = [{"role": "user", "content": "mock:tool Bash"}]
    first = claude.messages.create(model="c", max_tokens=2048, messages=asked, tools=TOOLS,
                                   thinking=THINKING)
    thinking, call = first.content
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                           "content": "done"}]}
    replayed = claude.messages.create(model="c", max_tokens=2048, tools=TOOLS,
                                      thinking=THINKING, messages=[
        *asked, {"role": "assistant", "content": [thinking.model_dump(), call.model_dump()]},
        result])
    assert replayed.content[-1].text.endswith("after the tool said: done")
    with pytest.raises(anthropic.BadRequestError, match="must start with a thinking block"):
        claude.messages.create(model="c", max_tokens=2048, tools=TOOLS, thinking=THINKING,
                               messages=[*asked, {"role": "assistant",
                                                  "content": [call.model_dump()]}, result])


# --- OpenAI Responses API ---------------------------------------------------------------

WEATHER = {"type": "function", "name": "weather", "description": "the weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}


def test_responses_sdk_parses_response_and_usage(oai: openai.OpenAI, mock: MockProvider) -> None:
    mock.script("m", Step(cached_input_tokens=2))
    reply = oai.responses.create(model="m", input="hello mock", instructions="be brief")
    assert openai.types.responses.Response.model_validate(reply.model_dump()) == reply
    assert reply.id.startswith("resp_") and reply.object == "response"
    assert reply.status == "completed" and reply.model == "m"
    assert reply.output_text == "mock answer from m to: hello mock"
    assert reply.output[0].type == "message" and reply.output[0].role == "assistant"
    assert reply.instructions == "be brief"
    usage = reply.usage
    assert usage is not None and usage.input_tokens_details.cached_tokens == 2
    assert usage.output_tokens == len(mock.last_answer().pieces)
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert mock.calls("m")[-1].path == "/v1/responses"


def test_responses_stream_events_in_order(oai: openai.OpenAI, mock: MockProvider) -> None:
    with oai.responses.stream(model="m", input=[{"role": "user", "content": [
            {"type": "input_text", "text": "hello mock"}]}]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:5] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added",
                         "response.output_text.delta"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text == "mock answer from m to: hello mock"
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    assert final.status == "completed" and final.usage is not None


def test_responses_function_calls_then_answers_with_the_output(oai: openai.OpenAI) -> None:
    reply = oai.responses.create(model="m", input="what is the weather", tools=[WEATHER])
    call = reply.output[0]
    assert call.type == "function_call" and call.name == "weather"
    assert json.loads(call.arguments) == {"city": "from m"}  # fits the parameters
    assert call.call_id.startswith("call_")
    with oai.responses.stream(model="m", tools=[WEATHER], input=[
            {"role": "user", "content": "mock:tool weather {\"city\": \"Oslo\"}"}]) as stream:
        events = list(stream)
        streamed = stream.get_final_response()
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == {"city": "Oslo"} and done.name == "weather"
    assert streamed.output[0].arguments == done.arguments
    after = oai.responses.create(model="m", tools=[WEATHER], input=[
        {"role": "user", "content": "what is the weather"},
        {"type": "function_call", "call_id": call.call_id, "name": "weather",
         "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"}])
    assert after.output[0].type == "message"
    assert "sunny, 21C" in after.output_text


def test_responses_tool_choice_forces_or_refuses(oai: openai.OpenAI) -> None:
    other = {**WEATHER, "name": "clock", "parameters": {"type": "object"}}
    forced = oai.responses.create(model="m", input="hi", tools=[WEATHER, other],
                                  tool_choice={"type": "function", "name": "clock"})
    assert [o.name for o in forced.output if o.type == "function_call"] == ["clock"]
    words = oai.responses.create(model="m", input="hi", tools=[WEATHER], tool_choice="none")
    assert words.output_text.startswith("mock answer from m")


def test_responses_cut_by_max_output_tokens(oai: openai.OpenAI, mock: MockProvider) -> None:
    text = " ".join(f"w{i}" for i in range(40))
    mock.script("m", Step(text=text), Step(text=text))
    reply = oai.responses.create(model="m", input="hi", max_output_tokens=16)
    assert reply.status == "incomplete"
    assert reply.incomplete_details is not None
    assert reply.incomplete_details.reason == "max_output_tokens"
    assert reply.output_text == " ".join(f"w{i}" for i in range(16))
    with oai.responses.stream(model="m", input="hi", max_output_tokens=16) as stream:
        events = list(stream)
    last = events[-1]
    assert last.type == "response.incomplete" and last.response.status == "incomplete"
    assert last.response.output_text == reply.output_text
    with pytest.raises(openai.BadRequestError, match="max_output_tokens"):
        oai.responses.create(model="m", input="hi", max_output_tokens=5)


def test_responses_json_schema_answer_fits(oai: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}
    reply = oai.responses.create(model="m", input="a number", text={"format": {
        "type": "json_schema", "name": "num", "schema": schema, "strict": True}})
    assert isinstance(json.loads(reply.output_text)["n"], int)


def test_responses_reasoning_item_and_tokens(oai: openai.OpenAI) -> None:
    reply = oai.responses.create(model="gpt-5", input="think", include=[
        "reasoning.encrypted_content"], reasoning={"effort": "low", "summary": "auto"})
    reasoning = reply.output[0]
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    assert reasoning.summary[0].text.startswith("The mock thinks about: think")
    assert reply.usage is not None and reply.usage.output_tokens_details.reasoning_tokens > 0
    with oai.responses.stream(model="gpt-5", reasoning={"effort": "low", "summary": "auto"},
                              input=[{"type": "reasoning", "id": reasoning.id, "summary": [],
                                      "encrypted_content": reasoning.encrypted_content},
                                     {"role": "user", "content": "again"}]) as stream:
        kinds = [e.type for e in stream]
    assert "response.reasoning_summary_text.delta" in kinds
    assert kinds.index("response.reasoning_summary_part.done") < kinds.index(
        "response.content_part.added")


def test_responses_errors_and_prefixes(mock: MockProvider, oai: openai.OpenAI) -> None:
    mock.script("m", Step(status=429, error_message="slow down", retry_after="2"))
    with pytest.raises(openai.RateLimitError) as caught:
        oai.responses.create(model="m", input="hi", stream=True)
    assert caught.value.body["message"] == "slow down"
    with pytest.raises(openai.BadRequestError, match="Unknown parameter: 'messages'"):
        oai.responses.create(model="m", input="hi", extra_body={"messages": HELLO})
    with pytest.raises(openai.BadRequestError, match=r"tools\[0\].name"):
        oai.responses.create(model="m", input="hi", tools=[{"type": "function", "function": {
            "name": "t", "parameters": {}}}])  # type: ignore[list-item]
    with openai.OpenAI(base_url=f"{mock.base_url}/openai/v1", api_key="k",
                       max_retries=0) as groq:
        assert groq.responses.create(model="m", input="hi").status == "completed"


def test_responses_stream_can_drop(mock: MockProvider) -> None:
    mock.script("m", Step(drop_after=3))
    with httpx.Client(timeout=5) as client, pytest.raises(httpx.RemoteProtocolError):  # noqa: SIM117
        with client.stream("POST", f"{mock.base_url}/v1/responses",
                           json={"model": "m", "input": "hi", "stream": True}) as response:
            for _ in response.iter_bytes():
                pass


def test_responses_codex_shaped_request(mock: MockProvider) -> None:
    """As Codex asks: developer and user items, a function and a custom tool, no store,
    reasoning with encrypted content, a streamed answer calling the tool the prompt marks."""
    body = {"model": "gpt-5-codex", "instructions": "You are Codex.", "stream": True,
            "input": [{"type": "message", "role": "developer", "content": [
                {"type": "input_text", "text": "<permissions>...</permissions>"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text",
                 "text": 'list files mock:tool shell {"command": ["ls"]}'}]}],
            "tools": [{"type": "function", "name": "shell", "description": "run", "strict": False,
                       "parameters": {"type": "object", "properties": {"command": {
                           "type": "array", "items": {"type": "string"}}}}},
                      {"type": "custom", "name": "apply_patch", "description": "patch",
                       "format": {"type": "grammar", "syntax": "lark",
                                  "definition": "start: /.+/"}}],
            "tool_choice": "auto", "parallel_tool_calls": False, "store": False,
            "reasoning": {"effort": "medium", "summary": "auto"},
            "include": ["reasoning.encrypted_content"], "prompt_cache_key": "conv-1",
            "text": {"verbosity": "low"}}
    with httpx.Client(timeout=5) as client, client.stream(
            "POST", f"{mock.base_url}/v1/responses", json=body) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    events = [json.loads(line[6:]) for line in lines]
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed" and final["store"] is False
    assert [o["type"] for o in final["output"]] == ["reasoning", "function_call"]
    assert final["output"][0]["encrypted_content"]
    assert json.loads(final["output"][1]["arguments"]) == {"command": ["ls"]}
    assert mock.last_answer().asked.startswith("list files")  # the developer item is not asked
