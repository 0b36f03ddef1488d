"""OpenAI `chat.completion.chunk`s -> Responses stream events, without I/O.

The order Codex and OpenAI's SDKs hold a stream to: response.created (the response
in progress, no output yet) and response.in_progress; then each output item: added
empty, filled by its deltas, its text done, its part done, the item done; output
indexes from 0; then response.completed (response.incomplete when the answer was
cut) with the whole response, the same object responses_translate.from_chat makes
of the same answer. Every event has a `sequence_number`, counting from 0.
Reasoning and text stream as they come, and so do tool calls: a call's item is added
as soon as its name is known and its arguments follow as they come, so that a long
call is not taken for a model that has not begun. Calls stay open together until
the choice finishes, for a provider may interleave the fragments of parallel calls
(each event names its item, so each goes to its own); words or reasoning that come
while calls are open follow them, as new items, when the choice finishes, so that
no item is added to after it is done. OpenAI sends the usage chunk after the
finish_reason one, so the terminal event waits for it (or for `close`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from gateway.providers import responses_translate as translate
from gateway.providers.messages_translate import reasoning_of, text_of
from gateway.providers.via_chat import ChunkTranslator


@dataclass
class _Call:
    """One tool call as its fragments come; `index` is its output index once added."""

    item_id: str = field(default_factory=lambda: translate.new_id("fc"))
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    index: int | None = None
    sent: int = 0  # characters of its arguments sent


class EventTranslator(ChunkTranslator):
    """Feed it each chunk of one chat stream; it returns the events that chunk produces.
    `close` ends the response when the stream ended without a usage chunk."""

    def __init__(self, model_name: str, input_tokens: int, body: dict[str, Any]):
        self.model_name = model_name
        self.input_tokens = input_tokens  # what response.created shows, before the usage
        self.body = body
        self.finished = False  # the terminal event sent
        self._sequence = 0
        self._opened: dict[str, Any] | None = None  # the skeleton, once created
        self._output: list[dict[str, Any]] = []  # the items done, by output index
        self._names = {chat: key for key, chat in translate.namespaced(body).items()}
        self._open: str | None = None  # "reasoning" | "message" | "calls"
        self._item: dict[str, Any] = {}  # the open reasoning or message item
        self._part = ""  # the open message part's type: "output_text" | "refusal"
        self._text = ""  # the open summary's or part's text so far
        self._calls: dict[int, _Call] = {}  # chat's tool_calls index -> the call
        self._held: list[tuple[str, str]] = []  # (kind, text) that came while calls were open
        self._finish: str | None = None  # the choice's finish_reason, once it finished

    def _begun(self) -> bool:
        return self._opened is not None

    def _choice_ended(self) -> bool:
        return self._finish is not None

    def _begin(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        self._opened = translate.skeleton(self.body, self.model_name, translate.new_id("resp"),
                                          int(time.time()))
        # OpenAI's schema has no null usage: an in-progress response leaves it out.
        return [self._event("response.created", response=self._opened),
                self._event("response.in_progress", response=self._opened)]

    def _delta(self, delta: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        pieces = (("reasoning", reasoning_of(delta)),
                  ("output_text", text_of(delta.get("content"))),
                  ("refusal", text_of(delta.get("refusal"))))
        for kind, text in pieces:
            if text and self._open == "calls":
                self._held.append((kind, text))
            elif text:
                events += self._words(kind, text)
        for fragment in delta.get("tool_calls") or ():
            if isinstance(fragment, dict):
                events += self._add_call(fragment)
        return events

    def _words(self, kind: str, text: str) -> list[dict[str, Any]]:
        """Reasoning, text or a refusal, into the item (and part) of its kind."""
        if kind == "reasoning":
            events = self._into("reasoning")
            self._text += text
            return [*events, self._event("response.reasoning_summary_text.delta",
                                         **self._at(summary_index=0), delta=text)]
        events = self._into("message")
        if self._part != kind:
            events += self._end_part()
            events += self._start_part(kind)
        self._text += text
        if kind == "refusal":
            return [*events, self._event("response.refusal.delta", **self._at(
                content_index=len(self._item["content"])), delta=text)]
        return [*events, self._event("response.output_text.delta", **self._at(
            content_index=len(self._item["content"])), delta=text, logprobs=[])]

    def _add_call(self, fragment: dict[str, Any]) -> list[dict[str, Any]]:
        """Joined as completions.Assembler joins them, so both ways agree. A call's item
        is added once its name begins; its arguments so far follow at once."""
        call = self._calls.setdefault(fragment.get("index", 0), _Call())
        if fragment.get("id") and call.index is None:  # the item added keeps its call_id
            call.call_id = str(fragment["id"])
        function = fragment.get("function") or {}
        call.name += str(function.get("name") or "")
        call.arguments += str(function.get("arguments") or "")
        events: list[dict[str, Any]] = []
        if call.index is None and call.name:
            events += self._open_call(call)
        return events + self._arguments(call)

    def _arguments(self, call: _Call) -> list[dict[str, Any]]:
        """The arguments of an added call not yet sent."""
        if call.index is None or len(call.arguments) <= call.sent:
            return []
        fresh, call.sent = call.arguments[call.sent:], len(call.arguments)
        return [self._event("response.function_call_arguments.delta", item_id=call.item_id,
                            output_index=call.index, delta=fresh)]

    def _open_call(self, call: _Call) -> list[dict[str, Any]]:
        events = self._into("calls")
        call.index = self._next_index()
        self._output.append({})  # its place, filled when it is done
        call.call_id = call.call_id or translate.new_id("call")
        item = translate.function_call_item(call.item_id, call.call_id, call.name, "",
                                            self._names, status="in_progress")
        return [*events, self._event("response.output_item.added", output_index=call.index,
                                     item=item)]

    def _end_choice(self, finish_reason: Any) -> list[dict[str, Any]]:
        finish_reason = str(finish_reason)
        events: list[dict[str, Any]] = []
        for call in self._calls.values():
            if call.index is None:  # a call that never had a name: its item all the same
                events += self._open_call(call)
                events += self._arguments(call)
        events += self._into(None)
        for kind, text in self._held:
            events += self._words(kind, text)
        events += self._into(None)
        self._finish = finish_reason
        return events

    def _end(self, chat_usage: dict[str, Any]) -> list[dict[str, Any]]:
        self.finished = True
        assert self._opened is not None  # started by the first chunk
        final = translate.response(self._opened, self._output, self._finish, chat_usage)
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        return [self._event(kind, response=final)]

    def _into(self, kind: str | None) -> list[dict[str, Any]]:
        """The events that leave the open item for an item of `kind` (None: for none)."""
        if self._open == kind:
            return []
        events = self._close()
        if kind == "reasoning":
            self._item = {"type": "reasoning", "id": translate.new_id("rs"), "summary": []}
            events += self._added()
            events.append(self._event("response.reasoning_summary_part.added",
                                      **self._at(summary_index=0),
                                      part={"type": "summary_text", "text": ""}))
        elif kind == "message":
            self._item = translate.message_item(translate.new_id("msg"), [], "in_progress")
            events += self._added()
        self._open = kind
        return events

    def _close(self) -> list[dict[str, Any]]:
        """The events that finish the open item(s)."""
        events: list[dict[str, Any]] = []
        if self._open == "reasoning":
            where = self._at(summary_index=0)
            events += [self._event("response.reasoning_summary_text.done", **where,
                                   text=self._text),
                       self._event("response.reasoning_summary_part.done", **where,
                                   part={"type": "summary_text", "text": self._text})]
            events += self._done(translate.reasoning_item(self._item["id"], self._text))
        elif self._open == "message":
            events += self._end_part()
            events += self._done({**self._item, "status": "completed"})
        elif self._open == "calls":
            for call in self._calls.values():
                if call.index is not None and not self._output[call.index]:
                    if not call.arguments.strip():  # as from_chat says it: no arguments
                        call.arguments = translate.NO_ARGUMENTS
                        events += self._arguments(call)
                    item = translate.function_call_item(call.item_id, call.call_id, call.name,
                                                        call.arguments, self._names)
                    events.append(self._event("response.function_call_arguments.done",
                                              item_id=call.item_id, output_index=call.index,
                                              arguments=call.arguments, name=item["name"]))
                    self._output[call.index] = item
                    events.append(self._event("response.output_item.done",
                                              output_index=call.index, item=item))
        self._open, self._item, self._text = None, {}, ""
        return events

    def _start_part(self, kind: str) -> list[dict[str, Any]]:
        self._part = kind
        empty = translate.text_part("") if kind == "output_text" else translate.refusal_part("")
        return [self._event("response.content_part.added", **self._at(
            content_index=len(self._item["content"])), part=empty)]

    def _end_part(self) -> list[dict[str, Any]]:
        if not self._part:
            return []
        where = self._at(content_index=len(self._item["content"]))
        if self._part == "refusal":
            part = translate.refusal_part(self._text)
            events = [self._event("response.refusal.done", **where, refusal=self._text)]
        else:
            part = translate.text_part(self._text)
            events = [self._event("response.output_text.done", **where, text=self._text,
                                  logprobs=[])]
        events.append(self._event("response.content_part.done", **where, part=part))
        self._item["content"].append(part)
        self._part, self._text = "", ""
        return events

    def _added(self) -> list[dict[str, Any]]:
        """The open item added, empty (a copy: its content grows as it streams)."""
        item = {k: (list(v) if isinstance(v, list) else v) for k, v in self._item.items()}
        self._item["index"] = self._next_index()
        self._output.append({})
        return [self._event("response.output_item.added", output_index=self._item["index"],
                            item=item)]

    def _done(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """The open item done, as `item`, in its place in the output."""
        index = self._item["index"]
        item = {k: v for k, v in item.items() if k != "index"}
        self._output[index] = item
        return [self._event("response.output_item.done", output_index=index, item=item)]

    def _next_index(self) -> int:
        return len(self._output)

    def _at(self, **where: int) -> dict[str, Any]:
        return {"item_id": self._item["id"], "output_index": self._item["index"], **where}

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event
