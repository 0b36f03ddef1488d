"""OpenAI chat completions <-> Anthropic Messages, both ways, without I/O.

Requests: system and developer messages become the top-level `system`; tool
results become user `tool_result` blocks; consecutive turns of one role are
merged (Anthropic wants alternating roles); `max_tokens` is always set;
`response_format` becomes a forced tool whose input is returned as the content.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.errors import InvalidRequest

JSON_TOOL = "json_tool_call"
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                "tool_use": "tool_calls", "pause_turn": "stop", "refusal": "content_filter"}
TOOL_CHOICES = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}
# Anthropic-only fields a client may send through the OpenAI schema.
PASSTHROUGH = ("top_k", "thinking", "metadata")


def to_anthropic(body: dict[str, Any], provider_model: str, max_output_tokens: int,
                 ) -> dict[str, Any]:
    _refuse_what_anthropic_cannot_honour(body)
    system, messages = _split_messages(body["messages"])
    if not messages:
        raise InvalidRequest("Anthropic models need at least one user or assistant message",
                             param="messages")
    out: dict[str, Any] = {
        "model": provider_model,
        "messages": messages,
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens")
        or max_output_tokens,
    }
    if system:
        out["system"] = system
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("stream"):
        out["stream"] = True
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    for name in PASSTHROUGH:
        if name in body:
            out[name] = body[name]
    tools = [_tool(t) for t in body.get("tools") or []]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    schema = response_schema(body.get("response_format"))
    if schema is not None:
        tools.append({"name": JSON_TOOL, "description": "Answer with JSON that fits this schema.",
                      "input_schema": schema})
        if len(tools) == 1:
            choice = {"type": "tool", "name": JSON_TOOL}
    if tools:
        out["tools"] = tools
    if choice is not None and (tools or choice["type"] == "none"):
        out["tool_choice"] = choice
    return out


def _refuse_what_anthropic_cannot_honour(body: dict[str, Any]) -> None:
    """Refused, never dropped: a client that asked for several choices or for logprobs
    would otherwise get an answer without them and no word why, also when a chain falls
    back to this model from one that could (as LiteLLM refuses them, unless told to drop)."""
    if (body.get("n") or 1) > 1:
        raise InvalidRequest("Anthropic models answer one choice per request; remove n or set "
                             "it to 1 (or ask for a tier without Anthropic models)", param="n")
    for name in ("logprobs", "top_logprobs"):
        if body.get(name):
            raise InvalidRequest(f"Anthropic models return no logprobs; remove {name} (or ask "
                                 "for a tier without Anthropic models)", param=name)


def _split_messages(messages: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    system_blocks: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        if role in ("system", "developer"):
            system_blocks += _blocks(message.get("content"))
            continue
        if role in ("tool", "function"):
            result: dict[str, Any] = {"type": "tool_result",
                                      "tool_use_id": message.get("tool_call_id") or
                                      message.get("name") or "",
                                      "content": _tool_result_content(message.get("content"))}
            role, blocks = "user", [result]
        elif role == "assistant":
            blocks = _blocks(message.get("content"))
            for call in message.get("tool_calls") or []:
                blocks.append(_tool_use(call))
        else:
            blocks = _blocks(message.get("content"))
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    if turns and turns[0]["role"] == "assistant":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": "."}]})
    for turn in turns:  # plain text stays a plain string, as a human would write it
        content = turn["content"]
        if len(content) == 1 and content[0]["type"] == "text" and set(content[0]) == {"type",
                                                                                     "text"}:
            turn["content"] = content[0]["text"]
    if system_blocks and all(set(b) == {"type", "text"} for b in system_blocks):
        return "\n\n".join(b["text"] for b in system_blocks), turns
    return system_blocks, turns


def _blocks(content: Any) -> list[dict[str, Any]]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise InvalidRequest("message content must be a string or a list of parts",
                             param="messages")
    blocks = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                block = {"type": "text", "text": part["text"]}
                if "cache_control" in part:
                    block["cache_control"] = part["cache_control"]
                blocks.append(block)
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            blocks.append({"type": "image", "source": _source(str(url))})
        elif kind == "file":
            data = (part.get("file") or {}).get("file_data") or ""
            blocks.append({"type": "document", "source": _source(data)})
        else:
            raise InvalidRequest(f"content part type '{kind}' cannot be sent to Anthropic models",
                                 param="messages")
    return blocks


def _source(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _tool_result_content(content: Any) -> Any:
    if isinstance(content, list):
        return [{"type": "text", "text": p.get("text", "")} for p in content
                if isinstance(p, dict) and p.get("type") == "text"]
    return "" if content is None else str(content)


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    try:
        arguments = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"tool call {call.get('id')} has arguments that are not JSON",
                             param="messages") from exc
    return {"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
            "input": arguments}


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or {}
    out = {"name": function.get("name"),
           "input_schema": function.get("parameters") or {"type": "object", "properties": {}}}
    if function.get("description"):
        out["description"] = function["description"]
    if "cache_control" in tool:
        out["cache_control"] = tool["cache_control"]
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    out: dict[str, Any] | None
    if isinstance(choice, str):
        out = dict(TOOL_CHOICES.get(choice, {"type": "auto"}))
    elif isinstance(choice, dict):
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    else:
        out = {"type": "auto"} if parallel is False else None
    if out is not None and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def response_schema(response_format: Any) -> dict[str, Any] | None:
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
    if response_format.get("type") == "json_object":
        return {"type": "object"}
    return None


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic's usage as OpenAI's: the prompt is the plain input plus cache reads and
    writes; reads and writes are named in `prompt_tokens_details` as litellm names them
    (`cache_creation_tokens`, split by TTL in `cache_creation_token_details`)."""
    cached = _tokens(usage.get("cache_read_input_tokens")) or 0
    written = _tokens(usage.get("cache_creation_input_tokens")) or 0
    plain = _tokens(usage.get("input_tokens"))
    prompt = None if plain is None else plain + cached + written
    completion = _tokens(usage.get("output_tokens"))
    total = None if prompt is None or completion is None else prompt + completion
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": total}
    details: dict[str, Any] = {}
    if cached:
        details["cached_tokens"] = cached
    if written:
        split = usage.get("cache_creation")
        split = split if isinstance(split, dict) else {}
        written_1h = min(_tokens(split.get("ephemeral_1h_input_tokens")) or 0, written)
        details["cache_creation_tokens"] = written
        details["cache_creation_token_details"] = {
            "ephemeral_5m_input_tokens": written - written_1h,
            "ephemeral_1h_input_tokens": written_1h}
    if details:
        out["prompt_tokens_details"] = details
    return out


def _tokens(value: Any) -> int | None:
    """A count as Anthropic sent it, None when it sent none: the gateway counts those
    (cost.usage_of also refuses negative and absurd ones)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def from_anthropic(message: dict[str, Any], model_name: str, json_mode: bool) -> dict[str, Any]:
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    finish = STOP_REASONS.get(message.get("stop_reason") or "", "stop")
    for block in message.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "thinking":
            reasoning.append(block.get("thinking", ""))
        elif kind == "tool_use" and json_mode and block.get("name") == JSON_TOOL:
            text.append(orjson.dumps(block.get("input")).decode())
            finish = "stop"
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function", "function": {
                "name": block.get("name"), "arguments": orjson.dumps(block.get("input")).decode()}})
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None,
                             "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)
    return {"id": message.get("id"), "object": "chat.completion", "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "message": reply, "logprobs": None, "finish_reason": finish}],
            "usage": openai_usage(message.get("usage") or {})}
