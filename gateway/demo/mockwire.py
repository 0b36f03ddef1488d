"""Answers and errors in each provider's own wire format, for the mock provider.

Every body here mirrors what the real API sends; tests parse them with the
official `openai` and `anthropic` SDKs to keep them honest.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

OPENAI_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
                      403: "invalid_request_error", 404: "invalid_request_error",
                      429: "requests", 500: "server_error", 503: "server_error"}
ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                         403: "permission_error", 404: "not_found_error",
                         413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                         504: "timeout_error", 529: "overloaded_error"}
OPENAI_TO_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


@dataclass(frozen=True)
class Answer:
    """What the mock says, independent of wire format."""

    model: str
    text: str
    tool_calls: tuple[tuple[str, dict[str, Any]], ...]  # (name, arguments), in order
    input_tokens: int
    cached_input_tokens: int
    finish_reason: str  # OpenAI's vocabulary: stop, length, tool_calls
    asked: str = ""  # the last user message: which request this answers
    cache_write_tokens: int = 0  # parts of input_tokens (Anthropic): written for 5 minutes
    cache_write_1h_tokens: int = 0  # and for an hour
    usage_sent: dict[str, Any] | None = None  # a broken usage sent instead of the true one
    choices: int = 1  # OpenAI's `n`: every choice says the same
    top_logprobs: int | None = None  # logprobs asked for, with this many alternatives
    stop_sequence: str | None = None  # the stop sequence the text was cut before
    thinking: str | None = None  # Anthropic's thinking, when the body turned it on
    thinking_shown: bool = True  # False: `display: omitted`, the block empty but signed

    @property
    def tool_call(self) -> tuple[str, dict[str, Any]] | None:
        return self.tool_calls[0] if self.tool_calls else None

    @property
    def pieces(self) -> list[str]:
        """The text as stream deltas; joined, they are exactly the text."""
        return pieces(self.text)

    @property
    def thinking_pieces(self) -> list[str]:
        return pieces(self.thinking) if self.thinking and self.thinking_shown else []

    @property
    def thinking_tokens(self) -> int:
        """Billed as output whether or not the thinking is shown, as Anthropic bills it."""
        return len(pieces(self.thinking or ""))

    @property
    def signature(self) -> str:
        """The thinking's signature: opaque base64, the same for the same thinking."""
        digest = hashlib.sha256(f"{self.model}\n{self.thinking}".encode()).digest()
        return base64.b64encode(b"mock-signature:" + digest).decode()

    @property
    def output_tokens(self) -> int:
        """For all the choices together, as OpenAI's usage counts them (thinking included)."""
        if self.tool_calls:
            each = sum(max(1, len(orjson.dumps(args)) // 4) for _, args in self.tool_calls)
        else:
            each = len(self.pieces)
        return each * self.choices + self.thinking_tokens

    def arguments(self, call: int) -> str:
        return orjson.dumps(self.tool_calls[call][1]).decode()

    @property
    def tool_arguments(self) -> str:
        return self.arguments(0) if self.tool_calls else ""


def pieces(text: str) -> list[str]:
    """A text as stream deltas, about a word each; joined, they are exactly the text."""
    return re.findall(r"\s*\S+(?:\s+$)?", text) or ([text] if text else [])


def sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    payload = data if isinstance(data, bytes) else orjson.dumps(data)
    return head + b"data: " + payload + b"\n\n"


# --- OpenAI (and Groq, and Ollama's /v1) -----------------------------------------------

def openai_error(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": OPENAI_ERROR_TYPES.get(status, "api_error"),
                      "param": None, "code": code}}


def openai_usage(a: Answer) -> dict[str, Any]:
    if a.usage_sent is not None:
        return a.usage_sent
    usage: dict[str, Any] = {"prompt_tokens": a.input_tokens, "completion_tokens": a.output_tokens,
                             "total_tokens": a.input_tokens + a.output_tokens}
    if a.cached_input_tokens:
        usage["prompt_tokens_details"] = {"cached_tokens": a.cached_input_tokens}
    return usage


def call_id(call: int, prefix: str = "call_mock") -> str:
    return f"{prefix}{call + 1:04d}"


def openai_logprob(piece: str, alternatives: int) -> dict[str, Any]:
    """A token's logprobs: itself the likeliest, then made-up, less likely alternatives."""
    tops = [piece, *(f"{piece}{'s' * i}" for i in range(1, alternatives))][:alternatives]
    return {"token": piece, "logprob": -0.0125, "bytes": list(piece.encode()),
            "top_logprobs": [{"token": t, "logprob": -0.0125 - 2.5 * i, "bytes": list(t.encode())}
                             for i, t in enumerate(tops)]}


def openai_logprobs(a: Answer, pieces: list[str]) -> dict[str, Any] | None:
    if a.top_logprobs is None:
        return None
    return {"content": [openai_logprob(p, a.top_logprobs) for p in pieces], "refusal": None}


def openai_completion(a: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": a.text or None, "refusal": None}
    if a.tool_calls:
        message["tool_calls"] = [{"id": call_id(i), "type": "function", "function": {
            "name": name, "arguments": a.arguments(i)}} for i, (name, _) in enumerate(a.tool_calls)]
    choices = [{"index": index, "message": message,
                "logprobs": openai_logprobs(a, a.pieces), "finish_reason": a.finish_reason}
               for index in range(a.choices)]
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(time.time()), "model": a.model, "system_fingerprint": None,
            "choices": choices, "usage": openai_usage(a)}


def openai_chunks(a: Answer, include_usage: bool) -> list[dict[str, Any]]:
    """Each choice whole, one after the other (OpenAI interleaves them; clients must cope
    with either, since they join deltas by `index`)."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": a.model, "system_fingerprint": None}
    extra = {"usage": None} if include_usage else {}
    out = []
    for index in range(a.choices):
        def chunk(delta: dict[str, Any], finish: str | None = None,
                  logprobs: dict[str, Any] | None = None, index: int = index) -> dict[str, Any]:
            return {**base, "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                                         "finish_reason": finish}], **extra}

        out.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        out += [chunk({"content": piece}, logprobs=openai_logprobs(a, [piece]))
                for piece in a.pieces]
        for call, (name, _) in enumerate(a.tool_calls):
            out.append(chunk({"tool_calls": [{"index": call, "id": call_id(call),
                                              "type": "function",
                                              "function": {"name": name, "arguments": ""}}]}))
            args = a.arguments(call)
            out += [chunk({"tool_calls": [{"index": call,
                                           "function": {"arguments": args[i:i + 8]}}]})
                    for i in range(0, len(args), 8)]
        out.append(chunk({}, a.finish_reason))
    if include_usage:
        out.append({**base, "choices": [], "usage": openai_usage(a)})
    return out


def openai_embeddings(model: str, count: int, tokens: int) -> dict[str, Any]:
    data = [{"object": "embedding", "index": i, "embedding": [0.1 * (i + 1), 0.2, 0.3, 0.4]}
            for i in range(count)]
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


# --- Anthropic Messages ---------------------------------------------------------------

def anthropic_error(status: int, message: str) -> dict[str, Any]:
    return {"type": "error",
            "error": {"type": ANTHROPIC_ERROR_TYPES.get(status, "api_error"), "message": message}}


def anthropic_usage(a: Answer, output_tokens: int) -> dict[str, Any]:
    if a.usage_sent is not None:
        return a.usage_sent
    written = a.cache_write_tokens + a.cache_write_1h_tokens
    return {"input_tokens": a.input_tokens - a.cached_input_tokens - written,
            "output_tokens": output_tokens, "cache_creation_input_tokens": written,
            "cache_read_input_tokens": a.cached_input_tokens,
            "cache_creation": {"ephemeral_5m_input_tokens": a.cache_write_tokens,
                               "ephemeral_1h_input_tokens": a.cache_write_1h_tokens}}


def anthropic_blocks(a: Answer) -> list[dict[str, Any]]:
    """The answer's content: thinking first (when on), then its text, then its tool calls."""
    blocks: list[dict[str, Any]] = []
    if a.thinking is not None:
        blocks.append({"type": "thinking", "thinking": "".join(a.thinking_pieces),
                       "signature": a.signature})
    if a.text:
        blocks.append({"type": "text", "text": a.text})
    blocks += [{"type": "tool_use", "id": call_id(i, "toolu_mock"), "name": name, "input": args}
               for i, (name, args) in enumerate(a.tool_calls)]
    return blocks


def anthropic_stop(a: Answer) -> tuple[str, str | None]:
    """stop_reason and stop_sequence."""
    if a.stop_sequence is not None:
        return "stop_sequence", a.stop_sequence
    return OPENAI_TO_ANTHROPIC_STOP[a.finish_reason], None


def anthropic_message(a: Answer) -> dict[str, Any]:
    return {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
            "model": a.model, "content": anthropic_blocks(a),
            "stop_reason": anthropic_stop(a)[0], "stop_sequence": anthropic_stop(a)[1],
            "usage": anthropic_usage(a, a.output_tokens)}


def anthropic_events(a: Answer) -> list[tuple[str, dict[str, Any]]]:
    """The stream of the message: each block opened empty, filled by deltas, closed."""
    start = {**anthropic_message(a), "content": [], "stop_reason": None,
             "usage": anthropic_usage(a, 1)}
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start",
                                                                    "message": start})]
    for index, block in enumerate(anthropic_blocks(a)):
        events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": _anthropic_opened(block)}))
        if index == 0:
            events.append(("ping", {"type": "ping"}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": index,
                                            "delta": delta})
                   for delta in _anthropic_deltas(a, block)]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": anthropic_stop(a)[0],
                                               "stop_sequence": anthropic_stop(a)[1]},
                                     "usage": ({"output_tokens": a.output_tokens}
                                               if a.usage_sent is None else a.usage_sent)}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _anthropic_opened(block: dict[str, Any]) -> dict[str, Any]:
    """A block as content_block_start opens it: what its deltas fill in, empty."""
    if block["type"] == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    if block["type"] == "text":
        return {"type": "text", "text": ""}
    return {**block, "input": {}}


