"""OpenAI's Responses API served by a chat model: the body translated to OpenAI chat, the answer
and the stream translated back, each answer checked by the official `openai` SDK's types and by
OpenAI's OpenAPI schema (every response validated, every event validated, a stream's events
run through the SDK's own stream state into the response the non-streamed translation makes);
Codex CLI 0.171's real request (tests/fixtures) translated whole; then ResponsesViaChat over a
real OpenAI-compatible adapter talking to the mock provider."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai._types import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming
from openai.types.responses import Response, ResponseStreamEvent
from openai.types.responses.response_create_params import (
    ResponseCreateParamsNonStreaming,
    ResponseCreateParamsStreaming,
)
from pydantic import TypeAdapter

from gateway import completions
from gateway.demo import mockwire
from gateway.demo.mockprovider import MockProvider, Step
from gateway.errors import InvalidRequest, ProviderError, Unsupported
from gateway.providers.adapters import Adapters
from gateway.providers.responses_stream import EventTranslator
from gateway.providers.responses_translate import from_chat, to_chat
from gateway.providers.responses_via_chat import ResponsesViaChat
from tests.openai_conformance import problems
from tests.test_messages_translation import GPT, THINKER, config_for

EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
CHAT_REQUEST: TypeAdapter[Any] = TypeAdapter(CompletionCreateParamsStreaming)
RESPONSES_REQUEST: TypeAdapter[Any] = TypeAdapter(ResponseCreateParamsNonStreaming)
RESPONSES_STREAMED: TypeAdapter[Any] = TypeAdapter(ResponseCreateParamsStreaming)
CODEX = json.loads((Path(__file__).parent / "fixtures" / "codex_0.171_responses_turn.json")
                   .read_text())
READ_TOOL = {"type": "function", "name": "Read", "description": "Reads a file.",
             "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                            "required": ["path"], "additionalProperties": False},
             "strict": True}
CHAT_READ = {"type": "function", "function": {
    "name": "Read", "parameters": READ_TOOL["parameters"], "description": "Reads a file.",
    "strict": True}}
AGENTS: dict[str, Any] = {
    "type": "namespace", "name": "agents", "description": "Sub-agents.", "tools": [
    {"type": "function", "name": "spawn", "description": "Starts one.", "strict": False,
     "parameters": {"type": "object", "properties": {"task": {"type": "string"}}}}]}


def valid(response: dict[str, Any]) -> dict[str, Any]:
    """The response, valid in the SDK's type and in OpenAI's schema, as the SDK reads it."""
    assert problems("Response", response) == []
    return Response.model_validate(response).model_dump(exclude_none=True)


def checked(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events, each valid in the SDK's event union and in OpenAI's schema, numbered
    from 0 in order."""
    for n, event in enumerate(events):
        assert event["sequence_number"] == n
        assert problems("ResponseStreamEvent", event) == []
        EVENT.validate_python(event)
    return events


