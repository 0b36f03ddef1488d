"""Our OpenAI -> Anthropic translation against litellm's, the oracle, on a corpus of requests.

Both must produce the same Messages request once the free choices are normalised
(a plain string versus one text block; one system string versus text blocks).
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from gateway.providers.anthropic_stream import ChunkTranslator
from gateway.providers.anthropic_translate import from_anthropic, to_anthropic

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MODEL = "claude-sonnet-4-5"
TOOL = {"type": "function", "function": {"name": "lookup", "description": "Look a thing up",
                                         "parameters": {"type": "object", "properties": {
                                             "q": {"type": "string"}}, "required": ["q"]}}}
CALL = {"id": "toolu_1", "type": "function",
        "function": {"name": "lookup", "arguments": '{"q": "gateways"}'}}

CORPUS: dict[str, dict[str, Any]] = {
    "plain": {"messages": [{"role": "user", "content": "hi"}]},
    "system and params": {"messages": [{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": "hi"}],
                          "max_tokens": 100, "temperature": 0.3, "top_p": 0.9, "stop": ["X"]},
    "two system messages": {"messages": [{"role": "system", "content": "One."},
                                         {"role": "system", "content": "Two."},
                                         {"role": "user", "content": "hi"}]},
    "consecutive user turns merge": {"messages": [{"role": "user", "content": "a"},
                                                  {"role": "user", "content": "b"},
                                                  {"role": "assistant", "content": "c"},
                                                  {"role": "user", "content": "d"}]},
    "text parts": {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]}]},
    "image as data url": {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}]}]},
    "tools offered": {"messages": [{"role": "user", "content": "find it"}], "tools": [TOOL]},
    "tool choice required": {"messages": [{"role": "user", "content": "find it"}],
                             "tools": [TOOL], "tool_choice": "required"},
    "tool choice named": {"messages": [{"role": "user", "content": "find it"}], "tools": [TOOL],
                          "tool_choice": {"type": "function", "function": {"name": "lookup"}}},
    "tool round trip": {"messages": [
        {"role": "user", "content": "find it"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "found"},
    ], "tools": [TOOL]},
    "text and tool call in one turn": {"messages": [
        {"role": "user", "content": "find it"},
        {"role": "assistant", "content": "Looking.", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "found"},
        {"role": "user", "content": "thanks"},
    ], "tools": [TOOL]},
    "user id": {"messages": [{"role": "user", "content": "hi"}], "user": "user-123"},
}


def _litellm_request(body: dict[str, Any]) -> dict[str, Any]:
    from litellm.llms.anthropic.chat.transformation import AnthropicConfig

    config = AnthropicConfig()
    settings = {k: v for k, v in body.items() if k != "messages"}
    settings.setdefault("max_tokens", 64000)
    params = config.map_openai_params(non_default_params=settings, optional_params={},
                                      model=MODEL, drop_params=False)
    return config.transform_request(model=MODEL, messages=body["messages"],
                                    optional_params=params, litellm_params={}, headers={})


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [{k: v for k, v in block.items() if k != "cache_control"} for block in content]


def _normalised(request: dict[str, Any]) -> dict[str, Any]:
    system = request.get("system")
    system_text = system if isinstance(system, str) or system is None else "\n\n".join(
        b["text"] for b in system)
    out = {"system": system_text,
           "messages": [{"role": m["role"], "content": _blocks(m["content"])}
                        for m in request["messages"]]}
    for result in (b for m in out["messages"] for b in m["content"]):
        if result["type"] == "tool_result" and isinstance(result.get("content"), list):
            result["content"] = "".join(p.get("text", "") for p in result["content"])
    for name in ("max_tokens", "temperature", "top_p", "stop_sequences", "tool_choice",
                 "metadata"):
        out[name] = request.get(name)
    out["tools"] = [{k: v for k, v in tool.items() if k in ("name", "description",
                                                          "input_schema")}
                    for tool in request.get("tools") or []]
    return out


@pytest.mark.parametrize("case", CORPUS)
def test_request_matches_litellms_translation(case: str) -> None:
    body = CORPUS[case]
    ours = to_anthropic(body, MODEL, 64000)
    assert _normalised(ours) == _normalised(_litellm_request(body))


def test_response_matches_litellms_translation() -> None:
    from litellm.llms.anthropic.chat.transformation import AnthropicConfig

    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": MODEL,
               "content": [{"type": "text", "text": "Looking."},
                           {"type": "tool_use", "id": "toolu_9", "name": "lookup",
                            "input": {"q": "x"}}],
               "stop_reason": "tool_use", "stop_sequence": None,
               "usage": {"input_tokens": 10, "output_tokens": 5,
                         "cache_read_input_tokens": 4, "cache_creation_input_tokens": 0}}
    ours = from_anthropic(message, "smart", json_mode=False)
    theirs = AnthropicConfig().transform_parsed_response(
        completion_response=message, raw_response=httpx.Response(200, json=message),
        model_response=_empty_response(), json_mode=False)
    choice = ours["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Looking."
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "lookup",
                                                              "arguments": '{"q":"x"}'}
    assert ours["usage"]["prompt_tokens"] == 14  # fresh input plus cache reads
    assert ours["usage"]["prompt_tokens_details"] == {"cached_tokens": 4}
    their_choice = theirs.choices[0]
    assert their_choice.finish_reason == choice["finish_reason"]
    assert their_choice.message.content == choice["message"]["content"]
    assert their_choice.message.tool_calls[0].function.name == "lookup"
    assert theirs.usage.prompt_tokens == ours["usage"]["prompt_tokens"]
    assert theirs.usage.completion_tokens == ours["usage"]["completion_tokens"]


def _empty_response() -> Any:
    import litellm

    return litellm.ModelResponse()


def test_stream_events_become_chunks_that_add_up_to_the_message() -> None:
    translator = ChunkTranslator("smart", json_mode=False)
    events = [
        {"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 9,
                                                                        "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text",
                                                                      "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta",
                                                              "text": "Hello"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta",
                                                              "text": " there"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta",
                                                              "partial_json": '{"q": '}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta",
                                                              "partial_json": '"x"}'}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
         "usage": {"output_tokens": 12}},
        {"type": "message_stop"},
    ]
    chunks = [chunk for event in events for chunk in translator.feed(event)]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content") or "" for d in deltas) == "Hello there"
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert calls[0]["id"] == "toolu_1" and calls[0]["function"]["name"] == "lookup"
    assert "".join(tc["function"]["arguments"] for tc in calls) == '{"q": "x"}'
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 9, "completion_tokens": 12,
                                   "total_tokens": 21}
    assert translator.finished
