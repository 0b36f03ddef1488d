"""Anthropic Messages -> OpenAI chat (requests) and OpenAI chat -> Anthropic (answers). Pure.

The reverse of anthropic_translate.py: a Messages body for a model that speaks only
the gateway's OpenAI chat form. Requests: `system` becomes a system message; each
user turn's tool_result blocks become role "tool" messages, first, since OpenAI
wants them right after the assistant's tool calls; thinking and redacted_thinking
blocks are dropped, for a signature one provider made means nothing to another
(and one replayed to Anthropic from elsewhere is a 400); cache_control is dropped.
What cannot be said in chat at all is refused, with the path of what to remove.
Answers: a `message`, its reasoning as a thinking block only when the client asked
for thinking, signed UNSIGNED so that the native path knows not to replay it.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from gateway import output_limit
from gateway.errors import InvalidRequest
from gateway.forms.anthropic import UNSIGNED
from gateway.providers.anthropic_translate import TOOL_CHOICES

if TYPE_CHECKING:
    from gateway.config import Model

# The signature of a thinking block the gateway made from another provider's reasoning.
# Anthropic's tool_choice types -> OpenAI's, the inverse of the other direction's table.
CHAT_TOOL_CHOICES = {choice["type"]: name for name, choice in TOOL_CHOICES.items()}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "function_call": "tool_use", "content_filter": "refusal"}
# OpenAI refuses a `user` longer than 64 characters; Claude Code's metadata.user_id is
# about 150 (user_<hash>_account_<uuid>_session_<uuid>), so a longer one is sent hashed:
# still one stable opaque id per user, as both APIs ask.
MAX_USER_CHARS = 64
# Anthropic's tool_use ids must match this; some providers' call ids do not
# ("functions.Read:0"), and the client sends them back to whichever model is next.
TOOL_ID_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
# What of a Messages body is not translated, and why: top_k (chat has no such field),
# service_tier, inference_geo and speed (Anthropic's capacity), container (its code
# execution sandbox, used only by its server tools, which are refused), context_management
# (its server-side edits of the history: the history goes as sent), the top-level
# cache_control and every block's, diagnostics, output_config.effort; `thinking` only
# decides whether reasoning comes back.


def wants_thinking(body: dict[str, Any]) -> bool:
    """Whether the client asked for thinking blocks in the answer."""
    thinking = body.get("thinking")
    return (isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled")
            and thinking.get("display") != "omitted")


def to_chat(body: dict[str, Any], model: Model) -> dict[str, Any]:
    """The OpenAI chat body that asks `model` what `body` asks, but for `stream`."""
    if body.get("mcp_servers"):
        raise InvalidRequest("mcp_servers are connected by Anthropic's API, and this model is "
                             "not served by Anthropic: remove mcp_servers, or ask for a tier "
                             "of Anthropic models", param="mcp_servers")
    messages = _system(body.get("system"))
    turns = body.get("messages")
    if not isinstance(turns, list) or not turns:
        raise InvalidRequest("messages: at least one message is required", param="messages")
    for i, turn in enumerate(turns):
        messages += _turn(turn, f"messages.{i}")
    if all(m["role"] == "system" for m in messages):
        raise InvalidRequest("messages: no message has any content to send", param="messages")
    chat: dict[str, Any] = {"model": model.name, "messages": messages}
    if isinstance(body.get("max_tokens"), int):
        chat["max_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]
    stop = body.get("stop_sequences")
    if stop:
        chat["stop"] = [stop] if isinstance(stop, str) else list(stop)
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user, str) and user:
        chat["user"] = user if len(user) <= MAX_USER_CHARS else hashlib.sha256(
            user.encode()).hexdigest()
    tools = [_tool(tool, f"tools.{i}") for i, tool in enumerate(body.get("tools") or ())]
    if tools:  # OpenAI refuses tool_choice and parallel_tool_calls without tools
        chat["tools"] = tools
        chat.update(_tool_choice(body.get("tool_choice")))
    if (response_format := _response_format(body)) is not None:
        chat["response_format"] = response_format
    return output_limit.with_limit(chat, model, None)


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None or system == "" or system == []:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if isinstance(system, list) and all(isinstance(b, dict) and b.get("type") == "text"
                                        for b in system):
        text = "\n\n".join(b.get("text") or "" for b in system if b.get("text"))
        return [{"role": "system", "content": text}] if text else []
    raise InvalidRequest("system: must be a string or a list of text blocks", param="system")


def _turn(turn: Any, path: str) -> list[dict[str, Any]]:
    role = turn.get("role") if isinstance(turn, dict) else None
    if role == "system":  # a system message mid-conversation (Claude Code's skill listings)
        return _system(turn.get("content"))
    if role not in ("user", "assistant"):
        raise InvalidRequest(f"{path}.role: must be 'user', 'assistant' or 'system'",
                             param=f"{path}.role")
    content = turn.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequest(f"{path}.content: must be a string or a list of content blocks",
                             param=f"{path}.content")
    blocks = [(block, f"{path}.content.{j}") for j, block in enumerate(content)]
    return _assistant(blocks) if role == "assistant" else _user(blocks)


def _kind(block: Any, path: str) -> str:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise InvalidRequest(f"{path}: a content block must be an object with a type",
                             param=path)
    return str(block["type"])


def _user(blocks: list[tuple[Any, str]]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    attached: list[dict[str, Any]] = []  # images and documents a tool returned
    for block, path in blocks:
        kind = _kind(block, path)
        if kind == "tool_result":
            text, files = _tool_result(block, path)
            results.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id") or ""),
                            "content": text})
            if files:  # a tool message takes text only: what else it returned follows
                attached.append({"type": "text", "text": "The result of tool call "
                                 f"{block.get('tool_use_id')} came with these files:"})
                attached += files
        elif kind not in ("thinking", "redacted_thinking"):
            parts += _part(block, kind, path)
    parts = attached + parts
    if not parts:
        return results
    if len(parts) == 1 and parts[0]["type"] == "text":
        return [*results, {"role": "user", "content": parts[0]["text"]}]
    return [*results, {"role": "user", "content": parts}]


def _part(block: dict[str, Any], kind: str, path: str) -> list[dict[str, Any]]:
    """A user content block as OpenAI chat content parts."""
    if kind == "text":
        return [{"type": "text", "text": block["text"]}] if block.get("text") else []
    given = block.get("source")
    source: dict[str, Any] = given if isinstance(given, dict) else {}
    source_type = source.get("type")
    if kind == "image" and source_type == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        return [{"type": "image_url", "image_url": {"url": url}}]
    if kind == "image" and source_type == "url":
        return [{"type": "image_url", "image_url": {"url": source.get("url")}}]
    if kind == "document" and source_type == "base64":
        data = f"data:{source.get('media_type') or 'application/pdf'};base64,{source.get('data')}"
        name = block.get("title") or "document.pdf"
        return [{"type": "file", "file": {"filename": name, "file_data": data}}]
    if kind == "document" and source_type == "text":
        title = f"{block['title']}\n\n" if block.get("title") else ""
        return [{"type": "text", "text": f"{title}{source.get('data') or ''}"}]
    if kind == "document" and source_type == "content":
        inner = source.get("content")
        if isinstance(inner, str):
            return [{"type": "text", "text": inner}] if inner else []
        return [p for j, b in enumerate(inner or ())
                for p in _part(b, _kind(b, f"{path}.source.content.{j}"),
                               f"{path}.source.content.{j}")]
    if kind in ("image", "document"):
        raise InvalidRequest(
            f"{path}.source: a {kind} of source type '{source_type}' can be sent only to "
            "Anthropic models; send it as base64 data (images also as a url)",
            param=f"{path}.source")
    raise InvalidRequest(f"{path}.type: '{kind}' blocks can be sent only to Anthropic models; "
                         "remove the block, or ask for a tier of Anthropic models",
                         param=f"{path}.type")


def _tool_result(block: dict[str, Any], path: str) -> tuple[str, list[dict[str, Any]]]:
    """A tool_result's text, and its images and documents as content parts."""
    content = block.get("content")
    texts: list[str] = []
    files: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for j, inner in enumerate(content):
            inner_path = f"{path}.content.{j}"
            kind = _kind(inner, inner_path)
            if kind == "text":
                texts.append(str(inner.get("text") or ""))
            else:
                files += _part(inner, kind, inner_path)
    text = "\n".join(texts)
    if block.get("is_error"):  # chat has no field for it: the model reads it instead
        text = f"Error: {text}" if text else "Error"
    return text, files


