"""Anthropic Messages served by a chat model: the body translated to OpenAI chat, the answer
and the stream translated back, each answer checked by the official `anthropic` SDK's types
(every message validated, every event validated, a stream's events accumulated by the SDK's
own accumulator into the message the non-streamed translation makes); then MessagesViaChat
over a real OpenAI-compatible adapter talking to the mock provider."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming
from pydantic import TypeAdapter

from gateway import completions
from gateway.config import Config, Model, parse_config
from gateway.demo import mockwire
from gateway.demo.mockprovider import MockProvider, Step
from gateway.errors import InvalidRequest, ProviderError
from gateway.forms.anthropic import UNSIGNED
from gateway.providers.adapters import Adapters
from gateway.providers.anthropic_translate import openai_usage
from gateway.providers.messages_stream import EventTranslator
from gateway.providers.messages_translate import from_chat, to_chat
from gateway.providers.messages_via_chat import MessagesViaChat
from tests.conftest import sha

EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
CHAT_REQUEST: TypeAdapter[Any] = TypeAdapter(CompletionCreateParamsStreaming)
MESSAGES_REQUEST: TypeAdapter[Any] = TypeAdapter(MessageCreateParamsNonStreaming)
SIGNATURE = "EqQBCkYIBhgCIkDsignedbyanthropic="
USER_ID = ("user_8c1f3b2a9d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a"
           "_account__session_2f6a1c3e-9b7d-4e2a-8c5f-1d3b5a7c9e0f")
READ_TOOL = {"name": "Read", "description": "Reads a file from the local filesystem.",
             "input_schema": {"type": "object", "properties": {
                 "file_path": {"type": "string", "description": "The absolute path"}},
                 "required": ["file_path"], "additionalProperties": False}}
BASH_TOOL = {"name": "Bash", "description": "Runs a bash command.",
             "input_schema": {"type": "object", "properties": {"command": {"type": "string"}},
                              "required": ["command"]},
             "cache_control": {"type": "ephemeral"}}
# What Claude Code sends on its second turn: cached system blocks, tools, signed thinking
# from the turn before, a tool_use answered by a tool_result and more words.
CLAUDE_CODE: dict[str, Any] = {
    "model": "smart",
    "max_tokens": 32000,
    "system": [
        {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
         "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "You are an interactive CLI tool that helps users with "
         "software engineering tasks.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>The date is 2026-03-02.</system-reminder>"},
            {"type": "text", "text": "What does README.md say?",
             "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should read the file.", "signature": SIGNATURE},
            {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
            {"type": "text", "text": "I'll read it."},
            {"type": "tool_use", "id": "toolu_01ReadMe", "name": "Read",
             "input": {"file_path": "/repo/README.md"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01ReadMe",
             "content": [{"type": "text", "text": "# Demo"}, {"type": "text", "text": "A demo."}],
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Summarise it in one line."}]},
    ],
    "tools": [READ_TOOL, BASH_TOOL],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "thinking": {"type": "enabled", "budget_tokens": 4000},
    "metadata": {"user_id": USER_ID},
    "temperature": 1,
    "top_k": 40,
    "stop_sequences": ["\n\nHuman:"],
    "service_tier": "auto",
    "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
}
CHAT_TOOLS = [
    {"type": "function", "function": {"name": "Read", "parameters": READ_TOOL["input_schema"],
                                      "description": READ_TOOL["description"]}},
    {"type": "function", "function": {"name": "Bash", "parameters": BASH_TOOL["input_schema"],
                                      "description": BASH_TOOL["description"]}}]


def config_text(base_url: str) -> str:
    return (f"providers:\n  openai: {{api_key: sk-openai-tr, api_base: '{base_url}/v1'}}\n"
            "models:\n  gpt: {provider: openai, model: gpt-4o-mini}\n"
            "  thinker: {provider: openai, model: gpt-5-mini}\n"
            "tiers: {smart: [gpt]}\n"
            f"keys: [{{name: team, key_sha256: {sha('sk-tr')}}}]\n"
            "settings: {redis_url: 'redis://127.0.0.1:1'}\n")


def config_for(base_url: str) -> Config:
    return parse_config(config_text(base_url).encode(), Path("router.yaml"), environ={})


CONFIG = config_for("http://127.0.0.1:9")
GPT: Model = CONFIG.models["gpt"]
THINKER: Model = CONFIG.models["thinker"]


def checked(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events, each valid in the SDK's event union (ping, which the SDK skips by its SSE
    name, is checked here as Anthropic sends it)."""
    for event in events:
        if event["type"] == "ping":
            assert event == {"type": "ping"}
        else:
            EVENT.validate_python(event)
    return events