def accumulated(events: list[dict[str, Any]], body: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """The final response the SDK's own stream state makes of the events: from the deltas
    (each must agree with the item it fills), and the terminal event's, which it returns."""
    state: ResponseStreamState[Any] = ResponseStreamState(
        input_tools=(body or {}).get("tools") or omit, text_format=omit)
    snapshot = None
    for event in events:
        state.handle_event(EVENT.validate_python(event))
        snapshot = state.__dict__["_ResponseStreamState__current_snapshot"]
    assert snapshot is not None
    terminal = events[-1]["response"]
    streamed = {item.id: item for item in snapshot.output}
    for item in terminal["output"]:  # what the deltas built is what the items say
        built = streamed[item["id"]]
        if item["type"] == "function_call":
            assert built.arguments == item["arguments"]
        if item["type"] == "message":  # (the SDK adds no refusal deltas up: their part only)
            assert [p.model_dump(exclude_none=True) for p in built.content] == [
                p if p["type"] == "output_text" else {**p, "refusal": ""}
                for p in item["content"]]
    if terminal["status"] == "completed":
        final = state._completed_response
        assert final is not None
        # The SDK adds parsed_arguments for strict tools; they are not on the wire.
        parsed: dict[str, Any] = final.to_dict()
        for item in parsed["output"]:
            item.pop("parsed_arguments", None)
        assert Response.model_validate(parsed).model_dump(exclude_none=True) == valid(terminal)
    return valid(terminal)


def stream_of(chunks: list[dict[str, Any]], body: dict[str, Any] | None = None,
              input_tokens: int = 1234) -> list[dict[str, Any]]:
    translator = EventTranslator("gpt", input_tokens, body or {"input": "x"})
    events = [e for chunk in chunks for e in translator.feed(copy.deepcopy(chunk))]
    assert translator.finished
    return checked(events)


def without_ids(value: Any) -> Any:
    """The value with the ids and times the gateway makes anew for each answer blanked."""
    if isinstance(value, dict):
        return {k: "-" if k in ("id", "item_id", "created_at") else without_ids(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    return value


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"].removeprefix("response.") for e in events]


# --- requests --------------------------------------------------------------------------

def test_a_codex_turn_becomes_the_chat_body_an_openai_model_takes() -> None:
    """Codex 0.171's second request of `codex exec "say hi"`, captured from the real CLI:
    developer messages, a reasoning item with encrypted_content, seven function calls
    answered, an output no call asked for, a namespace of tools and web_search."""
    # The SDK's request type, but for the `content: null` Codex sends in reasoning items
    # (OpenAI takes it; the SDK's type says a list).
    RESPONSES_STREAMED.validate_python({**CODEX, "input": [
        {k: v for k, v in item.items() if v is not None} for item in CODEX["input"]]})
    chat = to_chat(CODEX, GPT)

    messages = chat["messages"]
    assert [m["role"] for m in messages] == ["system", "system", "user", "user", "assistant",
                                             *["tool"] * 7, "user"]
    assert messages[0]["content"].startswith("You are a coding agent running in the Codex CLI")
    assert messages[3] == {"role": "user", "content": "say hi"}
    calls = messages[4]["tool_calls"]
    assert [c["id"] for c in calls] == [f"call_mock000{n}" for n in range(1, 8)]
    assert calls[0]["function"]["name"] == "exec_command"
    assert json.loads(calls[0]["function"]["arguments"])["cmd"] == "from m"
    assert [m["tool_call_id"] for m in messages[5:12]] == [c["id"] for c in calls]
    assert messages[12] == {"role": "user",
                            "content": "Output of the tool agent.goal_objective:\nfrom m"}
    names = [t["function"]["name"] for t in chat["tools"]]
    assert names == ["exec_command", "write_stdin", "request_user_input", "view_image",
                     "multi_agent_v1__close_agent", "multi_agent_v1__resume_agent",
                     "multi_agent_v1__send_input", "multi_agent_v1__spawn_agent",
                     "multi_agent_v1__wait_agent", "get_goal", "create_goal", "update_goal"]
    assert chat["tool_choice"] == "auto" and chat["parallel_tool_calls"] is True
    assert set(chat) == {"model", "messages", "tools", "tool_choice", "parallel_tool_calls"}
    CHAT_REQUEST.validate_python({**chat, "stream": True})  # OpenAI's own request schema


def test_reasoning_and_openais_bookkeeping_never_reach_another_provider() -> None:
    sent = orjson.dumps(to_chat(CODEX, GPT)).decode()

    assert "encrypted_content" not in sent and "bW9jay1zaWduYXR1cmU6" not in sent
    assert "The mock thinks about" not in sent and "rs_e15c" not in sent
    assert "prompt_cache_key" not in sent and "client_metadata" not in sent
    assert "x-codex-installation-id" not in sent and "web_search" not in sent


BODY: dict[str, Any] = {
    "model": "smart", "instructions": "Answer briefly.", "tools": [READ_TOOL],
    "input": [
        {"role": "developer", "content": "Use the tools."},
        {"role": "user", "content": "Look at a.png and the spec."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Here:"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=",
             "detail": "high"},
            {"type": "input_file", "filename": "spec.pdf",
             "file_data": "data:application/pdf;base64,JVBERi0x"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hm"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Reading both.", "annotations": []}]},
        {"type": "function_call", "call_id": "call_a", "name": "Read",
         "arguments": '{"path": "/a"}'},
        {"type": "function_call", "call_id": "call_b", "name": "Read",
         "arguments": '{"path": "/b"}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "A text"},
        {"type": "function_call_output", "call_id": "call_b", "output": [
            {"type": "input_text", "text": "a screenshot"},
            {"type": "input_image", "image_url": "https://example.com/b.png"}]},
        {"type": "message", "role": "assistant", "id": "msg_2", "status": "completed",
         "content": [{"type": "output_text", "text": "Both read.", "annotations": []}]},
        {"type": "function_call", "call_id": "call_c", "name": "Read",
         "arguments": '{"path": "/c"}'},
        {"type": "function_call_output", "call_id": "call_c", "output": "C text"},
        {"role": "user", "content": "Now summarise."}],
}


def test_every_input_form_becomes_its_chat_message() -> None:
    RESPONSES_REQUEST.validate_python(BODY)  # a body the OpenAI SDK could send
    chat = to_chat(BODY, GPT)

    def call(call_id: str, path: str) -> dict[str, Any]:
        return {"id": call_id, "type": "function",
                "function": {"name": "Read", "arguments": f'{{"path": "{path}"}}'}}

    assert chat["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "system", "content": "Use the tools."},
        {"role": "user", "content": "Look at a.png and the spec."},
        {"role": "user", "content": [
            {"type": "text", "text": "Here:"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=",
                                                "detail": "high"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0x",
                                      "filename": "spec.pdf"}}]},
        # the text before the calls and the calls: one assistant message
        {"role": "assistant", "content": "Reading both.",
         "tool_calls": [call("call_a", "/a"), call("call_b", "/b")]},
        {"role": "tool", "tool_call_id": "call_a", "content": "A text"},
        {"role": "tool", "tool_call_id": "call_b", "content": "a screenshot"},
        {"role": "user", "content": [
            {"type": "text", "text": "The result of tool call call_b came with these files:"},
            {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}}]},
        {"role": "assistant", "content": "Both read.", "tool_calls": [call("call_c", "/c")]},
        {"role": "tool", "tool_call_id": "call_c", "content": "C text"},
        {"role": "user", "content": "Now summarise."}]
    assert chat["tools"] == [CHAT_READ]
    CHAT_REQUEST.validate_python({**chat, "stream": True})


