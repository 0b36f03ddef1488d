"""Anthropic's SSE event sequence -> OpenAI `chat.completion.chunk`s, without I/O."""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.errors import ProviderError, identifier, kind_for_status, provider_reason
from gateway.providers.anthropic_translate import JSON_TOOL, STOP_REASONS, openai_usage

ERROR_STATUSES = {"invalid_request_error": 400, "authentication_error": 401,
                  "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                  "rate_limit_error": 429, "api_error": 500, "timeout_error": 504,
                  "overloaded_error": 529}


class ChunkTranslator:
    """Feed it each event's data; it returns the chunks that event produces."""

    def __init__(self, model_name: str, json_mode: bool):
        self.model_name = model_name
        self.json_mode = json_mode
        self.finished = False
        self._id = ""
        self._created = int(time.time())
        self._usage: dict[str, Any] = {}
        self._blocks: dict[int, str] = {}  # block index -> "text" | "json" | "tool" | other
        self._tool_index: dict[int, int] = {}  # block index -> OpenAI tool_calls index
        self._finish: str | None = None

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self._id = message.get("id") or ""
            self._usage.update(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(event.get("index", 0), event.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(event.get("index", 0), event.get("delta") or {})
        if kind == "message_delta":
            self._usage.update({k: v for k, v in (event.get("usage") or {}).items()
                                if v is not None})
            reason = (event.get("delta") or {}).get("stop_reason")
            self._finish = STOP_REASONS.get(reason or "", "stop")
            if self._finish == "tool_calls" and not self._tool_index:
                self._finish = "stop"  # the only tool was the JSON answer
            return [self._chunk({}, self._finish)]
        if kind == "message_stop":
            self.finished = True
            return [{"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                     "model": self.model_name, "choices": [], "usage": openai_usage(self._usage)}]
        if kind == "error":
            raise stream_error(event)
        return []  # ping, content_block_stop, and event types added later

    def _block_start(self, index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
        kind = block.get("type")
        if kind == "tool_use" and self.json_mode and block.get("name") == JSON_TOOL:
            self._blocks[index] = "json"
            return []
        if kind == "tool_use":
            self._blocks[index] = "tool"
            position = self._tool_index[index] = len(self._tool_index)
            return [self._chunk({"tool_calls": [{"index": position, "id": block.get("id"),
                                                 "type": "function", "function": {
                                                     "name": block.get("name"),
                                                     "arguments": ""}}]})]
        self._blocks[index] = str(kind)
        if kind == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        return []

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[dict[str, Any]]:
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta.get("text", "")})]
        if kind == "thinking_delta":
            return [self._chunk({"reasoning_content": delta.get("thinking", "")})]
        if kind == "input_json_delta":
            partial = delta.get("partial_json", "")
            if self._blocks.get(index) == "json":
                return [self._chunk({"content": partial})] if partial else []
            return [self._chunk({"tool_calls": [{"index": self._tool_index.get(index, 0),
                                                 "function": {"arguments": partial}}]})]
        return []

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                "model": self.model_name,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]}


def stream_error(event: dict[str, Any]) -> ProviderError:
    """An `error` event, which Anthropic may send mid-stream (overloaded_error, ...)."""
    error = event.get("error")
    error = error if isinstance(error, dict) else {}
    status = ERROR_STATUSES.get(str(error.get("type", "")), 500)
    kind = kind_for_status(status)
    return ProviderError(provider_reason(status, kind, error.get("type")), status=status,
                         kind=kind, type=identifier(error.get("type")) or "api_error")


# The object each event type carries: an event without it is not one the gateway (or the
# Anthropic SDK) can read, so the stream is a broken one, a 502 of that model.
CARRIED = {"message_start": "message", "content_block_start": "content_block",
           "content_block_delta": "delta", "message_delta": "delta"}


def parse_event(data: bytes) -> dict[str, Any]:
    event = orjson.loads(data)
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise ProviderError("Anthropic sent an event that is not an object with a type",
                            status=502, kind="transient")
    carried = CARRIED.get(event["type"])
    if carried is not None and not isinstance(event.get(carried), dict):
        raise ProviderError(f"Anthropic sent a {event['type']} event without its {carried}",
                            status=502, kind="transient")
    return event