def accumulated(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The message the SDK's own stream accumulator makes of the events."""
    snapshot = None
    buffers: dict[int, bytes] = {}
    for event in events:
        if event["type"] != "ping":
            snapshot = accumulate_event(event=EVENT.validate_python(event),
                                        current_snapshot=snapshot, json_bufs=buffers)
    assert snapshot is not None
    return plain(Message.model_validate(snapshot.to_dict()))


def plain(message: Message) -> dict[str, Any]:
    return message.model_dump(exclude_none=True)


def valid(message: dict[str, Any]) -> dict[str, Any]:
    return plain(Message.model_validate(message))


def stream_of(chunks: list[dict[str, Any]], thinking: bool = False,
              input_tokens: int = 1234) -> list[dict[str, Any]]:
    translator = EventTranslator("gpt", input_tokens, thinking)
    events = [e for chunk in chunks for e in translator.feed(copy.deepcopy(chunk))]
    assert translator.finished
    return checked(events)


# --- requests --------------------------------------------------------------------------

def test_a_claude_code_turn_becomes_the_chat_body_an_openai_model_takes() -> None:
    MESSAGES_REQUEST.validate_python(CLAUDE_CODE)  # a body the Anthropic SDK could send
    chat = to_chat(CLAUDE_CODE, GPT)

    assert chat == {
        "model": "gpt",
        "messages": [
            {"role": "system", "content": "You are Claude Code, Anthropic's official CLI for "
             "Claude.\n\nYou are an interactive CLI tool that helps users with software "
             "engineering tasks."},
            {"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>The date is 2026-03-02."
                 "</system-reminder>"},
                {"type": "text", "text": "What does README.md say?"}]},
            {"role": "assistant", "content": "I'll read it.", "tool_calls": [
                {"id": "toolu_01ReadMe", "type": "function", "function": {
                    "name": "Read", "arguments": '{"file_path":"/repo/README.md"}'}}]},
            {"role": "tool", "tool_call_id": "toolu_01ReadMe", "content": "# Demo\nA demo."},
            {"role": "user", "content": "Summarise it in one line."},
        ],
        "max_tokens": 32000,
        "temperature": 1,
        "stop": ["\n\nHuman:"],
        "user": chat["user"],
        "tools": CHAT_TOOLS,
        "tool_choice": "auto",
        "parallel_tool_calls": False,
    }
    CHAT_REQUEST.validate_python({**chat, "stream": True})  # OpenAI's own request schema
    # Claude Code's user id is longer than the 64 characters OpenAI takes: one stable hash.
    assert len(chat["user"]) == 64 and chat["user"] == to_chat(CLAUDE_CODE, GPT)["user"]


def test_signed_thinking_and_cache_control_never_reach_another_provider() -> None:
    sent = orjson.dumps(to_chat(CLAUDE_CODE, GPT)).decode()

    assert SIGNATURE not in sent and "EmwKAhgB" not in sent
    assert "I should read the file." not in sent
    assert "cache_control" not in sent and "ephemeral" not in sent
    assert "top_k" not in sent and "service_tier" not in sent and "clear_tool_uses" not in sent


def test_an_assistant_turn_that_was_only_thinking_is_left_out() -> None:
    body = {"max_tokens": 100, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm",
                                           "signature": UNSIGNED}]},
        {"role": "user", "content": "well?"}]}

    assert to_chat(body, GPT)["messages"] == [{"role": "user", "content": "hi"},
                                              {"role": "user", "content": "well?"}]