def test_a_string_input_is_one_user_message_and_settings_go_as_chat_names_them() -> None:
    body = {"model": "smart", "input": "Hi.", "temperature": 0.2, "top_p": 0.9, "user": "u1",
            "reasoning": {"effort": "low", "summary": "auto"}, "store": False,
            "include": ["reasoning.encrypted_content"], "metadata": {"a": "b"},
            "truncation": "auto", "service_tier": "auto", "background": False,
            "prompt_cache_key": "k", "stream_options": {"include_obfuscation": False}}
    RESPONSES_REQUEST.validate_python(body)

    assert to_chat(body, GPT) == {"model": "gpt", "messages": [{"role": "user", "content": "Hi."}],
                                  "temperature": 0.2, "top_p": 0.9, "user": "u1",
                                  "reasoning_effort": "low"}


def test_the_output_limit_goes_in_the_field_the_model_reads() -> None:
    body = {"input": "x", "max_output_tokens": 777}

    assert to_chat(body, GPT)["max_tokens"] == 777
    reasoning = to_chat(body, THINKER)
    assert reasoning["max_completion_tokens"] == 777 and "max_tokens" not in reasoning
    assert "max_tokens" not in to_chat({"input": "x"}, GPT)


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", "auto"), ("none", "none"), ("required", "required"),
    ({"type": "function", "name": "Read"}, {"type": "function", "function": {"name": "Read"}}),
    (None, None),
])
def test_tool_choice_becomes_chats(choice: Any, expected: Any) -> None:
    body: dict[str, Any] = {"input": "x", "tools": [READ_TOOL], "parallel_tool_calls": False}
    if choice is not None:
        body["tool_choice"] = choice

    chat = to_chat(body, GPT)

    assert chat.get("tool_choice") == expected and chat["parallel_tool_calls"] is False


def test_without_tools_no_tool_settings_are_sent_since_openai_refuses_them() -> None:
    body = {"input": "x", "tool_choice": "auto", "parallel_tool_calls": True,
            "tools": [{"type": "web_search"}]}

    assert set(to_chat(body, GPT)) == {"model", "messages"}


def test_a_namespace_s_tools_go_as_functions_named_with_it() -> None:
    body = {"input": "x", "tools": [AGENTS],
            "tool_choice": {"type": "function", "name": "spawn", "namespace": "agents"}}

    chat = to_chat(body, GPT)

    assert chat["tools"] == [{"type": "function", "function": {
        "name": "agents__spawn", "description": "Sub-agents. Starts one.", "strict": False,
        "parameters": AGENTS["tools"][0]["parameters"]}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "agents__spawn"}}


def test_structured_output_becomes_a_response_format() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"], "additionalProperties": False}
    as_schema = {"input": "x", "text": {"format": {"type": "json_schema", "name": "place",
                                                   "schema": schema, "strict": True}}}
    RESPONSES_REQUEST.validate_python({**as_schema, "model": "smart"})

    assert to_chat(as_schema, GPT)["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "place", "schema": schema,
                                               "strict": True}}
    as_object = {"input": "x", "text": {"format": {"type": "json_object"}}}
    assert to_chat(as_object, GPT)["response_format"] == {"type": "json_object"}
    assert "response_format" not in to_chat({"input": "x", "text": {"format": {
        "type": "text"}, "verbosity": "low"}}, GPT)


