"""Chat and embeddings bodies: parsed once with orjson, checked for what a user gets wrong.

Only fields the gateway reads are checked; every other field passes through to
the provider untouched.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import InvalidRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
POSITIVE_INTS = ("max_tokens", "max_completion_tokens", "n")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON ({exc.msg} at position {exc.pos}); "
                             "send a JSON object with Content-Type: application/json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object, like "
                             '{"model": "fast", "messages": [...]}')
    return body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require_model(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required: a tier or model name (GET /v1/models lists "
                             "them)", param="model")


def parse_chat(raw: bytes) -> dict[str, Any]:
    body = parse_json_object(raw)
    _require_model(body)
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
                                 f"got {role!r}", param=f"messages[{i}].role")
        content = message.get("content")
        if not (content is None or isinstance(content, str | list)):
            raise InvalidRequest(f"messages[{i}].content must be a string or an array of parts",
                                 param=f"messages[{i}].content")
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
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    return body


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
    _require_model(body)
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