def test_tool_results_come_right_after_the_calls_errors_marked_and_their_images_kept() -> None:
    png = "iVBORw0KGgoAAAANSUhEUg=="
    body = {"max_tokens": 100, "tools": [READ_TOOL], "messages": [
        {"role": "user", "content": "Look at both."},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_a", "name": "Read", "input": {"file_path": "/a"}},
            {"type": "tool_use", "id": "toolu_b", "name": "Read", "input": {"file_path": "/b"}}]},
        {"role": "user", "content": [
            {"type": "text", "text": "Here you go."},
            {"type": "tool_result", "tool_use_id": "toolu_a", "is_error": True,
             "content": "<tool_use_error>File does not exist.</tool_use_error>"},
            {"type": "tool_result", "tool_use_id": "toolu_b", "content": [
                {"type": "text", "text": "a screenshot"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": png}}]}]}]}

    MESSAGES_REQUEST.validate_python({**body, "model": "smart"})
    messages = to_chat(body, GPT)["messages"]

    assert messages[2:] == [
        {"role": "tool", "tool_call_id": "toolu_a",
         "content": "Error: <tool_use_error>File does not exist.</tool_use_error>"},
        {"role": "tool", "tool_call_id": "toolu_b", "content": "a screenshot"},
        {"role": "user", "content": [
            {"type": "text", "text": "The result of tool call toolu_b came with these files:"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
            {"type": "text", "text": "Here you go."}]}]
    CHAT_REQUEST.validate_python({**to_chat(body, GPT), "stream": True})


def test_images_and_pdfs_become_openai_content_parts() -> None:
    body = {"max_tokens": 100, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                     "data": "/9j/4AAQ"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "document", "title": "spec.pdf",
         "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                        "data": "plain words"}},
        {"type": "text", "text": "Compare them."}]}]}
    MESSAGES_REQUEST.validate_python({**body, "model": "smart"})

    chat = to_chat(body, GPT)

    assert chat["messages"] == [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "file", "file": {"filename": "spec.pdf",
                                  "file_data": "data:application/pdf;base64,JVBERi0x"}},
        {"type": "text", "text": "plain words"},
        {"type": "text", "text": "Compare them."}]}]
    CHAT_REQUEST.validate_python({**chat, "stream": True})


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, {"tool_choice": "auto"}),
    ({"type": "any"}, {"tool_choice": "required"}),
    ({"type": "none"}, {"tool_choice": "none"}),
    ({"type": "tool", "name": "Read"},
     {"tool_choice": {"type": "function", "function": {"name": "Read"}}}),
    ({"type": "any", "disable_parallel_tool_use": True},
     {"tool_choice": "required", "parallel_tool_calls": False}),
    (None, {}),
])
def test_tool_choice_becomes_openais(choice: dict[str, Any] | None,
                                     expected: dict[str, Any]) -> None:
    body: dict[str, Any] = {"max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
                            "tools": [READ_TOOL]}
    if choice is not None:
        body["tool_choice"] = choice

    chat = to_chat(body, GPT)

    assert {k: chat[k] for k in ("tool_choice", "parallel_tool_calls") if k in chat} == expected