@pytest.mark.parametrize(("change", "param", "says"), [
    ({"previous_response_id": "resp_abc"}, "previous_response_id",
     "not in the gateway's store; only the provider that made it can continue it"),
    ({"input": [{"role": "user", "content": "x"}, {"type": "item_reference", "id": "msg_1"}]},
     "input.1.type", "'item_reference' items can be sent only to OpenAI's models"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
     "input.0.content.0", "file_id"),
    ({"input": [{"role": "user", "content": [{"type": "input_file",
                                              "file_url": "https://x/a.pdf"}]}]},
     "input.0.content.0", "file_url"),
    ({"tools": [READ_TOOL, {"type": "custom", "name": "apply_patch"}]}, "tools.1",
     "'custom' runs only with OpenAI's models"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools.0",
     "'file_search'"),
    ({"tools": [READ_TOOL, {"type": "web_search"}], "tool_choice": {"type": "web_search"}},
     "tool_choice", "forces web_search"),
    ({"tools": [READ_TOOL], "tool_choice": {"type": "file_search"}}, "tool_choice",
     "'file_search' cannot be translated"),
    ({"conversation": "conv_1"}, "conversation", "kept by OpenAI"),
    ({"background": True}, "background", "background"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input.0.role", "must be 'user'"),
    ({"input": [{"role": "system", "content": "only rules"}]}, "input", "no item"),
    ({"input": [{"role": "developer", "content": [
        {"type": "input_image", "image_url": "https://x/a.png"}]}]}, "input.0.content",
     "text only"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format", "schema"),
    ({"input": 5}, "input", "string or a list"),
])
def test_what_chat_cannot_carry_is_refused_saying_what_to_change(
        change: dict[str, Any], param: str, says: str) -> None:
    body = {"input": [{"role": "user", "content": "x"}], **change}

    with pytest.raises(InvalidRequest) as caught:
        to_chat(body, GPT)

    assert caught.value.param == param
    assert says in caught.value.message and param.split(".")[0] in caught.value.message


# --- answers ---------------------------------------------------------------------------

COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1772400000,
    "model": "gpt", "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None,
                                 "message": {
                                     "role": "assistant", "refusal": None,
                                     "reasoning_content": "The user wants the tests.",
                                     "content": "Let me check the tests too.",
                                     "tool_calls": [
                                         {"id": "call_1", "type": "function", "function": {
                                             "name": "Read", "arguments":
                                                 '{"path": "tests"}'}},
                                         {"id": "functions.spawn:1", "type": "function",
                                          "function": {"name": "agents__spawn", "arguments":
                                                       '{"task": "lint"}'}}]}}],
    "usage": {"prompt_tokens": 2100, "completion_tokens": 57, "total_tokens": 2157,
              "prompt_tokens_details": {"cached_tokens": 2000},
              "completion_tokens_details": {"reasoning_tokens": 20}},
}
ASKED: dict[str, Any] = {"model": "smart", "input": "Check the tests.",
                         "tools": [READ_TOOL, AGENTS], "instructions": "Be brief.",
                         "max_output_tokens": 500, "metadata": {"team": "a"}, "store": False,
                         "temperature": 0.5, "user": "u1",
                         "reasoning": {"effort": "low", "summary": "auto"}}


def test_a_chat_answer_becomes_a_whole_response_object() -> None:
    response = from_chat(COMPLETION, "gpt", ASKED)

    assert response["id"].startswith("resp_gw_") and len(response["id"]) == 8 + 32
    assert isinstance(response["created_at"], int)
    ids = [item["id"] for item in response["output"]]
    assert [i.split("_gw_")[0] for i in ids] == ["rs", "msg", "fc", "fc"]
    assert without_ids(valid(response)) == without_ids(valid({
        "id": "-", "object": "response", "created_at": 0, "status": "completed",
        "background": False, "error": None, "incomplete_details": None,
        "instructions": "Be brief.", "max_output_tokens": 500, "metadata": {"team": "a"},
        "model": "gpt", "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": "low", "summary": "auto"}, "store": False,
        "temperature": 0.5, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
        "tools": [READ_TOOL, AGENTS], "top_p": None, "truncation": "disabled", "user": "u1",
        "output": [
            {"type": "reasoning", "id": "-",
             "summary": [{"type": "summary_text", "text": "The user wants the tests."}]},
            {"type": "message", "id": "-", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "Let me check the tests too.",
                          "annotations": [], "logprobs": []}]},
            {"type": "function_call", "id": "-", "call_id": "call_1", "name": "Read",
             "arguments": '{"path": "tests"}', "status": "completed"},
            # a namespaced tool's call comes back under its own name, in its namespace
            {"type": "function_call", "id": "-", "call_id": "functions.spawn:1",
             "name": "spawn", "namespace": "agents", "arguments": '{"task": "lint"}',
             "status": "completed"}],
        "usage": {"input_tokens": 2100,
                  "input_tokens_details": {"cached_tokens": 2000, "cache_write_tokens": 0},
                  "output_tokens": 57, "output_tokens_details": {"reasoning_tokens": 20},
                  "total_tokens": 2157}}))


