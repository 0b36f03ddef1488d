"""OpenAI's Responses form: the `response` object, and its stream of events. Pure.

A whole response is assembled from events as the SDK's stream state does (items
as added, their text, arguments and summaries as they grow, then as done), and
replayed as the events OpenAI sends, so that a cached answer streams like a fresh
one. Event sequence numbers are the surface's to write (surfaces/openai_responses.py):
every event the gateway makes or passes on is numbered once, in the order sent.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from gateway.money import cost, tokens
from gateway.money.cost import Reported, Usage
from gateway.money.tokens import Tally

if TYPE_CHECKING:
    from gateway.config import Model

GATEWAY_MARK = "_gw_"  # in every id the gateway makes: resp_gw_..., msg_gw_..., rs_gw_...
# What a response repeats of the request that asked for it, but that does not change what it
# says: a cache hit carries the asker's own, never the first asker's.
BOOKKEEPING = ("metadata", "user", "safety_identifier", "prompt_cache_key", "service_tier")


def new_id(prefix: str) -> str:
    """An id the gateway made: "<prefix>_gw_<32 hex>"."""
    return f"{prefix}{GATEWAY_MARK}{uuid.uuid4().hex}"


def _renamed(item_id: Any) -> Any:
    return new_id(item_id.split("_", 1)[0]) if isinstance(item_id, str) and item_id else item_id


MAX_SEARCHES = 10_000  # more web searches than any answer makes: a count not believed
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
# The deltas a client sees as output, and the field of the event holding it.
OUTPUT_DELTAS = frozenset({
    "response.output_text.delta", "response.refusal.delta",
    "response.function_call_arguments.delta", "response.custom_tool_call_input.delta",
    "response.reasoning_summary_text.delta", "response.reasoning_text.delta"})
# Items in which the model calls the client's tools: a call begun is output. A web search
# begun is billed: from it on, the stream is committed to its model (no fallback reruns it).
CALLS = frozenset({"function_call", "custom_tool_call"})
BEGUN = CALLS | {"web_search_call"}
CUT = {"reason": "max_output_tokens"}
PART_TYPES = {"response.refusal.delta": "refusal",
              "response.reasoning_text.delta": "reasoning_text"}


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage_body(usage: Usage, given: Any = None) -> dict[str, Any]:
    """A usage as the Responses API writes it (the reasoning share kept as reported)."""
    details = given.get("output_tokens_details") if isinstance(given, dict) else None
    reasoning = _count(details.get("reasoning_tokens")) if isinstance(details, dict) else None
    return {"input_tokens": usage.input_tokens,
            "input_tokens_details": {
                "cached_tokens": usage.cached_tokens,
                "cache_write_tokens": usage.cache_write_tokens + usage.cache_write_1h_tokens},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": min(reasoning or 0,
                                                              usage.output_tokens)},
            "total_tokens": usage.input_tokens + usage.output_tokens}


class Responses:
    def input_tally(self, body: dict[str, Any]) -> Tally:
        return tokens.responses_tally(body)

    def with_limit(self, body: dict[str, Any], model: Model, limit: int | None,
                   ) -> dict[str, Any]:
        if limit is None or body.get("max_output_tokens") == limit:
            return body
        return {**body, "max_output_tokens": limit}  # never below OpenAI's least (worst_case)

    def reported(self, answer: dict[str, Any]) -> Reported:
        searches = min(MAX_SEARCHES, sum(  # made, even in a stream cut before its usage
            1 for item in answer.get("output") or ()
            if isinstance(item, dict) and item.get("type") == "web_search_call"))
        usage = answer.get("usage")
        if not isinstance(usage, dict):
            return Reported(None, None, web_searches=searches)
        details = usage.get("input_tokens_details")
        details = details if isinstance(details, dict) else {}
        output = usage.get("output_tokens_details")
        reasoning = output.get("reasoning_tokens") if isinstance(output, dict) else None
        reported = cost.usage_of({"usage": {
            "prompt_tokens": usage.get("input_tokens"),
            "completion_tokens": usage.get("output_tokens"),
            "completion_tokens_details": {"reasoning_tokens": reasoning},
            "prompt_tokens_details": {"cached_tokens": details.get("cached_tokens"),
                                      "cache_creation_tokens": details.get(
                                          "cache_write_tokens")}}})
        return dataclasses.replace(reported, web_searches=searches)

    def set_usage(self, answer: dict[str, Any], usage: Usage) -> None:
        answer["usage"] = usage_body(usage, answer.get("usage"))

    def output_tally(self, answer: dict[str, Any]) -> Tally:
        tally = Tally()
        for item in answer.get("output") or ():
            if not isinstance(item, dict):
                continue
            kind = item.get("type")
            if kind == "message":
                for part in item.get("content") or ():
                    if isinstance(part, dict):
                        tally.text(part.get("text") or part.get("refusal"))
            elif kind in CALLS:
                tally.text(item.get("name"))
                tally.text(item.get("arguments") or item.get("input"))
            elif kind == "reasoning":
                for part in [*(item.get("summary") or ()), *(item.get("content") or ())]:
                    if isinstance(part, dict):
                        tally.text(part.get("text"))
            else:  # a hosted tool's call: what the model wrote for it
                tally.text(item)
        return tally

    def choices(self, answer: dict[str, Any]) -> int:
        return 1

    def is_complete(self, answer: dict[str, Any], length_ok: bool) -> bool:
        status = answer.get("status")
        if status == "completed":
            return answer.get("object") == "response"
        return (length_ok and status == "incomplete"
                and (answer.get("incomplete_details") or {}).get("reason") == CUT["reason"])

    def same_when_limited(self, body: dict[str, Any], limit: int) -> bool:
        return True  # only the limit changed, and the answer ended before it

    def shown(self, answer: dict[str, Any]) -> Any:
        return answer.get("output")

    def has_token(self, item: dict[str, Any]) -> bool:
        kind = item.get("type")
        if kind == "response.output_item.added":
            return (item.get("item") or {}).get("type") in BEGUN
        return kind in OUTPUT_DELTAS and bool(item.get("delta"))

    def output_texts(self, item: dict[str, Any]) -> list[str]:
        kind = item.get("type")
        if kind in OUTPUT_DELTAS:
            delta = item.get("delta")
            return [delta] if isinstance(delta, str) else []
        if kind == "response.output_item.added":
            name = (item.get("item") or {}).get("name")
            return [name] if isinstance(name, str) else []
        return []

    def searches(self, item: dict[str, Any]) -> int:
        added = item.get("item") if item.get("type") == "response.output_item.added" else None
        return int(isinstance(added, dict) and added.get("type") == "web_search_call")

    def assembler(self) -> ResponseAssembler:
        return ResponseAssembler()

    def ending(self, choices: int) -> ResponseEnding:
        return ResponseEnding()

    def usage_items(self, answer: dict[str, Any]) -> list[dict[str, Any]]:
        """A cut stream's end: the response as made, incomplete, with the usage charged."""
        return [{"type": "response.incomplete", "response": answer}]

    def replay(self, answer: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return replay(answer)

    def as_hit(self, encoded: bytes, body: dict[str, Any]) -> bytes:
        """A cached response as a response of its own to `body`: new ids (its own to store,
        continue and delete), made now, with the asker's bookkeeping and `store`."""
        response = orjson.loads(encoded)
        response.update({"id": new_id("resp"), "created_at": int(time.time()),
                         "store": body.get("store", True), "previous_response_id": None})
        response["metadata"] = body.get("metadata") or {}
        for name in BOOKKEEPING[1:]:
            if name in body:
                response[name] = body[name]
            else:
                response.pop(name, None)
        response["output"] = [{**item, "id": _renamed(item.get("id"))}
                              if isinstance(item, dict) and "id" in item else item
                              for item in response.get("output") or ()]
        return orjson.dumps(response)


class ResponseAssembler:
    """Events in, the response they amount to out. A stream that never reached its end (the
    budget cut it) amounts to an incomplete response of what was made."""

    def __init__(self) -> None:
        self.response: dict[str, Any] = {"object": "response", "output": []}
        self.items: dict[int, dict[str, Any]] = {}
        self.final: dict[str, Any] | None = None

    def add(self, item: dict[str, Any]) -> None:
        kind = item.get("type")
        index = item.get("output_index", 0)
        if kind in ("response.created", "response.in_progress"):
            self.response = dict(item.get("response") or self.response)
        elif kind in TERMINAL:
            self.final = dict(item.get("response") or {})
        elif kind in ("response.output_item.added", "response.output_item.done"):
            self.items[index] = _copied(item.get("item") or {})
        elif kind == "response.content_part.added":
            parts = self.items.setdefault(index, {"type": "message"}).setdefault("content", [])
            parts.append(dict(item.get("part") or {}))
        elif kind == "response.reasoning_summary_part.added":
            summary = self.items.setdefault(index, {"type": "reasoning"}).setdefault(
                "summary", [])
            summary.append(dict(item.get("part") or {}))
        elif kind in OUTPUT_DELTAS:
            self._delta(kind, index, item)

    def _delta(self, kind: Any, index: int, event: dict[str, Any]) -> None:
        item = self.items.setdefault(index, {})
        delta = str(event.get("delta") or "")
        if kind == "response.function_call_arguments.delta":
            item["arguments"] = item.get("arguments", "") + delta
        elif kind == "response.custom_tool_call_input.delta":
            item["input"] = item.get("input", "") + delta
        elif kind == "response.reasoning_summary_text.delta":
            part = _at(item.setdefault("summary", []), event.get("summary_index", 0),
                       {"type": "summary_text", "text": ""})
            part["text"] = part.get("text", "") + delta
        else:  # text, a refusal or reasoning text: into its content part
            name = "refusal" if kind == "response.refusal.delta" else "text"
            part = _at(item.setdefault("content", []), event.get("content_index", 0),
                       {"type": PART_TYPES.get(str(kind), "output_text"), name: ""})
            part[name] = part.get(name, "") + delta

    def completion(self) -> dict[str, Any]:
        output = [self.items[i] for i in sorted(self.items)]
        if self.final is not None:
            return self.final if self.final.get("output") else {**self.final, "output": output}
        return {**self.response, "output": output, "status": "incomplete",
                "incomplete_details": CUT}


def _copied(item: dict[str, Any]) -> dict[str, Any]:
    out = dict(item)
    for name in ("content", "summary"):
        if isinstance(out.get(name), list):
            out[name] = [dict(p) if isinstance(p, dict) else p for p in out[name]]
    return out


def _at(parts: list[Any], index: Any, empty: dict[str, Any]) -> dict[str, Any]:
    position = index if isinstance(index, int) and index >= 0 else 0
    while len(parts) <= position:
        parts.append(dict(empty))
    part: dict[str, Any] = parts[position]
    return part


class ResponseEnding:
    """Each open item is ended as OpenAI ends it (its parts done, then the item, incomplete);
    the stream's last event, the incomplete response with its charged usage, follows the
    charge (usage_items)."""

    def __init__(self) -> None:
        self.seen = ResponseAssembler()
        self.open: set[int] = set()
        self.parts: dict[int, set[int]] = {}  # output index -> content parts still open

    def add(self, item: dict[str, Any]) -> None:
        self.seen.add(item)
        kind, index = item.get("type"), item.get("output_index", 0)
        if kind == "response.output_item.added":
            self.open.add(index)
        elif kind == "response.output_item.done":
            self.open.discard(index)
        elif kind == "response.content_part.added":
            self.parts.setdefault(index, set()).add(item.get("content_index", 0))
        elif kind == "response.content_part.done":
            self.parts.get(index, set()).discard(item.get("content_index", 0))

    def cut(self, output_tokens: int) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for index in sorted(self.open):
            item = self.seen.items.get(index, {})
            item_id = item.get("id", "")
            for content_index in sorted(self.parts.get(index, ())):
                part = _at(item.setdefault("content", []), content_index,
                           {"type": "output_text", "text": ""})
                where = {"item_id": item_id, "output_index": index,
                         "content_index": content_index}
                if part.get("type") == "output_text":
                    events.append({"type": "response.output_text.done", **where,
                                   "text": part.get("text", ""), "logprobs": []})
                events.append({"type": "response.content_part.done", **where, "part": part})
            if item.get("type") == "function_call":
                events.append({"type": "response.function_call_arguments.done",
                               "item_id": item_id, "output_index": index,
                               "name": item.get("name"),
                               "arguments": item.get("arguments", "")})
            events.append({"type": "response.output_item.done", "output_index": index,
                           "item": {**item, "status": _ended_status(item)}})
        self.open.clear()
        return events


# Items whose status can say they were cut short; a hosted tool's call cannot, and one cut
# before it finished is failed.
CUT_SHORT = frozenset({"message", "function_call", "custom_tool_call", "reasoning"})


def _ended_status(item: dict[str, Any]) -> Any:
    if item.get("type") in CUT_SHORT:
        return "incomplete"
    return "failed" if item.get("status") in (None, "in_progress", "searching") else item["status"]


def replay(response: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The events OpenAI streams for this response: created, in_progress, each item added,
    its parts and their deltas, done; then the response's own end."""
    begun = {**{k: v for k, v in response.items() if k != "usage"}, "status": "in_progress",
             "output": [], "incomplete_details": None}
    yield {"type": "response.created", "response": begun}
    yield {"type": "response.in_progress", "response": begun}
    for index, item in enumerate(response.get("output") or ()):
        yield from _item_events(index, item)
    status = response.get("status")
    ended = "response.incomplete" if status == "incomplete" else "response.completed"
    yield {"type": ended, "response": response}


def _item_events(index: int, item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    kind, item_id = item.get("type"), item.get("id", "")
    where = {"item_id": item_id, "output_index": index}
    if kind == "message":
        yield {"type": "response.output_item.added", "output_index": index,
               "item": {**item, "status": "in_progress", "content": []}}
        for content_index, part in enumerate(item.get("content") or ()):
            at = {**where, "content_index": content_index}
            text_kind = part.get("type")
            yield {"type": "response.content_part.added", **at,
                   "part": {**part, "text": ""} if text_kind == "output_text"
                   else {**part, "refusal": ""}}
            if text_kind == "output_text":
                yield {"type": "response.output_text.delta", **at,
                       "delta": part.get("text", ""), "logprobs": []}
                yield {"type": "response.output_text.done", **at,
                       "text": part.get("text", ""), "logprobs": []}
            elif text_kind == "refusal":
                yield {"type": "response.refusal.delta", **at, "delta": part.get("refusal", "")}
                yield {"type": "response.refusal.done", **at, "refusal": part.get("refusal", "")}
            yield {"type": "response.content_part.done", **at, "part": part}
    elif kind == "function_call":
        yield {"type": "response.output_item.added", "output_index": index,
               "item": {**item, "arguments": "", "status": "in_progress"}}
        yield {"type": "response.function_call_arguments.delta", **where,
               "delta": item.get("arguments", "")}
        yield {"type": "response.function_call_arguments.done", **where,
               "name": item.get("name"), "arguments": item.get("arguments", "")}
    elif kind == "reasoning":
        yield {"type": "response.output_item.added", "output_index": index,
               "item": {**item, "summary": []}}
        for summary_index, part in enumerate(item.get("summary") or ()):
            at = {**where, "summary_index": summary_index}
            yield {"type": "response.reasoning_summary_part.added", **at,
                   "part": {**part, "text": ""}}
            yield {"type": "response.reasoning_summary_text.delta", **at,
                   "delta": part.get("text", "")}
            yield {"type": "response.reasoning_summary_text.done", **at,
                   "text": part.get("text", "")}
            yield {"type": "response.reasoning_summary_part.done", **at, "part": part}
    else:  # hosted tools' calls, custom tool calls: whole, as added
        yield {"type": "response.output_item.added", "output_index": index, "item": item}
    yield {"type": "response.output_item.done", "output_index": index, "item": item}


RESPONSES = Responses()