def test_a_tool_choice_without_tools_is_not_sent_since_openai_refuses_it() -> None:
    body = {"max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}

    assert set(to_chat(body, GPT)) == {"model", "messages", "max_tokens"}


def test_the_output_limit_goes_in_the_field_the_model_reads() -> None:
    body = {"max_tokens": 777, "messages": [{"role": "user", "content": "x"}]}

    assert to_chat(body, GPT)["max_tokens"] == 777
    reasoning = to_chat(body, THINKER)
    assert reasoning["max_completion_tokens"] == 777 and "max_tokens" not in reasoning


def test_structured_output_becomes_a_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"], "additionalProperties": False}
    body = {"max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
            "output_config": {"format": {"type": "json_schema", "schema": schema}}}

    assert to_chat(body, GPT)["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


@pytest.mark.parametrize(("change", "param"), [
    ({"tools": [READ_TOOL, {"type": "web_search_20250305", "name": "web_search"}]}, "tools.1"),
    ({"mcp_servers": [{"type": "url", "url": "https://mcp.example.com", "name": "x"}]},
     "mcp_servers"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {
        "type": "url", "url": "https://example.com/a.pdf"}}]}]}, "messages.0.content.0.source"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "file", "file_id": "file_011"}}]}]}, "messages.0.content.0.source"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": [
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
         "input": {}}]}]}, "messages.1.content.0.type"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
    ({"messages": []}, "messages"),
])
def test_what_chat_cannot_carry_is_refused_saying_what_to_change(change: dict[str, Any],
                                                                 param: str) -> None:
    body = {"max_tokens": 10, "messages": [{"role": "user", "content": "x"}], **change}

    with pytest.raises(InvalidRequest) as caught:
        to_chat(body, GPT)

    assert caught.value.param == param
    assert param.split(".")[0] in caught.value.message


# --- answers ---------------------------------------------------------------------------

COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1772400000,
    "model": "gpt", "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None,
                                 "message": {
                                     "role": "assistant", "refusal": None,
                                     "reasoning_content": "The user wants a summary.",
                                     "content": "Let me check the tests too.",
                                     "tool_calls": [
                                         {"id": "call_1", "type": "function", "function": {
                                             "name": "Bash", "arguments":
                                                 '{"command": "ls tests"}'}},
                                         {"id": "functions.Read:1", "type": "function",
                                          "function": {"name": "Read", "arguments":
                                                       '{"file_path": "/repo/x"}'}}]}}],
    "usage": {"prompt_tokens": 2100, "completion_tokens": 57, "total_tokens": 2157,
              "prompt_tokens_details": {"cached_tokens": 2000}},
}