def test_a_response_missing_a_required_field_is_caught_by_the_checks() -> None:
    """The checks above are strict enough to matter."""
    response = from_chat(COMPLETION, "gpt", ASKED)
    del response["output"][1]["content"][0]["annotations"]

    with pytest.raises(AssertionError):
        valid(response)


@pytest.mark.parametrize(("finish", "status", "details"), [
    ("stop", "completed", None), ("tool_calls", "completed", None), (None, "completed", None),
    ("length", "incomplete", {"reason": "max_output_tokens"}),
    ("content_filter", "incomplete", {"reason": "content_filter"})])
def test_finish_reasons_become_the_status(finish: str | None, status: str,
                                          details: dict[str, str] | None) -> None:
    completion = {"id": "chatcmpl-1", "choices": [{"index": 0, "finish_reason": finish,
                                                   "message": {"role": "assistant",
                                                               "content": "Hi."}}],
                  "usage": {"prompt_tokens": 5, "completion_tokens": 1}}

    response = valid(from_chat(completion, "gpt", {"input": "x"}))

    assert response["status"] == status and response.get("incomplete_details") == details


def test_a_refusal_is_a_refusal_part() -> None:
    completion = {"id": "chatcmpl-1", "choices": [{"index": 0, "finish_reason": "stop",
                                                   "message": {"role": "assistant",
                                                               "content": None,
                                                               "refusal": "I can't."}}]}

    [message] = valid(from_chat(completion, "gpt", {"input": "x"}))["output"]

    assert message["content"] == [{"type": "refusal", "refusal": "I can't."}]


# --- streams ---------------------------------------------------------------------------

def test_a_stream_is_the_responses_event_sequence_and_accumulates_to_the_same_response(
        ) -> None:
    events = stream_of(list(completions.replay(COMPLETION)), ASKED)

    assert kinds(events) == [
        "created", "in_progress",
        "output_item.added", "reasoning_summary_part.added", "reasoning_summary_text.delta",
        "reasoning_summary_text.done", "reasoning_summary_part.done", "output_item.done",
        "output_item.added", "content_part.added", "output_text.delta", "output_text.done",
        "content_part.done", "output_item.done",
        "output_item.added", "function_call_arguments.delta",
        "output_item.added", "function_call_arguments.delta",
        "function_call_arguments.done", "output_item.done",
        "function_call_arguments.done", "output_item.done",
        "completed"]
    created = events[0]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    assert "usage" not in created  # OpenAI's schema has no null usage
    assert [e["output_index"] for e in events if e["type"].endswith("item.added")] == [0, 1, 2, 3]
    assert events[14]["item"] == {"type": "function_call", "id": events[14]["item"]["id"],
                                  "call_id": "call_1", "name": "Read", "arguments": "",
                                  "status": "in_progress"}
    assert events[20]["name"] == "spawn"  # the namespaced call, under its own name
    final = accumulated(events, ASKED)
    assert final["id"] == created["id"]
    assert without_ids(final) == without_ids(valid(from_chat(COMPLETION, "gpt", ASKED)))


def test_the_end_waits_for_the_usage_chunk_that_openai_sends_after_the_finish() -> None:
    *chunks, finish, usage = completions.replay(COMPLETION)
    translator = EventTranslator("gpt", 10, ASKED)
    for chunk in chunks:
        translator.feed(chunk)

    at_finish = translator.feed(finish)
    at_usage = translator.feed(usage)

    assert "response.completed" not in [e["type"] for e in at_finish]
    assert kinds(at_usage) == ["completed"]
    assert at_usage[0]["response"]["usage"]["output_tokens"] == 57