def _anthropic_deltas(a: Answer, block: dict[str, Any]) -> list[dict[str, Any]]:
    if block["type"] == "thinking":
        return [*({"type": "thinking_delta", "thinking": piece} for piece in a.thinking_pieces),
                {"type": "signature_delta", "signature": block["signature"]}]
    if block["type"] == "text":
        return [{"type": "text_delta", "text": piece} for piece in a.pieces]
    args = orjson.dumps(block["input"]).decode()
    return [{"type": "input_json_delta", "partial_json": args[i:i + 8]}
            for i in range(0, len(args), 8)]


# --- Ollama native /api/chat (NDJSON) -----------------------------------------------------

def ollama_final(a: Answer, content: str) -> dict[str, Any]:
    return {"model": a.model, "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": content}, "done": True,
            "done_reason": "length" if a.finish_reason == "length" else "stop",
            "total_duration": 1000, "load_duration": 10, "prompt_eval_count": a.input_tokens,
            "prompt_eval_duration": 100, "eval_count": a.output_tokens, "eval_duration": 500}


def ollama_lines(a: Answer) -> list[dict[str, Any]]:
    lines = [{"model": a.model, "created_at": "2026-01-01T00:00:00Z",
              "message": {"role": "assistant", "content": piece}, "done": False}
             for piece in a.pieces]
    return [*lines, ollama_final(a, "")]