def test_a_chat_answer_becomes_an_anthropic_message() -> None:
    message = from_chat(COMPLETION, "gpt", thinking=True)

    assert valid(message) == plain(Message.model_validate({
        "id": "msg_abc123", "type": "message", "role": "assistant", "model": "gpt",
        "content": [
            {"type": "thinking", "thinking": "The user wants a summary.", "signature": UNSIGNED},
            {"type": "text", "text": "Let me check the tests too."},
            {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls tests"}},
            # Anthropic refuses tool_use ids with other characters when they come back
            {"type": "tool_use", "id": "functions_Read_1", "name": "Read",
             "input": {"file_path": "/repo/x"}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 100, "output_tokens": 57, "cache_read_input_tokens": 2000,
                  "cache_creation_input_tokens": 0}}))


def test_reasoning_is_shown_only_to_a_client_that_asked_for_thinking() -> None:
    message = from_chat(COMPLETION, "gpt", thinking=False)

    assert [block["type"] for block in message["content"]] == ["text", "tool_use", "tool_use"]


def test_cache_writes_named_by_the_adapter_keep_their_place_in_the_usage() -> None:
    """Adapters that know cache writes (the Anthropic one, litellm) name them in
    prompt_tokens_details; Anthropic's usage counts them apart from input_tokens."""
    anthropic_usage = {"input_tokens": 12, "output_tokens": 9,
                       "cache_creation_input_tokens": 40, "cache_read_input_tokens": 100}
    completion = {**COMPLETION, "usage": openai_usage(anthropic_usage)}

    assert valid(from_chat(completion, "gpt", thinking=False))["usage"] == anthropic_usage


@pytest.mark.parametrize(("finish", "stop"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
    ("content_filter", "refusal"), (None, "end_turn")])
def test_finish_reasons_become_stop_reasons(finish: str | None, stop: str) -> None:
    completion = {"id": "chatcmpl-1", "choices": [{"index": 0, "finish_reason": finish,
                                                   "message": {"role": "assistant",
                                                               "content": "Hi."}}],
                  "usage": {"prompt_tokens": 5, "completion_tokens": 1}}

    assert valid(from_chat(completion, "gpt", thinking=False))["stop_reason"] == stop


def test_tool_arguments_that_are_not_json_become_empty_input() -> None:
    completion = copy.deepcopy(COMPLETION)
    completion["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = '{"comm'

    message = valid(from_chat(completion, "gpt", thinking=False))

    assert message["content"][1] == {"type": "tool_use", "id": "call_1", "name": "Bash",
                                     "input": {}}


# --- streams ---------------------------------------------------------------------------

def test_a_stream_is_anthropics_event_sequence_and_accumulates_to_the_same_message() -> None:
    chunks = list(completions.replay(COMPLETION))

    events = stream_of(chunks, thinking=True)

    assert [e["type"] for e in events] == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop",  # thinking, its text and its signature
        "content_block_start", "content_block_delta", "content_block_stop",  # text
        "content_block_start", "content_block_delta", "content_block_stop",  # tool_use
        "content_block_start", "content_block_delta", "content_block_stop",  # tool_use
        "message_delta", "message_stop"]
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [e["index"] for e in starts] == [0, 1, 2, 3]
    assert starts[2]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "Bash",
                                          "input": {}}
    assert events[4]["delta"] == {"type": "signature_delta", "signature": UNSIGNED}
    assert accumulated(events) == valid(from_chat(COMPLETION, "gpt", thinking=True))


def test_message_start_carries_the_counted_input_and_message_delta_the_providers_usage() -> None:
    events = stream_of(list(completions.replay(COMPLETION)), input_tokens=2345)

    assert events[0]["message"]["usage"]["input_tokens"] == 2345
    assert events[-2]["usage"] == {"input_tokens": 100, "output_tokens": 57,
                                   "cache_read_input_tokens": 2000,
                                   "cache_creation_input_tokens": 0}


def test_the_finish_waits_for_the_usage_chunk_that_openai_sends_after_it() -> None:
    chunks = list(completions.replay(COMPLETION))
    finish, usage = chunks[-2], chunks[-1]
    assert finish["choices"][0]["finish_reason"] and usage["usage"]
    translator = EventTranslator("gpt", 10, thinking=False)
    for chunk in chunks[:-2]:
        translator.feed(chunk)

    at_finish = translator.feed(finish)
    at_usage = translator.feed(usage)

    assert "message_delta" not in [e["type"] for e in at_finish]
    assert [e["type"] for e in at_usage] == ["message_delta", "message_stop"]
    assert at_usage[0]["usage"]["output_tokens"] == 57


def test_running_usage_before_the_finish_is_not_taken_for_the_final_one() -> None:
    """vLLM's continuous usage stats: every chunk carries the counts so far."""
    *chunks, finish, last = completions.replay(COMPLETION)
    for n, chunk in enumerate(chunks):
        chunk["usage"] = {"prompt_tokens": 2100, "completion_tokens": n}

    events = stream_of([*chunks, finish, last])

    assert events[-2]["usage"]["output_tokens"] == 57
    assert [e["type"] for e in events].count("message_delta") == 1


def test_fragmented_tool_calls_and_text_stream_as_the_mock_sends_them() -> None:
    """Text word by word, then two tool calls whose arguments come 8 characters at a time,
    as OpenAI streams them."""
    answer = mockwire.Answer("gpt-4o-mini", "Reading both files now.",
                             (("Read", {"file_path": "/repo/a.py"}),
                              ("Read", {"file_path": "/repo/b.py"})),
                             input_tokens=40, cached_input_tokens=0, finish_reason="tool_calls")
    chunks = mockwire.openai_chunks(answer, include_usage=True)
    whole = completions.Assembler()
    for chunk in chunks:
        whole.add(chunk)

    events = stream_of(chunks)

    texts = [e["delta"]["text"] for e in events if e["type"] == "content_block_delta"
             and e["delta"]["type"] == "text_delta"]
    assert len(texts) > 1 and "".join(texts) == "Reading both files now."
    message = accumulated(events)
    assert message == valid(from_chat(whole.completion(), "gpt", thinking=False))
    assert [b.get("input") for b in message["content"]] == [
        None, {"file_path": "/repo/a.py"}, {"file_path": "/repo/b.py"}]


def test_interleaved_parallel_tool_calls_are_each_one_block() -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1,
                "model": "gpt", "choices": [{"index": 0, "delta": delta,
                                             "finish_reason": finish}]}

    def call(index: int, **fields: Any) -> dict[str, Any]:
        return {"tool_calls": [{"index": index, **fields}]}

    chunks = [chunk({"role": "assistant"}),
              chunk(call(0, id="call_a", function={"name": "Read", "arguments": ""})),
              chunk(call(1, id="call_b", function={"name": "Bash", "arguments": '{"comm'})),
              chunk(call(0, function={"arguments": '{"file_path": "/x"}'})),
              chunk(call(1, function={"arguments": 'and": "ls"}'})),
              chunk({}, "tool_calls"),
              {"id": "chatcmpl-x", "choices": [], "usage": {"prompt_tokens": 9,
                                                            "completion_tokens": 4}}]

    message = accumulated(stream_of(chunks))

    assert [(b["id"], b["input"]) for b in message["content"]] == [
        ("call_a", {"file_path": "/x"}), ("call_b", {"command": "ls"})]
    assert message["stop_reason"] == "tool_use"