def test_running_usage_before_the_finish_is_not_taken_for_the_final_one() -> None:
    """vLLM's continuous usage stats: every chunk carries the counts so far."""
    *chunks, finish, last = completions.replay(COMPLETION)
    for n, chunk in enumerate(chunks):
        chunk["usage"] = {"prompt_tokens": 2100, "completion_tokens": n}

    events = stream_of([*chunks, finish, last], ASKED)

    assert events[-1]["response"]["usage"]["output_tokens"] == 57
    assert kinds(events).count("completed") == 1


def mock_chunks(text: str, calls: tuple[tuple[str, dict[str, Any]], ...] = (),
                finish: str = "stop") -> list[dict[str, Any]]:
    """Text word by word and tool calls 8 characters at a time, as the mock streams them."""
    answer = mockwire.Answer("gpt-4o-mini", text, calls, input_tokens=40,
                             cached_input_tokens=0, finish_reason=finish)
    return mockwire.openai_chunks(answer, include_usage=True)


def assembled(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    whole = completions.Assembler()
    for chunk in chunks:
        whole.add(chunk)
    return whole.completion()


@pytest.mark.parametrize(("text", "calls"), [
    ("Just words, one at a time.", ()),
    ("", (("Read", {"path": "/repo/a.py"}),)),
    ("Reading both files now.", (("Read", {"path": "/repo/a.py"}),
                                 ("Read", {"path": "/repo/b.py"}))),
])
def test_text_and_tool_calls_stream_as_they_come_and_end_as_from_chat_says(
        text: str, calls: tuple[tuple[str, dict[str, Any]], ...]) -> None:
    chunks = mock_chunks(text, calls, "tool_calls" if calls else "stop")
    body = {"input": "x", "tools": [READ_TOOL]}

    events = stream_of(chunks, body)

    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == text and (len(deltas) > 1 or not text)
    final = accumulated(events, body)
    assert without_ids(final) == without_ids(valid(from_chat(assembled(chunks), "gpt", body)))
    assert [json.loads(i["arguments"]) for i in final["output"] if i["type"] ==
            "function_call"] == [arguments for _, arguments in calls]
    arguments = [e for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert len(arguments) >= 2 * len(calls)  # fragment by fragment, not held


def test_the_first_bytes_of_a_tool_call_go_out_at_once() -> None:
    translator = EventTranslator("gpt", 10, {"input": "x"})
    translator.feed({"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant"}}]})

    events = translator.feed({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_w", "function": {"name": "Write", "arguments": '{"con'}}]}}]})

    assert kinds(events) == ["output_item.added", "function_call_arguments.delta"]
    assert events[1]["delta"] == '{"con'


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def call(index: int, **fields: Any) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, **fields}]}


USAGE = {"id": "chatcmpl-x", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}


def test_interleaved_parallel_tool_calls_each_fill_their_own_item() -> None:
    chunks = [chunk({"role": "assistant"}),
              chunk(call(0, id="call_a", function={"name": "Read", "arguments": ""})),
              chunk(call(1, id="call_b", function={"name": "Read", "arguments": '{"pa'})),
              chunk(call(0, function={"arguments": '{"path": "/x"}'})),
              chunk(call(1, function={"arguments": 'th": "/y"}'})),
              chunk({}, "tool_calls"), USAGE]

    final = accumulated(stream_of(chunks))

    assert [(i["call_id"], i["arguments"]) for i in final["output"]] == [
        ("call_a", '{"path": "/x"}'), ("call_b", '{"path": "/y"}')]
    assert without_ids(final) == without_ids(valid(from_chat(assembled(chunks), "gpt",
                                                             {"input": "x"})))


def test_text_after_a_tool_call_is_a_new_message_item_after_it() -> None:
    chunks = [chunk({"role": "assistant", "content": "First I read."}),
              chunk(call(0, id="call_a", function={"name": "Read", "arguments": '{"path"'})),
              chunk({"content": "Then I say."}),
              chunk(call(0, function={"arguments": ': "/x"}'})),
              chunk({}, "tool_calls"), USAGE]

    events = stream_of(chunks)

    final = accumulated(events)
    assert [(i["type"], i.get("content", [{}])[0].get("text")) for i in final["output"]] == [
        ("message", "First I read."), ("function_call", None), ("message", "Then I say.")]
    assert final["output"][1]["arguments"] == '{"path": "/x"}'
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    done = [e["output_index"] for e in events if e["type"] == "response.output_item.done"]
    assert added == done == [0, 1, 2]  # each item done before the next is added


