"""Chat and embeddings bodies: parsed once with orjson, checked for what a user gets wrong.

Only fields the gateway reads are checked; every other field passes through to
the provider untouched.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway import untrusted
from gateway.errors import InvalidRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
POSITIVE_INTS = ("max_tokens", "max_completion_tokens", "n")
MAX_DEPTH = 255  # the deepest JSON orjson writes


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON ({exc.msg} at position {exc.pos}); "
                             "send a JSON object with Content-Type: application/json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object, like "
                             '{"model": "fast", "messages": [...]}')
    # orjson reads JSON nested 1,024 deep but writes only 255: a body the gateway could not
    # send on (or count, or key the cache by) is refused here. Only a body with enough
    # brackets to be that deep is written out to find out, once.
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH:
        try:
            orjson.dumps(body)
        except orjson.JSONEncodeError:
            raise InvalidRequest(f"the body nests deeper than {MAX_DEPTH} levels of objects "
                                 "and arrays; flatten it") from None
    return body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def require_model(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required: a tier or model name (GET /v1/models lists "
                             "them)", param="model")


def parse_chat(raw: bytes) -> dict[str, Any]:
    body = parse_json_object(raw)
    require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array of messages",
                             param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(f"messages[{i}] must be an object with 'role' and 'content'",
                                 param=f"messages[{i}]")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise InvalidRequest(f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}; "
                                 f"got {untrusted.bounded(repr(role))}",
                                 param=f"messages[{i}].role")
        content = message.get("content")
        if not (content is None or isinstance(content, str | list)):
            raise InvalidRequest(f"messages[{i}].content must be a string or an array of parts",
                                 param=f"messages[{i}].content")
        if isinstance(content, list):
            _check_parts(content, i)
        if content is None and role not in ("assistant", "function"):
            raise InvalidRequest(f"messages[{i}].content is required for role '{role}'",
                                 param=f"messages[{i}].content")
    if "stream" in body and not isinstance(body["stream"], bool | None):
        raise InvalidRequest("'stream' must be true or false", param="stream")
    for name in POSITIVE_INTS:
        value = body.get(name)
        if value is not None and (not _is_int(value) or value < 1):
            raise InvalidRequest(f"'{name}' must be a positive integer", param=name)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object", param="stream_options")
    _check_tools(body)
    stop = body.get("stop")
    if not (stop is None or isinstance(stop, str)
            or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))):
        raise InvalidRequest("'stop' must be a string or an array of strings", param="stop")
    return body


def _check_parts(parts: list[Any], i: int) -> None:
    for j, part in enumerate(parts):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InvalidRequest(f"messages[{i}].content[{j}] must be an object with a 'type', "
                                 'like {"type": "text", "text": "..."}',
                                 param=f"messages[{i}].content[{j}]")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise InvalidRequest(f"messages[{i}].content[{j}].text must be a string",
                                 param=f"messages[{i}].content[{j}].text")


def _is_function(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("name"), str)


def _check_tools(body: dict[str, Any]) -> None:
    """The shapes every provider's translation relies on, as OpenAI itself checks them."""
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    for i, tool in enumerate(tools or ()):
        if not isinstance(tool, dict) or (tool.get("type", "function") == "function"
                                          and not _is_function(tool.get("function"))):
            raise InvalidRequest(f"tools[{i}] must be an object like {{\"type\": \"function\", "
                                 f"\"function\": {{\"name\": ...}}}}", param=f"tools[{i}]")
    choice = body.get("tool_choice")
    if not (choice is None or isinstance(choice, str)
            or (isinstance(choice, dict) and ("function" not in choice
                                              or _is_function(choice["function"])))):
        raise InvalidRequest("'tool_choice' must be 'none', 'auto', 'required' or "
                             '{"type": "function", "function": {"name": ...}}',
                             param="tool_choice")
    for i, message in enumerate(body["messages"]):
        calls = message.get("tool_calls")
        if calls is None:
            continue
        if not isinstance(calls, list) or not all(
                isinstance(c, dict) and _is_function(c.get("function")) for c in calls):
            raise InvalidRequest(f"messages[{i}].tool_calls must be an array of "
                                 '{"id", "type": "function", "function": {"name", "arguments"}}',
                                 param=f"messages[{i}].tool_calls")


def _is_embedding_input(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    if not isinstance(value, list) or not value:
        return False
    return (all(isinstance(item, str) and item for item in value)
            or all(_is_int(item) for item in value)
            or all(isinstance(item, list) and item and all(_is_int(t) for t in item)
                   for item in value))


def parse_embeddings(raw: bytes) -> dict[str, Any]:
    body = parse_json_object(raw)
    require_model(body)
    if not _is_embedding_input(body.get("input")):
        raise InvalidRequest("'input' must be a non-empty string, an array of non-empty "
                             "strings, or an array of token ids (or of token id arrays)",
                             param="input")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not _is_int(dimensions) or dimensions < 1):
        raise InvalidRequest("'dimensions' must be a positive integer", param="dimensions")
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'",
                             param="encoding_format")
    return body
