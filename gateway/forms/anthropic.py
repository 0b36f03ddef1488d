"""Anthropic's form: the Messages API's `message`, and its stream of events. Pure.

A whole message is assembled from events as the SDK's accumulator does (text,
tool input JSON, thinking and its signature, citations), and replayed as the
events Anthropic sends, so that a cached answer streams like a fresh one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from gateway.money import cost, tokens
from gateway.money.cost import Reported, Usage
from gateway.money.tokens import Tally

if TYPE_CHECKING:
    from gateway.config import Model

# The signature of a thinking block the gateway made from another provider's reasoning: no
# provider signed it, so it is never sent to Anthropic (providers/anthropic_api.py drops it).
UNSIGNED = "gateway-unsigned"
MIN_THINKING_TOKENS = 1024  # the least thinking.budget_tokens Anthropic accepts
MAX_SEARCHES = 10_000  # more web searches than any answer makes: a count not believed
# Why a message ended, when it is a whole answer: `pause_turn` (a server tool paused) and
# `refusal` are not kept in the cache.
COMPLETE_STOP_REASONS = frozenset({"end_turn", "stop_sequence", "tool_use", "max_tokens"})
# Blocks in which the model calls a tool: the client's, or one Anthropic runs (code
# execution, web search, an MCP server), whose input is output billed like any other.
CALLS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})
# The deltas a client sees as output; a stream falls back until the first one.
OUTPUT_DELTAS = {"text_delta": "text", "input_json_delta": "partial_json",
                 "thinking_delta": "thinking"}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class Messages:
    def input_tally(self, body: dict[str, Any]) -> Tally:
        return tokens.messages_tally(body)

    def with_limit(self, body: dict[str, Any], model: Model, limit: int | None,
                   ) -> dict[str, Any]:
        """Anthropic refuses a max_tokens at or below thinking.budget_tokens: a limit lowered
        that far lowers the thinking budget with it, or, below the least thinking Anthropic
        takes, turns thinking off (the answer the budget can pay for is one without it)."""
        if limit is None or body.get("max_tokens") == limit:
            return body
        out = {**body, "max_tokens": limit}
        thinking = body.get("thinking")
        budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
        if isinstance(thinking, dict) and isinstance(budget, int) and budget >= limit:
            if limit - 1 >= MIN_THINKING_TOKENS:
                out["thinking"] = {**thinking, "budget_tokens": limit - 1}
            else:
                out["thinking"] = {"type": "disabled"}
        return out

    def reported(self, answer: dict[str, Any]) -> Reported:
        """Anthropic's input_tokens are the plain input: cache reads and writes are apart
        (the gateway's Usage holds the whole prompt, with them as parts of it)."""
        usage = answer.get("usage")
        if not isinstance(usage, dict):
            return Reported(None, None)
        split = usage.get("cache_creation")
        split = split if isinstance(split, dict) else {}
        read, written = (_count(usage.get("cache_read_input_tokens")),
                         _count(usage.get("cache_creation_input_tokens")))
        plain = usage.get("input_tokens")
        prompt = (plain + read + written
                  if isinstance(plain, int) and not isinstance(plain, bool) else None)
        searches = usage.get("server_tool_use")
        searches = searches.get("web_search_requests") if isinstance(searches, dict) else 0
        return dataclasses.replace(cost.usage_of({"usage": {
            "prompt_tokens": prompt, "completion_tokens": usage.get("output_tokens"),
            "prompt_tokens_details": {
                "cached_tokens": read, "cache_creation_tokens": written,
                "cache_creation_token_details": {
                    "ephemeral_1h_input_tokens": _count(split.get("ephemeral_1h_input_tokens"))}},
        }}), web_searches=min(_count(searches), MAX_SEARCHES))

    def set_usage(self, answer: dict[str, Any], usage: Usage) -> None:
        written = usage.cache_write_tokens + usage.cache_write_1h_tokens
        given = answer.get("usage")
        answer["usage"] = {**(given if isinstance(given, dict) else {}),
                           "input_tokens": usage.input_tokens - usage.cached_tokens - written,
                           "output_tokens": usage.output_tokens,
                           "cache_read_input_tokens": usage.cached_tokens,
                           "cache_creation_input_tokens": written}

    def output_tally(self, answer: dict[str, Any]) -> Tally:
        tally = Tally()
        for block in answer.get("content") or ():
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text":
                tally.text(block.get("text"))
            elif kind == "thinking":
                tally.text(block.get("thinking"))
            elif kind in CALLS:
                tally.text(block.get("name"))
                tally.text(block.get("input"))
        return tally

    def choices(self, answer: dict[str, Any]) -> int:
        return 1

    def same_when_limited(self, body: dict[str, Any], limit: int) -> bool:
        """Not when the clamp lowered the thinking budget with the limit (with_limit)."""
        thinking = body.get("thinking")
        budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
        return not (isinstance(budget, int) and budget >= limit)

    def is_complete(self, answer: dict[str, Any], length_ok: bool) -> bool:
        reasons = COMPLETE_STOP_REASONS if length_ok else COMPLETE_STOP_REASONS - {"max_tokens"}
        return answer.get("type") == "message" and answer.get("stop_reason") in reasons

    def shown(self, answer: dict[str, Any]) -> Any:
        return answer.get("content")

    def as_hit(self, encoded: bytes, body: dict[str, Any]) -> bytes:
        return encoded  # nothing in it is the asker's own

    def has_token(self, item: dict[str, Any]) -> bool:
        if item.get("type") == "content_block_start":
            return (item.get("content_block") or {}).get("type") in CALLS
        if item.get("type") != "content_block_delta":
            return False
        delta = item.get("delta") or {}
        field = OUTPUT_DELTAS.get(str(delta.get("type")))
        return bool(field and delta.get(field))

    def output_texts(self, item: dict[str, Any]) -> list[str]:
        kind = item.get("type")
        if kind == "content_block_delta":
            delta = item.get("delta") or {}
            field = OUTPUT_DELTAS.get(str(delta.get("type")))
            value = delta.get(field) if field else None
            return [value] if isinstance(value, str) else []
        if kind == "content_block_start":
            block = item.get("content_block") or {}
            return [v for v in (block.get("name"), block.get("text")) if isinstance(v, str)]
        return []

    def searches(self, item: dict[str, Any]) -> int:
        block = item.get("content_block") if item.get("type") == "content_block_start" else None
        return int(isinstance(block, dict) and block.get("type") == "server_tool_use"
                   and block.get("name") == "web_search")

    def assembler(self) -> MessageAssembler:
        return MessageAssembler()

    def ending(self, choices: int) -> MessageEnding:
        return MessageEnding()

    def usage_items(self, answer: dict[str, Any]) -> list[dict[str, Any]]:
        return []  # a message's usage goes in its message_delta, sent with the cut

    def replay(self, answer: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return replay(answer)


class MessageAssembler:
    """Events in, the message they amount to out (a stream cut short: what was made)."""

    def __init__(self) -> None:
        self.message: dict[str, Any] = {"type": "message", "role": "assistant", "content": [],
                                        "stop_reason": None, "stop_sequence": None}
        self.blocks: dict[int, dict[str, Any]] = {}
        self.json: dict[int, list[str]] = {}

    def add(self, item: dict[str, Any]) -> None:
        kind = item.get("type")
        if kind == "message_start":
            started = item.get("message") or {}
            self.message.update({k: v for k, v in started.items() if k != "content"})
        elif kind == "content_block_start":
            block = dict(item.get("content_block") or {})
            self.blocks[item.get("index", len(self.blocks))] = block
        elif kind == "content_block_delta":
            self._delta(item.get("index", 0), item.get("delta") or {})
        elif kind == "message_delta":
            self.message.update(item.get("delta") or {})
            usage = {k: v for k, v in (item.get("usage") or {}).items() if v is not None}
            self.message["usage"] = {**(self.message.get("usage") or {}), **usage}

    def _delta(self, index: int, delta: dict[str, Any]) -> None:
        block = self.blocks.setdefault(index, {"type": "text", "text": ""})
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + str(delta.get("text", ""))
        elif kind == "input_json_delta":
            self.json.setdefault(index, []).append(str(delta.get("partial_json", "")))
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + str(delta.get("thinking", ""))
        elif kind == "signature_delta":
            block["signature"] = block.get("signature", "") + str(delta.get("signature", ""))
        elif kind == "citations_delta":  # a text block may start with "citations": null
            block["citations"] = [*(block.get("citations") or ()), delta.get("citation")]

    def completion(self) -> dict[str, Any]:
        content = []
        for index in sorted(self.blocks):
            block = dict(self.blocks[index])
            if index in self.json:
                try:
                    block["input"] = orjson.loads("".join(self.json[index]) or "{}")
                except orjson.JSONDecodeError:  # cut mid-argument: what was made, as text
                    block["input"] = {}
            content.append(block)
        return {**self.message, "content": content}


class MessageEnding:
    """The open block is closed and the message stops with stop_reason "max_tokens"."""

    def __init__(self) -> None:
        self.open: int | None = None
        self.stopped = False

    def add(self, item: dict[str, Any]) -> None:
        kind = item.get("type")
        if kind == "content_block_start":
            self.open = item.get("index", 0)
        elif kind == "content_block_stop":
            self.open = None
        elif kind in ("message_delta", "message_stop"):
            self.stopped = True

    def cut(self, output_tokens: int) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self.open is not None:
            events.append({"type": "content_block_stop", "index": self.open})
        if not self.stopped:  # the usage as counted (settled on the same count, or less)
            events.append({"type": "message_delta",
                           "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                           "usage": {"output_tokens": output_tokens}})
        events.append({"type": "message_stop"})
        return events


def replay(message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The events Anthropic streams for this message: message_start, a start, delta(s) and
    stop per block, message_delta with the stop reason and usage, message_stop."""
    usage = message.get("usage") or {}
    yield {"type": "message_start",
           "message": {**message, "content": [], "stop_reason": None, "stop_sequence": None,
                       "usage": {**usage, "output_tokens": min(1, _count(
                           usage.get("output_tokens")))}}}
    for index, block in enumerate(message.get("content") or ()):
        kind = block.get("type")
        if kind == "text":
            yield _start(index, {**block, "text": ""})
            yield _delta(index, {"type": "text_delta", "text": block.get("text", "")})
        elif kind == "thinking":
            yield _start(index, {"type": "thinking", "thinking": "", "signature": ""})
            yield _delta(index, {"type": "thinking_delta", "thinking": block.get("thinking", "")})
            yield _delta(index, {"type": "signature_delta",
                                 "signature": block.get("signature", "")})
        elif kind == "tool_use":
            yield _start(index, {**block, "input": {}})
            yield _delta(index, {"type": "input_json_delta",
                                 "partial_json": orjson.dumps(block.get("input", {})).decode()})
        else:  # redacted thinking, server tool blocks: whole, in their start event
            yield _start(index, block)
        yield {"type": "content_block_stop", "index": index}
    yield {"type": "message_delta",
           "delta": {"stop_reason": message.get("stop_reason"),
                     "stop_sequence": message.get("stop_sequence")},
           "usage": usage}
    yield {"type": "message_stop"}


def _start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def _delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


MESSAGES = Messages()