def test_a_stream_cut_by_the_limit_ends_incomplete() -> None:
    chunks = mock_chunks("Cut short here", finish="length")

    events = stream_of(chunks, {"input": "x", "max_output_tokens": 3})

    assert events[-1]["type"] == "response.incomplete"
    final = accumulated(events)
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["max_output_tokens"] == 3
    assert without_ids(final) == without_ids(valid(from_chat(
        assembled(chunks), "gpt", {"input": "x", "max_output_tokens": 3})))


def test_a_stream_without_a_usage_chunk_is_closed_with_the_estimate() -> None:
    chunks = [c for c in completions.replay(COMPLETION) if c.get("choices")]
    translator = EventTranslator("gpt", 321, ASKED)
    events = [e for c in chunks for e in translator.feed(c)]
    assert not translator.finished

    events += translator.close({"prompt_tokens": 321, "completion_tokens": 12})

    final = accumulated(checked(events), ASKED)
    assert final["usage"]["input_tokens"] == 321 and final["usage"]["output_tokens"] == 12
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "function_call",
                                                   "function_call"]
    assert translator.close({}) == [] and translator.feed(chunks[0]) == []


def test_an_empty_stream_still_makes_a_whole_response() -> None:
    translator = EventTranslator("gpt", 5, {"input": "x"})

    events = checked(translator.close({"prompt_tokens": 5, "completion_tokens": 0}))

    assert kinds(events) == ["created", "in_progress", "completed"]
    assert accumulated(events)["output"] == []


# --- ResponsesViaChat over a real adapter, against the mock provider -------------------

def run_via_chat(mock: MockProvider, model: str, call: Any) -> Any:
    config = config_for(mock.base_url)  # type: ignore[attr-defined]

    async def go() -> Any:
        adapters = Adapters(config)
        try:
            return await call(ResponsesViaChat(adapters.of(config)[model]))
        finally:
            await adapters.close()

    return asyncio.run(go())


async def _events(via: ResponsesViaChat, body: dict[str, Any]) -> list[dict[str, Any]]:
    return [e async for e in via.stream({**body, "stream": True})]


PLAIN: dict[str, Any] = {"model": "smart", "instructions": "Answer briefly.",
                         "input": "What is a gateway?", "max_output_tokens": 256}


def test_a_responses_body_is_answered_by_an_openai_chat_model(mock: MockProvider) -> None:
    response = valid(run_via_chat(mock, "gpt", lambda via: via.complete(PLAIN)))

    [message] = response["output"]
    assert message["content"][0]["text"] == "mock answer from gpt-4o-mini to: What is a gateway?"
    assert response["model"] == "gpt" and response["status"] == "completed"
    answer = mock.last_answer()
    assert response["usage"]["input_tokens"] == answer.input_tokens
    assert response["usage"]["output_tokens"] == answer.output_tokens
    [received] = mock.calls("gpt-4o-mini")
    assert received.path == "/v1/chat/completions"
    assert received.body["messages"] == [{"role": "system", "content": "Answer briefly."},
                                         {"role": "user", "content": "What is a gateway?"}]
    assert received.body["max_tokens"] == 256


def test_a_streamed_responses_body_gets_responses_events(mock: MockProvider) -> None:
    async def both(via: ResponsesViaChat) -> tuple[list[dict[str, Any]], int]:
        return await _events(via, PLAIN), await via.count_tokens(PLAIN)

    events, counted = run_via_chat(mock, "gpt", both)

    final = accumulated(checked(events))
    assert counted > 0 and final["model"] == "gpt"
    assert final["output"][0]["content"][0]["text"] == (
        "mock answer from gpt-4o-mini to: What is a gateway?")
    assert final["usage"]["output_tokens"] == mock.last_answer().output_tokens
    [received] = mock.calls("gpt-4o-mini")
    assert received.body["stream"] is True
    assert received.body["stream_options"] == {"include_usage": True}


def test_a_tool_round_trip_through_an_openai_chat_model(mock: MockProvider) -> None:
    ask = {"model": "smart", "tools": [READ_TOOL],
           "input": [{"role": "user", "content": 'Read it. mock:tool Read {"path": "/README"}'}]}

    first = valid(run_via_chat(mock, "gpt", lambda via: via.complete(ask)))

    [called] = first["output"]
    assert called["type"] == "function_call" and called["name"] == "Read"
    assert json.loads(called["arguments"]) == {"path": "/README"}
    follow = {**ask, "input": [*ask["input"], *first["output"],
                               {"type": "function_call_output", "call_id": called["call_id"],
                                "output": "# Demo"}]}

    final = accumulated(checked(run_via_chat(mock, "gpt", lambda via: _events(via, follow))))

    assert final["status"] == "completed" and final["output"][0]["type"] == "message"
    assert "# Demo" in final["output"][0]["content"][0]["text"]
    sent = mock.calls("gpt-4o-mini")[-1].body["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": called["call_id"], "content": "# Demo"}
    assert sent[-2]["tool_calls"][0]["id"] == called["call_id"]