def _assistant(blocks: list[tuple[Any, str]]) -> list[dict[str, Any]]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block, path in blocks:
        kind = _kind(block, path)
        if kind == "text" and block.get("text"):
            texts.append(str(block["text"]))
        elif kind == "tool_use":
            calls.append({"id": str(block.get("id") or ""), "type": "function", "function": {
                "name": str(block.get("name") or ""),
                "arguments": orjson.dumps(block.get("input") or {}).decode()}})
        elif kind not in ("text", "thinking", "redacted_thinking"):
            raise InvalidRequest(f"{path}.type: '{kind}' blocks in an assistant turn can be "
                                 "sent only to Anthropic models; remove the block, or ask for "
                                 "a tier of Anthropic models", param=f"{path}.type")
    if not texts and not calls:
        return []  # a turn that was only thinking: nothing left to say
    message: dict[str, Any] = {"role": "assistant", "content": "\n\n".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return [message]


def _tool(tool: Any, path: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise InvalidRequest(f"{path}: a tool must be an object with a name", param=path)
    if tool.get("type") not in (None, "custom"):
        raise InvalidRequest(
            f"{path}: tool '{tool['name']}' ({tool['type']}) is defined by Anthropic and "
            "runs only with Anthropic models; remove it, or ask for a tier of Anthropic models",
            param=path)
    function: dict[str, Any] = {
        "name": tool["name"],
        "parameters": tool.get("input_schema") or {"type": "object", "properties": {}}}
    if tool.get("description"):
        function["description"] = tool["description"]
    if tool.get("strict") is True:
        function["strict"] = True
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> dict[str, Any]:
    if not isinstance(choice, dict):
        return {}
    kind = choice.get("type")
    out: dict[str, Any] = {}
    if kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif kind in CHAT_TOOL_CHOICES:
        out["tool_choice"] = CHAT_TOOL_CHOICES[kind]
    else:
        raise InvalidRequest(f"tool_choice.type: '{kind}' is not one of auto, any, tool, none",
                             param="tool_choice.type")
    if choice.get("disable_parallel_tool_use") and kind != "none":
        out["parallel_tool_calls"] = False
    return out


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """Structured output: output_config.format (or the beta's output_format)."""
    config = body.get("output_config")
    given = (config.get("format") if isinstance(config, dict) else None) or body.get(
        "output_format")
    if not isinstance(given, dict):
        return None
    if given.get("type") != "json_schema" or not isinstance(given.get("schema"), dict):
        raise InvalidRequest("output_config.format: only type json_schema, with a schema, can "
                             "be translated", param="output_config.format")
    # Not strict: OpenAI's strict mode refuses schemas that Anthropic's accepts.
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": given["schema"]}}


# --- answers ---------------------------------------------------------------------------

def from_chat(completion: dict[str, Any], model_name: str, thinking: bool) -> dict[str, Any]:
    """A chat.completion as the Anthropic `message` it amounts to."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = reasoning_of(message)
    if thinking and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": UNSIGNED})
    refusal = text_of(message.get("refusal"))
    text = content_text(message.get("content")) + refusal
    if text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls") or ()
    content += [tool_use(call) for call in calls]
    return {"id": message_id(completion.get("id")), "type": "message", "role": "assistant",
            "model": model_name, "content": content,
            "stop_reason": stop_reason(choice.get("finish_reason"), bool(calls), bool(refusal)),
            "stop_sequence": None, "usage": usage(completion.get("usage"))}


def reasoning_of(message: dict[str, Any]) -> str:
    """The reasoning a provider showed: `reasoning_content` (DeepSeek, vLLM, litellm), or
    `reasoning` (OpenRouter, Groq, Ollama)."""
    for name in ("reasoning_content", "reasoning"):
        if isinstance(message.get(name), str) and message[name]:
            return str(message[name])
    return ""


def text_of(value: Any) -> str:
    """A string field, or "" when it is absent or not a string."""
    return value if isinstance(value, str) else ""


def content_text(content: Any) -> str:
    """A chat message's content as text (a string, or the text of its parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some providers answer with parts
        return "".join(str(p.get("text") or "") for p in content
                       if isinstance(p, dict) and p.get("type") == "text")
    return ""


def stop_reason(finish_reason: Any, called: bool, refused: bool) -> str:
    """OpenAI's finish_reason as Anthropic's stop_reason. "stop" may also have been a stop
    sequence: OpenAI does not say, so stop_sequence stays null."""
    if refused:
        return "refusal"
    if called and finish_reason in (None, "stop"):  # Ollama and others say "stop" then
        return "tool_use"
    return STOP_REASONS.get(str(finish_reason), "end_turn")


def tool_use(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {"type": "tool_use", "id": tool_id(call.get("id")),
            "name": str(function.get("name") or ""), "input": tool_input(function.get(
                "arguments"))}


def tool_id(given: Any) -> str:
    safe = TOOL_ID_UNSAFE.sub("_", given) if isinstance(given, str) else ""
    return safe or f"toolu_{uuid.uuid4().hex[:24]}"


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as the tool_use input, an object. Arguments that are not a
    JSON object become {}: the client runs its tool, which says what is missing, and the
    model can try again, where a 5xx would lose the whole answer (and Anthropic's SDK
    fails a stream whose input_json_delta is not JSON)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def message_id(chat_id: Any) -> str:
    if isinstance(chat_id, str) and chat_id:
        return "msg_" + TOOL_ID_UNSAFE.sub("_", chat_id.removeprefix("chatcmpl-"))
    return f"msg_{uuid.uuid4().hex[:24]}"


def usage(chat_usage: Any) -> dict[str, Any]:
    """OpenAI's usage as Anthropic's, where input_tokens excludes cache reads and writes.
    The writes are there only from adapters that name them (anthropic_translate's
    openai_usage, litellm's), as `prompt_tokens_details.cache_creation_tokens`."""
    given = chat_usage if isinstance(chat_usage, dict) else {}
    details = given.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    prompt = _count(given.get("prompt_tokens"))
    cached = min(_count(details.get("cached_tokens")), prompt)
    written = min(_count(details.get("cache_creation_tokens")), prompt - cached)
    return {"input_tokens": prompt - cached - written,
            "output_tokens": _count(given.get("completion_tokens")),
            "cache_creation_input_tokens": written, "cache_read_input_tokens": cached}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