def test_a_stream_with_broken_tool_arguments_still_parses_in_the_sdk() -> None:
    completion = copy.deepcopy(COMPLETION)
    completion["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = '{"comm'

    events = stream_of(list(completions.replay(completion)))

    assert accumulated(events) == valid(from_chat(completion, "gpt", thinking=False))


def test_a_stream_without_a_usage_chunk_is_closed_with_the_estimate() -> None:
    chunks = [c for c in completions.replay(COMPLETION) if c.get("choices")]
    translator = EventTranslator("gpt", 321, thinking=False)
    events = [e for c in chunks for e in translator.feed(c)]
    assert not translator.finished

    events += translator.close({"prompt_tokens": 321, "completion_tokens": 12})

    message = accumulated(checked(events))
    assert message["usage"]["input_tokens"] == 321 and message["usage"]["output_tokens"] == 12
    assert message["stop_reason"] == "tool_use"


# --- MessagesViaChat over a real adapter, against the mock provider --------------------

def run_via_chat(mock: MockProvider, model: str,
                 call: Any) -> Any:
    config = config_for(mock.base_url)  # type: ignore[attr-defined]

    async def go() -> Any:
        adapters = Adapters(config)
        try:
            return await call(MessagesViaChat(adapters.of(config)[model]))
        finally:
            await adapters.close()

    return asyncio.run(go())


PLAIN: dict[str, Any] = {
    "model": "smart", "max_tokens": 256,
    "system": [{"type": "text", "text": "Answer briefly.", "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": "What is a gateway?"}],
}


def test_a_messages_body_is_answered_by_an_openai_model(mock: MockProvider) -> None:
    message = run_via_chat(mock, "gpt", lambda via: via.complete(PLAIN))

    assert valid(message)["content"] == [
        {"type": "text", "text": "mock answer from gpt-4o-mini to: What is a gateway?"}]
    assert message["model"] == "gpt" and message["stop_reason"] == "end_turn"
    usage = mock.last_answer()
    assert message["usage"]["input_tokens"] == usage.input_tokens
    assert message["usage"]["output_tokens"] == usage.output_tokens
    [received] = mock.calls("gpt-4o-mini")
    assert received.path == "/v1/chat/completions"
    assert received.body["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is a gateway?"}]
    assert received.body["max_tokens"] == 256