# --- OpenAI Responses API (/v1/responses) ------------------------------------------------

def responses_usage(a: Answer) -> dict[str, Any]:
    """input_tokens counts the cached ones too; output_tokens counts the reasoning too."""
    if a.usage_sent is not None:
        return a.usage_sent
    return {"input_tokens": a.input_tokens,
            "input_tokens_details": {"cached_tokens": a.cached_input_tokens,
                                     "cache_write_tokens": a.cache_write_tokens},
            "output_tokens": a.output_tokens,
            "output_tokens_details": {"reasoning_tokens": a.thinking_tokens},
            "total_tokens": a.input_tokens + a.output_tokens}


def _item_id(prefix: str, response_id: str, index: int) -> str:
    """Made from the response's id: the stream's events and its final response agree."""
    return f"{prefix}_{response_id.removeprefix('resp_')[:24]}{index:04d}"


def responses_output(a: Answer, response_id: str, encrypted: bool) -> list[dict[str, Any]]:
    """The output items, done: reasoning (when on), then the message, then each call."""
    items: list[dict[str, Any]] = []
    if a.thinking is not None:
        summary = ([{"type": "summary_text", "text": a.thinking}]
                   if a.thinking_shown else [])
        reasoning: dict[str, Any] = {"id": _item_id("rs", response_id, 0),
                                     "type": "reasoning", "summary": summary}
        if encrypted:
            reasoning["encrypted_content"] = a.signature
        items.append(reasoning)
    if a.text or not a.tool_calls:
        status = "incomplete" if a.finish_reason == "length" else "completed"
        items.append({"id": _item_id("msg", response_id, 0), "type": "message",
                      "role": "assistant", "status": status,
                      "content": [{"type": "output_text", "text": a.text,
                                   "annotations": [], "logprobs": []}]})
    items += [{"id": _item_id("fc", response_id, i + 1), "type": "function_call",
               "status": "completed", "call_id": call_id(i), "name": name,
               "arguments": a.arguments(i)}
              for i, (name, _) in enumerate(a.tool_calls)]
    return items