def test_codex_s_turn_is_answered_by_an_openai_chat_model(mock: MockProvider) -> None:
    events = run_via_chat(mock, "gpt", lambda via: _events(via, CODEX))

    final = accumulated(checked(events), CODEX)
    assert final["status"] == "completed" and final["tools"] == CODEX["tools"]
    [received] = mock.calls("gpt-4o-mini")
    assert "encrypted_content" not in orjson.dumps(received.body).decode()
    # The last words are the user's (the goal objective): the mock calls every tool
    # again, and those of the namespace come back as Codex named them.
    calls = [(i.get("namespace"), i["name"]) for i in final["output"]]
    assert ("multi_agent_v1", "spawn_agent") in calls and (None, "exec_command") in calls
    assert len(calls) == len(received.body["tools"])


def test_a_reasoning_model_is_sent_the_limit_in_the_field_it_reads(mock: MockProvider) -> None:
    valid(run_via_chat(mock, "thinker", lambda via: via.complete(PLAIN)))

    [received] = mock.calls("gpt-5-mini")
    assert received.body["max_completion_tokens"] == 256 and "max_tokens" not in received.body


def test_a_provider_error_passes_through_untouched(mock: MockProvider) -> None:
    mock.script("gpt-4o-mini", Step(status=429, retry_after="7"))

    with pytest.raises(ProviderError) as caught:
        run_via_chat(mock, "gpt", lambda via: _events(via, PLAIN))

    assert caught.value.status == 429 and caught.value.retry_after_s == 7


def test_a_body_chat_cannot_carry_is_unsupported_so_the_chain_moves_on(
        mock: MockProvider) -> None:
    stateful = {**PLAIN, "previous_response_id": "resp_abc"}

    with pytest.raises(Unsupported) as caught:
        run_via_chat(mock, "gpt", lambda via: via.complete(stateful))

    assert caught.value.param == "previous_response_id"
    assert caught.value.message.startswith("gpt cannot take this request")
    assert mock.calls("gpt-4o-mini") == []


def test_a_field_of_a_type_the_api_never_has_is_an_invalid_request(mock: MockProvider) -> None:
    broken = {**PLAIN, "input": [{"type": "function_call", "call_id": "c", "name": "f",
                                  "arguments": {1, 2}}]}

    with pytest.raises(InvalidRequest) as caught:
        run_via_chat(mock, "gpt", lambda via: via.complete(broken))

    assert not isinstance(caught.value, Unsupported)
    assert "Responses API" in caught.value.message


def test_reasoning_and_a_refusal_stream_as_their_own_item_and_part() -> None:
    chunks = [chunk({"role": "assistant", "reasoning": "Is this "}),
              chunk({"reasoning": "allowed?"}),
              chunk({"content": "Well, "}), chunk({"refusal": "I can't help with that."}),
              chunk({}, "stop"), USAGE]

    events = stream_of(chunks)

    assert kinds(events)[2:9] == [
        "output_item.added", "reasoning_summary_part.added", "reasoning_summary_text.delta",
        "reasoning_summary_text.delta", "reasoning_summary_text.done",
        "reasoning_summary_part.done", "output_item.done"]
    assert "refusal.delta" in kinds(events) and "refusal.done" in kinds(events)
    final = accumulated(events)
    assert final["output"][0]["summary"] == [{"type": "summary_text",
                                              "text": "Is this allowed?"}]
    assert final["output"][1]["content"] == [
        {"type": "output_text", "text": "Well, ", "annotations": [], "logprobs": []},
        {"type": "refusal", "refusal": "I can't help with that."}]
    assert without_ids(final) == without_ids(valid(from_chat(assembled(chunks), "gpt",
                                                             {"input": "x"})))


def test_a_call_without_arguments_is_given_an_empty_object_both_ways() -> None:
    """Some providers send no arguments for a tool without parameters; Codex parses them."""
    chunks = [chunk({"role": "assistant"}),
              chunk(call(0, id="call_g", function={"name": "get_goal"})),
              chunk({}, "tool_calls"), USAGE]

    final = accumulated(stream_of(chunks))

    assert final["output"][0]["arguments"] == "{}"
    assert without_ids(final) == without_ids(valid(from_chat(assembled(chunks), "gpt",
                                                             {"input": "x"})))
