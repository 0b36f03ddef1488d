"""chat.completion objects both ways: a stream's chunks assembled into one, and one replayed.

The cache keeps one shape, the non-streamed chat.completion, so an answer made
by a stream can serve a plain request and the reverse. Pure functions; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

HEAD_FIELDS = ("id", "created", "model", "system_fingerprint")
# Fields OpenAI's schema requires even when they are null; an answer without them breaks
# clients generated from that schema.
REQUIRED_IN_CHOICE = ("logprobs", "finish_reason")
REQUIRED_IN_MESSAGE = ("content", "refusal")


def conform(completion: dict[str, Any]) -> dict[str, Any]:
    """A chat.completion with its required null fields put back (litellm drops them)."""
    for choice in completion.get("choices") or ():
        for name in REQUIRED_IN_CHOICE:
            choice.setdefault(name, None)
        for name in REQUIRED_IN_MESSAGE:
            choice.setdefault("message", {}).setdefault(name, None)
    return completion


def conform_chunk(chunk: dict[str, Any]) -> dict[str, Any]:
    """A chat.completion.chunk with its required `finish_reason` put back."""
    for choice in chunk.get("choices") or ():
        choice.setdefault("finish_reason", None)
    return chunk


@dataclass
class _Choice:
    text: dict[str, str] = field(default_factory=dict)  # content, refusal, reasoning_content...
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: list[Any] = field(default_factory=list)
    finish_reason: str | None = None

    def add(self, choice: dict[str, Any]) -> None:
        for name, value in (choice.get("delta") or {}).items():
            if name == "tool_calls":
                for call in value or ():
                    self._add_tool_call(call)
            elif name != "role" and isinstance(value, str):
                self.text[name] = self.text.get(name, "") + value
        self.logprobs += (choice.get("logprobs") or {}).get("content") or ()
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]

    def _add_tool_call(self, delta: dict[str, Any]) -> None:
        call = self.tool_calls.setdefault(delta.get("index", 0), {
            "id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        for name in ("id", "type"):
            if delta.get(name):
                call[name] = delta[name]
        function = delta.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""

    def message(self) -> dict[str, Any]:
        text = dict(self.text)
        message: dict[str, Any] = {"role": "assistant", "content": text.pop("content", None),
                                   "refusal": text.pop("refusal", None), **text}
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return message


class Assembler:
    """Feed it a stream's chunks in order; `completion()` is the answer they amount to."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.choices: dict[int, _Choice] = {}
        self.usage: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        if not self.head:
            self.head = {k: chunk[k] for k in HEAD_FIELDS if chunk.get(k) is not None}
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            self.choices.setdefault(choice.get("index", 0), _Choice()).add(choice)

    def completion(self) -> dict[str, Any]:
        choices = [{"index": index, "message": state.message(),
                    "logprobs": ({"content": state.logprobs, "refusal": None}
                                 if state.logprobs else None),
                    "finish_reason": state.finish_reason}
                   for index, state in sorted(self.choices.items())]
        answer = {**self.head, "object": "chat.completion", "choices": choices}
        if self.usage is not None:
            answer["usage"] = self.usage
        return answer


def replay(completion: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The chunks a provider would have streamed for this answer: per choice a role chunk,
    its text, its tool calls and its finish; then the usage chunk, if it has usage."""
    head = {k: completion[k] for k in HEAD_FIELDS if completion.get(k) is not None}
    head["object"] = "chat.completion.chunk"

    def chunk(index: int, delta: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {**head, "choices": [{"index": index, "delta": delta, "finish_reason": None,
                                     **extra}]}

    for choice in completion.get("choices") or ():
        index, message = choice.get("index", 0), choice.get("message") or {}
        yield chunk(index, {"role": "assistant", "content": "", "refusal": None})
        text = {k: v for k, v in message.items() if k != "role" and isinstance(v, str) and v}
        if text or choice.get("logprobs"):
            yield chunk(index, text, logprobs=choice.get("logprobs"))
        if message.get("tool_calls"):
            calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
            yield chunk(index, {"tool_calls": calls})
        yield chunk(index, {}, finish_reason=choice.get("finish_reason"))
    if completion.get("usage"):
        yield {**head, "choices": [], "usage": completion["usage"]}