def responses_object(a: Answer, echo: dict[str, Any], response_id: str, created_at: int,
                     encrypted: bool = False, done: bool = True) -> dict[str, Any]:
    """The `response` object; done=False: as response.created shows it, in progress."""
    cut = a.finish_reason == "length"
    status = "incomplete" if cut else "completed"
    return {"id": response_id, "object": "response", "created_at": created_at,
            "status": status if done else "in_progress", "background": False, "error": None,
            "incomplete_details": ({"reason": "max_output_tokens"} if cut and done else None),
            **echo, "model": a.model,
            "output": responses_output(a, response_id, encrypted) if done else [],
            # usage only once done (OpenAI's spec has no null for it; the SDK's is optional)
            **({"usage": responses_usage(a)} if done else {}),
            **({"completed_at": created_at} if done and not cut else {})}


def responses_events(a: Answer, echo: dict[str, Any], encrypted: bool = False
                     ) -> list[tuple[str, dict[str, Any]]]:
    """The stream: each output item added empty, filled by deltas, done; then the whole
    response, in response.completed (response.incomplete when cut by max_output_tokens,
    as OpenAI sends it; the SDK's get_final_response() wants a completed one). Every event
    has its `type` and a `sequence_number` counting from 0."""
    response_id = f"resp_{uuid.uuid4().hex}"
    created_at = int(time.time())
    opened = responses_object(a, echo, response_id, created_at, encrypted, done=False)
    events: list[dict[str, Any]] = [{"type": "response.created", "response": opened},
                                    {"type": "response.in_progress", "response": opened}]
    for index, item in enumerate(responses_output(a, response_id, encrypted)):
        events += _responses_item_events(a, index, item)
    final = responses_object(a, echo, response_id, created_at, encrypted)
    last = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    events.append({"type": last, "response": final})
    return [(e["type"], {**e, "sequence_number": n}) for n, e in enumerate(events)]


def _responses_item_events(a: Answer, index: int, item: dict[str, Any]
                           ) -> list[dict[str, Any]]:
    at = {"item_id": item["id"], "output_index": index}
    added = {"type": "response.output_item.added", "output_index": index}
    done = {"type": "response.output_item.done", "output_index": index, "item": item}
    if item["type"] == "reasoning":
        events = [{**added, "item": {**item, "summary": []}}]
        for summary_index, part in enumerate(item["summary"]):
            where = {**at, "summary_index": summary_index}
            events += [{"type": "response.reasoning_summary_part.added", **where,
                        "part": {"type": "summary_text", "text": ""}},
                       *({"type": "response.reasoning_summary_text.delta", **where,
                          "delta": piece} for piece in a.thinking_pieces),
                       {"type": "response.reasoning_summary_text.done", **where,
                        "text": part["text"]},
                       {"type": "response.reasoning_summary_part.done", **where,
                        "part": part}]
        return [*events, done]
    if item["type"] == "message":
        part = item["content"][0]
        where = {**at, "content_index": 0}
        return [{**added, "item": {**item, "status": "in_progress", "content": []}},
                {"type": "response.content_part.added", **where,
                 "part": {**part, "text": ""}},
                *({"type": "response.output_text.delta", **where, "delta": piece,
                   "logprobs": []} for piece in a.pieces),
                {"type": "response.output_text.done", **where, "text": part["text"],
                 "logprobs": []},
                {"type": "response.content_part.done", **where, "part": part}, done]
    args = item["arguments"]
    return [{**added, "item": {**item, "status": "in_progress", "arguments": ""}},
            *({"type": "response.function_call_arguments.delta", **at,
               "delta": args[i:i + 8]} for i in range(0, len(args), 8)),
            {"type": "response.function_call_arguments.done", **at, "name": item["name"],
             "arguments": args}, done]