def test_a_streamed_messages_body_gets_anthropic_events_with_the_input_counted(
        mock: MockProvider) -> None:
    async def both(via: MessagesViaChat) -> tuple[list[dict[str, Any]], int]:
        events = [e async for e in via.stream({**PLAIN, "stream": True})]
        return events, await via.count_tokens(PLAIN)

    events, counted = run_via_chat(mock, "gpt", both)

    checked(events)
    assert events[0]["type"] == "message_start"
    assert events[0]["message"]["model"] == "gpt"
    assert events[0]["message"]["usage"]["input_tokens"] == counted > 0
    message = accumulated(events)
    assert message["content"] == [
        {"type": "text", "text": "mock answer from gpt-4o-mini to: What is a gateway?"}]
    assert message["usage"]["output_tokens"] == mock.last_answer().output_tokens
    [received] = mock.calls("gpt-4o-mini")
    assert received.body["stream"] is True
    assert received.body["stream_options"] == {"include_usage": True}


def test_a_tool_round_trip_through_an_openai_model(mock: MockProvider) -> None:
    ask = {"model": "smart", "max_tokens": 256, "tools": [READ_TOOL],
           "messages": [{"role": "user", "content": "Read /repo/README.md"}]}

    first = valid(run_via_chat(mock, "gpt", lambda via: via.complete(ask)))

    assert first["stop_reason"] == "tool_use"
    [call] = first["content"]
    assert call["type"] == "tool_use" and call["name"] == "Read"
    assert isinstance(call["input"]["file_path"], str)
    follow = {**ask, "messages": [*ask["messages"],
                                  {"role": "assistant", "content": first["content"]},
                                  {"role": "user", "content": [
                                      {"type": "tool_result", "tool_use_id": call["id"],
                                       "content": "# Demo"}]}]}

    events = run_via_chat(mock, "gpt", lambda via: _events(via, follow))

    final = accumulated(checked(events))
    assert final["stop_reason"] == "end_turn"
    assert final["content"][0]["type"] == "text"
    sent = mock.calls("gpt-4o-mini")[-1].body["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": call["id"], "content": "# Demo"}
    assert sent[-2]["tool_calls"][0]["id"] == call["id"]


async def _events(via: MessagesViaChat, body: dict[str, Any]) -> list[dict[str, Any]]:
    return [e async for e in via.stream({**body, "stream": True})]


def test_a_reasoning_model_is_sent_the_limit_in_the_field_it_reads(mock: MockProvider) -> None:
    message = run_via_chat(mock, "thinker", lambda via: via.complete(PLAIN))

    assert valid(message)["stop_reason"] == "end_turn"
    [received] = mock.calls("gpt-5-mini")
    assert received.body["max_completion_tokens"] == 256 and "max_tokens" not in received.body


def test_a_provider_error_passes_through_untouched(mock: MockProvider) -> None:
    mock.script("gpt-4o-mini", Step(status=429, retry_after="7"))

    with pytest.raises(ProviderError) as caught:
        run_via_chat(mock, "gpt", lambda via: _events(via, PLAIN))

    assert caught.value.status == 429 and caught.value.retry_after_s == 7


def test_a_claude_code_turn_with_signed_thinking_is_answered_by_an_openai_model(
        mock: MockProvider) -> None:
    events = run_via_chat(mock, "gpt", lambda via: _events(via, CLAUDE_CODE))

    message = accumulated(checked(events))
    [received] = mock.calls("gpt-4o-mini")
    sent = orjson.dumps(received.body).decode()
    assert SIGNATURE not in sent and "cache_control" not in sent
    assert received.body["parallel_tool_calls"] is False
    # tools offered and parallel calls off: the mock calls the first tool, once
    assert [(b["type"], b.get("name")) for b in message["content"]] == [("tool_use", "Read")]
    assert message["stop_reason"] == "tool_use"
    assert events[0]["message"]["usage"]["input_tokens"] > 0


def test_a_system_message_mid_conversation_stays_in_its_place() -> None:
    """Claude Code sends its skill listings as a system message after the user's."""
    chat = to_chat({"model": "x", "max_tokens": 10, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": [{"type": "text", "text": "skills: none"}]}]}, GPT)
    assert chat["messages"] == [{"role": "user", "content": "hi"},
                                {"role": "system", "content": "skills: none"}]
