"""OpenAI `chat.completion.chunk`s -> Anthropic's stream events, without I/O.

The reverse of anthropic_stream.py. Anthropic's order: message_start (its usage
with the input tokens: the caller counts them before the stream opens, since a
chat provider reports them only at the end), ping, then one content block at a
time (start, deltas, stop; indexes from 0), message_delta with the stop reason
and the final usage, message_stop. Thinking and text stream as they come, and so
does the first tool call: its block starts as soon as its name is known and its
arguments follow as input_json_delta fragments, so that a long call (Claude
Code's Write) is not taken for a model that has not begun (first_token_s), and
the budget's watch sees it as it is made. Further calls are held until the
choice finishes and sent whole, each as one block: a provider may interleave
the fragments of parallel calls (the first one's keep going to its open block),
and Anthropic's SDK fails a stream whose tool input is not JSON, so the held
calls' arguments are checked first (tool_input), as in the non-streamed answer.
OpenAI sends the usage chunk after the finish_reason one, so message_delta
waits for it (or for `close`).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.forms.anthropic import UNSIGNED
from gateway.providers import messages_translate as translate
from gateway.providers.via_chat import ChunkTranslator


class EventTranslator(ChunkTranslator):
    """Feed it each chunk of one chat stream; it returns the events that chunk produces.
    `close` ends the message when the stream ended without a usage chunk."""

    def __init__(self, model_name: str, input_tokens: int, thinking: bool):
        self.model_name = model_name
        self.input_tokens = input_tokens
        self.thinking = thinking
        self.finished = False  # message_stop sent
        self._started = False
        self._index = -1  # of the last block started
        self._open: str | None = None  # the open block: "text" | "thinking"
        self._calls: dict[int, dict[str, str]] = {}  # OpenAI tool_calls index -> the call
        self._live: int | None = None  # the call streamed in its own block, as it comes
        self._live_sent = 0  # characters of its arguments sent
        self._held_first = False  # the first call's arguments did not begin as JSON
        self._after_call = ""  # text that came while the live call was open, sent after it
        self._stop_reason: str | None = None  # the choice finished
        self._refused = False

    def _begun(self) -> bool:
        return self._started

    def _choice_ended(self) -> bool:
        return self._stop_reason is not None

    def _begin(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        self._started = True
        message: dict[str, Any] = {"id": translate.message_id(chunk.get("id")), "type": "message",
                   "role": "assistant", "model": self.model_name, "content": [],
                   "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": self.input_tokens, "output_tokens": 0,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
        return [{"type": "message_start", "message": message}, {"type": "ping"}]

    def _delta(self, delta: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        reasoning = translate.reasoning_of(delta)
        if reasoning and self.thinking:
            events += self._into("thinking")
            events.append(self._block_delta({"type": "thinking_delta", "thinking": reasoning}))
        refusal = translate.text_of(delta.get("refusal"))
        self._refused = self._refused or bool(refusal)
        text = translate.text_of(delta.get("content")) + refusal
        if text and self._open == "tool_use":
            self._after_call += text  # closing the call now would lose its later arguments
        elif text:
            events += self._into("text")
            events.append(self._block_delta({"type": "text_delta", "text": text}))
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                events += self._add_call(call)
        return events

    def _add_call(self, fragment: dict[str, Any]) -> list[dict[str, Any]]:
        """Joined as completions.Assembler joins them, so both ways agree. The first call's
        block starts once its arguments begin (its name is whole by then) and look like a
        JSON object; its arguments are then sent as they come. Arguments that begin
        otherwise ({'a': 1}) are held, and sent checked at the end, as the other calls."""
        position = fragment.get("index", 0)
        call = self._calls.setdefault(position, {"id": "", "name": "", "arguments": ""})
        if fragment.get("id"):
            call["id"] = str(fragment["id"])
        function = fragment.get("function") or {}
        call["name"] += str(function.get("name") or "")
        call["arguments"] += str(function.get("arguments") or "")
        events: list[dict[str, Any]] = []
        first = position == next(iter(self._calls))  # only the first call seen goes live
        if self._live is None and not self._held_first and first and call["name"]:
            begun = call["arguments"].lstrip()
            if begun.startswith(('{"', "{}")):
                self._live = position
                events += self._into(None)
                events += self._started_block({"type": "tool_use", "id": translate.tool_id(
                    call["id"]), "name": call["name"], "input": {}})
            elif len(begun) >= 2:
                self._held_first = True  # not JSON as it begins: checked whole at the end
        if position == self._live and self._open == "tool_use":
            fresh = call["arguments"][self._live_sent:]
            if fresh:
                self._live_sent = len(call["arguments"])
                events.append(self._block_delta({"type": "input_json_delta",
                                                 "partial_json": fresh}))
        return events

    def _end_choice(self, finish_reason: Any) -> list[dict[str, Any]]:
        events = self._into(None)
        if self._after_call:
            events += self._into("text")
            events.append(self._block_delta({"type": "text_delta", "text": self._after_call}))
            events += self._into(None)
        for position in sorted(self._calls):
            if position == self._live:
                continue  # streamed already
            call = self._calls[position]
            block = translate.tool_use({"id": call["id"], "function": call})
            arguments = orjson.dumps(block["input"]).decode()
            events += self._started_block({**block, "input": {}})
            events.append(self._block_delta({"type": "input_json_delta",
                                             "partial_json": arguments}))
            events += self._into(None)
        self._stop_reason = translate.stop_reason(finish_reason, bool(self._calls),
                                                  self._refused)
        return events

    def _end(self, chat_usage: dict[str, Any]) -> list[dict[str, Any]]:
        self.finished = True
        return [{"type": "message_delta",
                 "delta": {"stop_reason": self._stop_reason, "stop_sequence": None},
                 "usage": translate.usage(chat_usage)},
                {"type": "message_stop"}]

    def _into(self, kind: str | None) -> list[dict[str, Any]]:
        """The events that leave the open block for a block of `kind` (None: for none)."""
        if self._open == kind:
            return []
        events: list[dict[str, Any]] = []
        if self._open == "thinking":  # Anthropic signs a thinking block as it closes
            events.append(self._block_delta({"type": "signature_delta",
                                             "signature": UNSIGNED}))
        if self._open is not None:
            events.append({"type": "content_block_stop", "index": self._index})
        self._open = None
        if kind == "text":
            events += self._started_block({"type": "text", "text": ""})
        elif kind == "thinking":
            events += self._started_block({"type": "thinking", "thinking": "", "signature": ""})
        self._open = kind
        return events

    def _started_block(self, block: dict[str, Any]) -> list[dict[str, Any]]:
        self._index += 1
        self._open = str(block["type"])
        return [{"type": "content_block_start", "index": self._index, "content_block": block}]

    def _block_delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": self._index, "delta": delta}
