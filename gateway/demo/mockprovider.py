"""A loopback provider speaking OpenAI, Anthropic and Ollama wire formats, scripted per model.

Used by the tests, `gateway demo` and the benchmark. Routes by path, as the
real services do: `.../chat/completions`, `.../embeddings` and `.../responses`
(OpenAI, Groq, Ollama's /v1; the Responses API streamed or not, with reasoning items when
`reasoning` is set; each response not sent with store: false is kept, as OpenAI keeps
it, and previous_response_id continues it),
`/v1/messages` and `/v1/messages/count_tokens` (Anthropic),
`/api/chat` (Ollama native). Any other path answers 404 naming the path, so URL
mistakes are obvious.

    mock = MockProvider()
    base = mock.start_in_thread()                  # http://127.0.0.1:PORT
    mock.script("gpt-x", Step(status=529), Step())  # next two calls to gpt-x
    mock.calls("gpt-x")                            # what it received

Unscripted, it calls every tool offered. A user message holding
`mock:tool NAME {"arg": ...}` makes it call that one tool with those arguments
instead (any client, e.g. `claude -p`, can ask for it in its prompt; the JSON is
optional), and `mock:tool none` makes it answer in words; once a tool's result
comes back it answers in words quoting the result.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import re
import struct
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from gateway.demo import mockwire
from gateway.demo.fitting import fitting
from gateway.demo.mockwire import Answer

# The body fields the Messages API takes: the `anthropic` SDK's MessageCreateParams, its
# beta one's (Claude Code sends `context_management`), `stream`, and the sampling fields the
# API still documents though the SDK no longer types them. Anything else is refused.
ANTHROPIC_FIELDS = frozenset({
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
    "temperature", "top_k", "top_p", "tools", "tool_choice", "thinking", "service_tier",
    "cache_control", "container", "diagnostics", "inference_geo", "output_config", "speed",
    "billing_policy", "compaction", "context_management", "fallback_credit_token", "fallbacks",
    "mcp_servers", "thread", "output_format",
})
# /v1/messages/count_tokens takes the prompt's fields only (its MessageCountTokensParams).
ANTHROPIC_COUNT_FIELDS = frozenset({
    "model", "messages", "system", "tools", "tool_choice", "thinking", "cache_control",
    "output_config", "speed", "billing_policy", "compaction", "context_management",
    "mcp_servers", "output_format",
})
# OpenAI's models that refuse `max_tokens` (they take `max_completion_tokens`).
REASONING_MODELS = ("o1", "o3", "o4", "gpt-5")
# The content blocks a request may carry (the SDK's ContentBlockParam, beta ones included).
ANTHROPIC_BLOCKS = frozenset({
    "text", "image", "document", "search_result", "thinking", "redacted_thinking", "tool_use",
    "tool_result", "server_tool_use", "web_search_tool_result", "web_fetch_tool_result",
    "code_execution_tool_result", "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result", "tool_search_tool_result", "container_upload",
    "advisor_tool_result", "compaction", "fallback", "mcp_tool_listing", "mcp_tool_result",
    "mcp_tool_use", "tool_addition", "tool_removal",
})
THINKING_ON = ("enabled", "adaptive")
TOOL_MARKER = "mock:tool"
NO_TOOL = "none"  # `mock:tool none`: answer in words, whatever tools are offered
# Claude Code wraps context in these inside the user's message; the mock quotes the question.
REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>\s*", re.DOTALL)
# Output limits Anthropic documents, for ids litellm's map no longer lists: the Messages
# API refuses a max_tokens above them with a 400.
ANTHROPIC_OUTPUT_LIMITS = {"claude-3-haiku-20240307": 4096, "claude-3-opus-20240229": 4096,
                           "claude-3-5-haiku-20241022": 8192,
                           "claude-sonnet-4-20250514": 64000}


@dataclass(frozen=True)
class Step:
    """One scripted answer. The default is a normal, successful answer."""

    status: int = 200
    text: str | None = None           # None: "mock answer from MODEL to: <last user text>"
    tool_call: tuple[str, dict[str, Any]] | None = None
    error_message: str = "mock provider error"
    error_code: str | None = None     # OpenAI's `code`, e.g. context_length_exceeded
    retry_after: str | None = None    # Retry-After header on an error
    delay_s: float = 0                # before the answer starts
    chunk_delay_s: float = 0          # between stream chunks
    hang: bool = False                # never answer
    drop_after: int | None = None     # stream: cut the connection after N events
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0       # Anthropic prompt-cache writes kept 5 minutes
    cache_write_1h_tokens: int = 0    # and kept an hour
    usage: dict[str, Any] | None = None  # sent as the usage instead of the true one
    ignore_limit: bool = False        # write the whole answer whatever max_tokens says
    set_cookie: str | None = None     # a Set-Cookie header on a plain OpenAI answer
    # Broken upstreams (OpenAI and Anthropic routes):
    raw: bytes | None = None          # sent with status 200 instead of the answer, plain or SSE
    omit_done: bool = False           # an OpenAI stream that ends without `data: [DONE]`
    drip_s: float = 0                 # the body sent one byte at a time, this far apart


@dataclass(frozen=True)
class Received:
    path: str
    headers: CIMultiDict[str]  # as received; read them in any case, e.g. "anthropic-beta"
    body: Any
    method: str = "POST"
    query: str = ""  # e.g. "beta=true", as the Anthropic SDK's beta calls send it


@dataclass
class MockProvider:
    scripts: dict[str, deque[Step]] = field(default_factory=lambda: defaultdict(deque))
    received: list[Received] = field(default_factory=list)
    always: dict[str, Step] = field(default_factory=dict)  # when a model's script is empty
    answers: list[Answer] = field(default_factory=list)  # what it sent, in order
    # The Responses API's stored conversations: response id -> its input and output items.
    conversations: dict[str, list[Any]] = field(default_factory=dict)
    # Off for long runs (the benchmark): an ever longer history makes every garbage
    # collection slower, and the mock's own pauses would show as the gateway's latency.
    keep_history: bool = True
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    # --- scripting and inspection (safe from any thread) ---
    def script(self, model: str, *steps: Step) -> None:
        with self._lock:
            self.scripts[model].extend(steps)

    def calls(self, model: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received
                    if model is None or (isinstance(r.body, dict) and r.body.get("model") == model)]

    def reset(self) -> None:
        with self._lock:
            self.scripts.clear()
            self.received.clear()
            self.answers.clear()
            self.always.clear()

    def last_answer(self) -> Answer:
        with self._lock:
            return self.answers[-1]

    def _sent(self, answer: Answer) -> Answer:
        if self.keep_history:
            with self._lock:
                self.answers.append(answer)
        return answer

    def _next(self, model: str) -> Step:
        with self._lock:
            queue = self.scripts.get(model)
            return queue.popleft() if queue else self.always.get(model, Step())

    # --- serving ---
    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        return app

    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
        runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start_in_thread(self, port: int = 0) -> str:
        """Serve on a loopback port from a daemon thread; returns the base URL."""
        ready: list[int] = []
        started = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            _, bound = self._loop.run_until_complete(self.serve(port=port))
            ready.append(bound)
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="mock-provider", daemon=True)
        self._thread.start()
        started.wait(10)
        return f"http://127.0.0.1:{ready[0]}"

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        try:
            body = await request.json() if request.can_read_body else None
        except ValueError:
            return web.json_response(mockwire.openai_error(400, "body is not valid JSON"),
                                     status=400)
        if self.keep_history:
            with self._lock:
                self.received.append(Received(path, CIMultiDict(request.headers), body,
                                              request.method, request.query_string))
        if request.method == "POST" and isinstance(body, dict):
            if path.endswith("/chat/completions"):
                return await self._openai_chat(request, body)
            if path.endswith("/embeddings"):
                return await self._openai_embeddings(body)
            if path.endswith("/responses"):
                return await self._openai_responses(request, body)
            if path == "/v1/messages":
                return await self._anthropic(request, body)
            if path == "/v1/messages/count_tokens":
                return self._anthropic_count(request, body)
            if path == "/api/chat":
                return await self._ollama(request, body)
        message = f"mock provider: no route for {request.method} {path}"
        return web.json_response(mockwire.openai_error(404, message), status=404)

    async def _before(self, step: Step) -> None:
        if step.hang:
            await asyncio.sleep(3600)
        if step.delay_s:
            await asyncio.sleep(step.delay_s)

    def _error(self, step: Step, body: dict[str, Any]) -> web.Response:
        headers = {"retry-after": step.retry_after} if step.retry_after else {}
        return web.json_response(body, status=step.status, headers=headers)

    async def _openai_chat(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        problem = _openai_problem(body)
        if problem is None and "max_tokens" in body and str(body.get("model")).startswith(
                REASONING_MODELS):
            return web.json_response(mockwire.openai_error(
                400, "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.", "unsupported_parameter"), status=400)
        if problem:
            return web.json_response(mockwire.openai_error(400, problem), status=400)
        messages = body["messages"]
        step = self._next(str(body.get("model")))
        await self._before(step)
        if step.status != 200:
            error = mockwire.openai_error(step.status, step.error_message, step.error_code)
            return self._error(step, error)
        if step.raw is not None:
            return await _raw(request, step, body)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        answer = self._sent(_answer(step, body, messages, limit))
        if not body.get("stream"):
            reply = mockwire.openai_completion(answer)
            if step.drip_s:
                return await _stream(request, step, [orjson.dumps(reply)], "application/json")
            cookie = {"set-cookie": step.set_cookie} if step.set_cookie else None
            return web.json_response(reply, headers=cookie)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = [mockwire.sse(c) for c in mockwire.openai_chunks(answer, include_usage)]
        done = [] if step.omit_done else [b"data: [DONE]\n\n"]
        return await _stream(request, step, [*events, *done], "text/event-stream")

    async def _openai_responses(self, request: web.Request,
                                body: dict[str, Any]) -> web.StreamResponse:
        """OpenAI's Responses API: the same Step scripts it, read through a chat-shaped view
        of the body (instructions and input as messages, function tools, text.format)."""
        problem = _responses_problem(body)
        previous = body.get("previous_response_id")
        if not problem and previous is not None:
            if previous not in self.conversations:
                problem = (f"Previous response with id '{previous}' not found.",
                           "previous_response_not_found")
            else:
                body = {**body, "input": [*self.conversations[previous],
                                          *_response_items(body.get("input"))]}
        if problem:
            return web.json_response(mockwire.openai_error(400, *problem), status=400)
        step = self._next(str(body.get("model")))
        await self._before(step)
        if step.status != 200:
            error = mockwire.openai_error(step.status, step.error_message, step.error_code)
            return self._error(step, error)
        if step.raw is not None:
            return await _raw(request, step, body)
        chat = _responses_as_chat(body)
        limit = body.get("max_output_tokens")
        answer = _answer(step, chat, chat["messages"], limit)
        answer = self._sent(_with_reasoning(answer, body, limit, step.ignore_limit))
        echo = _responses_echo(body)
        encrypted = "reasoning.encrypted_content" in (body.get("include") or [])
        if not body.get("stream"):
            reply = mockwire.responses_object(answer, echo, f"resp_{uuid.uuid4().hex}",
                                              int(time.time()), encrypted)
            self._keep(body, reply)
            if step.drip_s:
                return await _stream(request, step, [orjson.dumps(reply)], "application/json")
            return web.json_response(reply)
        made = mockwire.responses_events(answer, echo, encrypted)
        self._keep(body, made[-1][1]["response"])
        events = [mockwire.sse(data, event) for event, data in made]
        return await _stream(request, step, events, "text/event-stream")

    def _keep(self, body: dict[str, Any], response: dict[str, Any]) -> None:
        if body.get("store") is not False and self.keep_history:
            self.conversations[response["id"]] = [*_response_items(body.get("input")),
                                                  *response["output"]]

    async def _openai_embeddings(self, body: dict[str, Any]) -> web.Response:
        step = self._next(str(body.get("model")))
        await self._before(step)
        if step.status != 200:
            error = mockwire.openai_error(step.status, step.error_message, step.error_code)
            return self._error(step, error)
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) and inputs and not isinstance(
            inputs[0], int) else [inputs]
        tokens = sum(len(str(i).split()) for i in items)
        reply = mockwire.openai_embeddings(str(body.get("model")), len(items), tokens)
        if body.get("encoding_format") == "base64":
            for item in reply["data"]:
                raw = struct.pack(f"<{len(item['embedding'])}f", *item["embedding"])
                item["embedding"] = base64.b64encode(raw).decode()
        return web.json_response(reply)

    async def _anthropic(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        refused = _anthropic_refusal(request, body, ANTHROPIC_FIELDS)
        if refused is not None:
            return refused
        step = self._next(str(body.get("model")))
        await self._before(step)
        if step.status != 200:
            return self._error(step, mockwire.anthropic_error(step.status, step.error_message))
        if step.raw is not None:
            return await _raw(request, step, body)
        answer = _answer(step, body, _anthropic_messages(body), body["max_tokens"])
        answer = self._sent(_with_thinking(answer, body))
        if not body.get("stream"):
            return web.json_response(mockwire.anthropic_message(answer))
        events = [mockwire.sse(data, event) for event, data in mockwire.anthropic_events(answer)]
        return await _stream(request, step, events, "text/event-stream")

    def _anthropic_count(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        """The count the same body would be charged on /v1/messages: one counting function."""
        refused = _anthropic_refusal(request, body, ANTHROPIC_COUNT_FIELDS)
        if refused is not None:
            return refused
        return web.json_response({"input_tokens": _input_tokens(_anthropic_messages(body))})

    async def _ollama(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        step = self._next(str(body.get("model")))
        await self._before(step)
        if step.status != 200:
            return web.json_response({"error": step.error_message}, status=step.status)
        limit = (body.get("options") or {}).get("num_predict")
        answer = self._sent(_answer(step, body, body.get("messages") or [], limit))
        if body.get("stream") is False:
            return web.json_response(mockwire.ollama_final(answer, answer.text))
        lines = [orjson.dumps(line) + b"\n" for line in mockwire.ollama_lines(answer)]
        return await _stream(request, step, lines, "application/x-ndjson")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_text_of(part.get("text") or part.get("content") or "")
                        for part in content if isinstance(part, dict))
    return ""


def _anthropic_messages(body: dict[str, Any]) -> list[Any]:
    """The system prompt as a first message, so it is counted as OpenAI's is."""
    return [{"role": "system", "content": body.get("system") or ""}, *body["messages"]]


def _input_tokens(messages: list[Any]) -> int:
    texts = [_text_of(m.get("content")) for m in messages if isinstance(m, dict)]
    return sum(len(t.split()) for t in texts) + 3 * len(messages)


def _answer(step: Step, body: dict[str, Any], messages: list[Any], limit: Any) -> Answer:
    model = str(body.get("model"))
    user_texts = [_text_of(m.get("content")) for m in messages
                  if isinstance(m, dict) and m.get("role") == "user"]
    asked = REMINDER.sub("", (user_texts or [""])[-1])
    marked = None if _answers_a_tool(messages) else _marked_call(messages)
    if step.tool_call:
        tool_calls: tuple[tuple[str, dict[str, Any]], ...] = (step.tool_call,)
    elif marked:
        tool_calls = _marked_calls(body, model, *marked)
    else:
        tool_calls = _tool_calls(body, model, messages)
    text = step.text
    if text is None:
        text = "" if tool_calls else _default_text(body, model, asked, messages, marked)
    text, stopped = _cut_at_stop(text, body.get("stop", body.get("stop_sequences")))
    n = body.get("n")
    logprobs = (body.get("top_logprobs") or 0) if body.get("logprobs") else None
    answer = Answer(model, text, tool_calls, _input_tokens(messages), step.cached_input_tokens,
                    "tool_calls" if tool_calls else "stop", asked, step.cache_write_tokens,
                    step.cache_write_1h_tokens, step.usage,
                    choices=n if isinstance(n, int) and n > 1 else 1,
                    top_logprobs=logprobs if isinstance(logprobs, int) else None,
                    stop_sequence=stopped)
    each = answer.output_tokens // answer.choices
    if isinstance(limit, int) and not tool_calls and limit < each and not step.ignore_limit:
        answer = dataclasses.replace(answer, text="".join(answer.pieces[:limit]),
                                     finish_reason="length", stop_sequence=None)
    return answer


def _with_thinking(answer: Answer, body: dict[str, Any]) -> Answer:
    """With `thinking` on, Claude's answer opens with a signed thinking block, billed as
    output within max_tokens; the text gets what is left."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") not in THINKING_ON:
        return answer
    return _thought(answer, thinking.get("display") != "omitted", body["max_tokens"])


def _with_reasoning(answer: Answer, body: dict[str, Any], limit: Any,
                    ignore_limit: bool) -> Answer:
    """With `reasoning` set (an effort other than none), the Responses answer opens
    with a reasoning item, its summary shown when one is asked for, billed as output
    (reasoning_tokens) within max_output_tokens."""
    reasoning = body.get("reasoning")
    if not isinstance(reasoning, dict) or reasoning.get("effort") == "none":
        return answer
    shown = reasoning.get("summary") in ("auto", "concise", "detailed")
    room = limit if isinstance(limit, int) and not ignore_limit else None
    return _thought(answer, shown, room)


def _thought(answer: Answer, shown: bool, limit: int | None) -> Answer:
    """The answer with its thinking first; the text gets what is left of the limit."""
    thought = dataclasses.replace(
        answer, thinking=f"The mock thinks about: {answer.asked[:60]}", thinking_shown=shown)
    if limit is None:
        return thought
    room = limit - thought.thinking_tokens
    if answer.tool_calls or len(answer.pieces) <= room or not answer.pieces:
        return thought
    return dataclasses.replace(thought, text="".join(answer.pieces[:max(room, 0)]),
                               finish_reason="length", stop_sequence=None)


def _default_text(body: dict[str, Any], model: str, asked: str, messages: list[Any],
                  marked: tuple[str, dict[str, Any] | None] | None) -> str:
    """What the mock says when no Step scripts it: JSON when a JSON answer is asked for; the
    tool's result once a tool has answered; else which request it answers."""
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    text = f"mock answer from {model} to: {asked[:60]}"
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")  # type: ignore[union-attr]
        return json.dumps(fitting(schema or {"type": "object"}, model))
    if (schema := _anthropic_schema(body)) is not None:
        return json.dumps(fitting(schema, model))
    if kind == "json_object":
        return json.dumps({"answer": text})
    if marked and marked[0] != NO_TOOL:
        offered = ", ".join(_tool_name(t) for t in _offered(body)) or "none"
        return f"mock answer from {model}: no tool {marked[0]} is offered (offered: {offered})"
    if _answers_a_tool(messages):
        results = " | ".join(r[:200] for r in _tool_results(_last_turn(messages)))
        return f"mock answer from {model} after the tool said: {results}"
    return text


def _anthropic_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema an Anthropic body asks the answer's text to fit: `output_config.format`
    (Claude Code's titles ask for one), or the older beta's `output_format`."""
    config = body.get("output_config")
    for wanted in (config.get("format") if isinstance(config, dict) else None,
                   body.get("output_format")):
        if isinstance(wanted, dict) and wanted.get("type") == "json_schema":
            schema = wanted.get("schema")
            return schema if isinstance(schema, dict) else {"type": "object"}
    return None


def _cut_at_stop(text: str, stop: Any) -> tuple[str, str | None]:
    """The text up to the first stop sequence in it, and that sequence (None: not cut)."""
    sequences = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    found = [(text.find(s), s) for s in sequences if isinstance(s, str) and s and s in text]
    if not found:
        return text, None
    at, sequence = min(found)
    return text[:at], sequence


def _tool_calls(body: dict[str, Any], model: str,
                messages: list[Any]) -> tuple[tuple[str, dict[str, Any]], ...]:
    """With tools offered, the mock calls the forced tool, else every tool (the first only
    when parallel calls are off), with arguments that fit each tool's parameters; once the
    last message is a tool's result, it answers in words instead, unless a call is forced."""
    tools = _offered(body)
    choice = body.get("tool_choice")
    kind = choice.get("type") if isinstance(choice, dict) else choice
    if not tools or kind == "none":
        return ()
    forced = None
    if isinstance(choice, dict):
        forced = choice.get("name") or (choice.get("function") or {}).get("name")
    if forced is None and kind in (None, "auto") and _answers_a_tool(messages):
        return ()
    parallel = (body.get("parallel_tool_calls") is not False
                and not (isinstance(choice, dict) and choice.get("disable_parallel_tool_use")))
    chosen = [t for t in tools if _tool_name(t) == forced] if forced else (
        tools if parallel else tools[:1])
    return tuple((_tool_name(t), _arguments(t, model)) for t in chosen or tools[:1])


def _offered(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in body.get("tools") or [] if isinstance(t, dict)]


def _marked_call(messages: list[Any]) -> tuple[str, dict[str, Any] | None] | None:
    """The tool, and the arguments (None: made to fit), that the last user message names
    with `mock:tool NAME {json}`."""
    last = _last_turn(messages)
    text = _text_of(last.get("content")) if last.get("role") == "user" else ""
    found = re.search(re.escape(TOOL_MARKER) + r"\s+([\w.-]+)\s*", text)
    if found is None:
        return None
    try:
        arguments, _ = json.JSONDecoder().raw_decode(text, found.end())
    except ValueError:
        arguments = None
    return found.group(1), arguments if isinstance(arguments, dict) else None


def _marked_calls(body: dict[str, Any], model: str, name: str, arguments: dict[str, Any] | None,
                  ) -> tuple[tuple[str, dict[str, Any]], ...]:
    """The one call a marker asks for, if that tool is offered (a model calls no other)."""
    if name == NO_TOOL:
        return ()
    tool = next((t for t in _offered(body) if _tool_name(t) == name), None)
    if tool is None:
        return ()
    return ((name, arguments if arguments is not None else _arguments(tool, model)),)


def _tool_name(tool: dict[str, Any]) -> str:
    return str(tool.get("name") or (tool.get("function") or {}).get("name"))


def _arguments(tool: dict[str, Any], model: str) -> dict[str, Any]:
    """Arguments that fit the tool's parameters (OpenAI) or input_schema (Anthropic)."""
    schema = tool.get("input_schema") or (tool.get("function") or {}).get("parameters")
    value = fitting(schema or {"type": "object"}, model)
    return value if isinstance(value, dict) else {"answer": f"from {model}"}


def _last_turn(messages: list[Any]) -> dict[str, Any]:
    """The last message that is not a system one (Claude Code appends system messages after
    the user's, with Anthropic's mid-conversation system messages)."""
    turns = [m for m in messages if isinstance(m, dict) and m.get("role") != "system"]
    return turns[-1] if turns else {}


def _answers_a_tool(messages: list[Any]) -> bool:
    """Whether the last turn carries a tool's result (OpenAI's role tool, Anthropic's
    tool_result block)."""
    last = _last_turn(messages)
    content = last.get("content")
    return last.get("role") == "tool" or (isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content))


def _tool_results(message: dict[str, Any]) -> list[str]:
    """The text of each tool result a message carries."""
    content = message.get("content")
    if message.get("role") == "tool":
        return [_text_of(content)]
    return [_text_of(b.get("content")) for b in content or []
            if isinstance(b, dict) and b.get("type") == "tool_result"]


def _response_items(given: Any) -> list[Any]:
    return [{"role": "user", "content": given}] if isinstance(given, str) else list(given or [])


def _responses_as_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A Responses body as the chat body the mock's answer is made from: `instructions` a
    system message, `input` messages (developer ones as system), a function_call an
    assistant turn, a function_call_output a tool message; reasoning items are skipped.
    Function tools, tool_choice and text.format become their chat equivalents."""
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    given = body.get("input")
    for item in [{"role": "user", "content": given}] if isinstance(given, str) else given or []:
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            messages.append({"role": "system" if role == "developer" else role,
                             "content": item.get("content")})
        elif kind == "function_call":
            messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": item.get("call_id"), "type": "function", "function": {
                    "name": item.get("name"), "arguments": item.get("arguments")}}]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": item.get("output")})
    tools = [{"type": "function", "function": {"name": t.get("name"),
                                               "parameters": t.get("parameters")}}
             for t in _offered(body) if t.get("type") == "function"]
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages, "tools": tools,
                            "tool_choice": body.get("tool_choice"),
                            "parallel_tool_calls": body.get("parallel_tool_calls")}
    wanted = (body.get("text") or {}).get("format")
    if isinstance(wanted, dict) and wanted.get("type") == "json_schema":
        chat["response_format"] = {"type": "json_schema",
                                   "json_schema": {"schema": wanted.get("schema")}}
    elif isinstance(wanted, dict) and wanted.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    return chat


def _responses_echo(body: dict[str, Any]) -> dict[str, Any]:
    """The request's settings as the response object repeats them, defaults filled in."""
    tools = [{"type": "function", "name": t.get("name"), "description": t.get("description"),
              "parameters": t.get("parameters"), "strict": t.get("strict", True)}
             if t.get("type") == "function" else t for t in _offered(body)]
    reasoning = body.get("reasoning")
    reasoning = reasoning if isinstance(reasoning, dict) else {}
    text = body.get("text")
    text = text if isinstance(text, dict) else {}
    return {"instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"),
            "metadata": body.get("metadata") or {},
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": body.get("prompt_cache_key"),
            "reasoning": {"effort": reasoning.get("effort"),
                          "summary": reasoning.get("summary")},
            "safety_identifier": body.get("safety_identifier"),
            "service_tier": body.get("service_tier") or "default",
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": text.get("format") or {"type": "text"},
                     "verbosity": text.get("verbosity", "medium")},
            "tool_choice": body.get("tool_choice") or "auto",
            "tools": tools, "top_logprobs": body.get("top_logprobs", 0),
            "top_p": body.get("top_p", 1.0), "truncation": body.get("truncation", "disabled"),
            **({"user": body["user"]} if isinstance(body.get("user"), str) else {})}


RESPONSES_ITEMS = frozenset({"message", "function_call", "function_call_output", "reasoning",
                             "item_reference", "custom_tool_call", "custom_tool_call_output",
                             "local_shell_call", "local_shell_call_output", "web_search_call",
                             "file_search_call", "computer_call", "computer_call_output",
                             "image_generation_call", "code_interpreter_call", "mcp_call",
                             "mcp_list_tools", "mcp_approval_request", "mcp_approval_response",
                             "shell_call", "shell_call_output", "apply_patch_call",
                             "apply_patch_call_output", "compaction"})


def _responses_problem(body: dict[str, Any]) -> tuple[str, str | None] | None:
    """What the real Responses API rejects with a 400 (message, code), where the mock reads
    the body; None: accepted."""
    for chat_only in ("messages", "max_tokens", "max_completion_tokens", "response_format"):
        if chat_only in body:
            return f"Unknown parameter: '{chat_only}'.", "unknown_parameter"
    if not isinstance(body.get("model"), str):
        return "Missing required parameter: 'model'.", "missing_required_parameter"
    given = body.get("input")
    if given is None and isinstance(body.get("previous_response_id"), str):
        given = []
    if not isinstance(given, str | list):
        return "Missing required parameter: 'input'.", "missing_required_parameter"
    for i, item in enumerate(given if isinstance(given, list) else []):
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind not in RESPONSES_ITEMS:
            return f"Invalid value: '{kind}'. 'input[{i}].type' is not supported.", \
                "invalid_value"
        if kind == "message" and item.get("role") not in (
                "user", "assistant", "system", "developer"):
            return f"Invalid value for 'input[{i}].role'.", "invalid_value"
        # An output names its call by call_id, or (a namespace tool's, as Codex sends it
        # after create_goal) by its name.
        named = kind == "function_call_output" and isinstance(item.get("name"), str)
        if kind in ("function_call_output", "function_call") and not named and not isinstance(
                item.get("call_id"), str):
            return f"Missing required parameter: 'input[{i}].call_id'.", \
                "missing_required_parameter"
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        return "Invalid type for 'tools': expected an array.", "invalid_type"
    for i, tool in enumerate(tools or []):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            return f"Missing required parameter: 'tools[{i}].type'.", "missing_required_parameter"
        if tool["type"] == "function" and not isinstance(tool.get("name"), str):
            # A chat-shaped tool ({"type": "function", "function": {...}}) fails here.
            return f"Missing required parameter: 'tools[{i}].name'.", "missing_required_parameter"
    limit = body.get("max_output_tokens")
    if isinstance(limit, int) and limit < 16:
        return ("Invalid 'max_output_tokens': integer below minimum value. Expected a value "
                f">= 16, but got {limit} instead.", "integer_below_min_value")
    return None


def _openai_problem(body: dict[str, Any]) -> str | None:
    """What the real Chat Completions API rejects with a 400, where the mock reads the body."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    if not all(isinstance(m, dict) for m in messages):
        return "Invalid type for 'messages[0]': expected an object"
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return "Invalid type for 'tools': expected an array"
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                return f"Missing required parameter: 'tools[{i}].function.name'"
    return None


def _anthropic_refusal(request: web.Request, body: dict[str, Any],
                       fields: frozenset[str]) -> web.Response | None:
    """The 401 or 400 the real API answers a request it refuses; None: accepted."""
    if not (request.headers.get("x-api-key") or request.headers.get("authorization")):
        return web.json_response(mockwire.anthropic_error(
            401, "x-api-key header is required"), status=401)
    problem = _anthropic_problem(request, body, fields)
    if problem:
        return web.json_response(mockwire.anthropic_error(400, problem), status=400)
    return None


def _anthropic_problem(request: web.Request, body: dict[str, Any],
                       fields: frozenset[str]) -> str | None:
    """What the real Messages API rejects with invalid_request_error."""
    if not request.headers.get("anthropic-version"):
        return "anthropic-version: header is required"
    for name in body:
        if name not in fields:
            return f"{name}: Extra inputs are not permitted"
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if "max_tokens" in fields and not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    model = str(body.get("model"))
    limit = body.get("max_tokens")
    if isinstance(limit, int) and limit > ANTHROPIC_OUTPUT_LIMITS.get(model, limit):
        return (f"max_tokens: {limit} > {ANTHROPIC_OUTPUT_LIMITS[model]}, which is "
                f"the maximum allowed number of output tokens for {model}")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages.{i}: Input should be an object"
        if message.get("role") not in ("user", "assistant", "system"):
            return f"messages.{i}.role: Input should be 'user', 'assistant' or 'system'"
        if message["role"] == "system" and (i == 0 or messages[i - 1].get("role") != "user"):
            return f"messages.{i}: a system message must follow a user message"
        content = message.get("content")
        if isinstance(content, list):
            for j, block in enumerate(content):
                if not isinstance(block, dict) or block.get("type") not in ANTHROPIC_BLOCKS:
                    return f"messages.{i}.content.{j}.type: unknown block type"
        elif not isinstance(content, str):
            return f"messages.{i}.content: Input should be a string or a list of blocks"
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        return "system: Input should be a string or a list of text blocks"
    return _unthought_tool_turn(body, messages)


def _unthought_tool_turn(body: dict[str, Any], messages: list[Any]) -> str | None:
    """With thinking enabled, Anthropic refuses a tool result whose assistant turn has lost
    its thinking block (a client or gateway that drops signed thinking breaks here)."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    turns = [(i, m) for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if not turns or not _answers_a_tool(messages):
        return None
    i, last = turns[-1]
    content = last.get("content")
    blocks = content if isinstance(content, list) else [{"type": "text"}]
    first = blocks[0].get("type") if blocks else None
    if first in ("thinking", "redacted_thinking") or not any(
            b.get("type") == "tool_use" for b in blocks):
        return None
    return (f"messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but "
            f"found `{first}`. When `thinking` is enabled, a final `assistant` message must "
            "start with a thinking block (preceeding the lastmost set of `tool_use` and "
            "`tool_result` blocks). We recommend you include thinking blocks from previous "
            "turns. To avoid this requirement, disable `thinking`.")


async def _raw(request: web.Request, step: Step, body: dict[str, Any]) -> web.StreamResponse:
    """Step.raw as it is, with status 200: the client must cope."""
    content_type = "text/event-stream" if body.get("stream") else "application/json"
    return await _stream(request, step, [step.raw or b""], content_type)


async def _stream(request: web.Request, step: Step, events: list[bytes],
                  content_type: str) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": content_type,
                                           "cache-control": "no-cache"})
    await response.prepare(request)
    if step.drip_s:
        events = [bytes([byte]) for event in events for byte in event]
    for i, event in enumerate(events):
        if step.drop_after is not None and i >= step.drop_after:
            assert request.transport is not None
            # What was sent is read first: aiohttp drops a reader's unread bytes when the
            # connection dies, so a drop in the same instant would take them along.
            await asyncio.sleep(0.05)
            request.transport.abort()  # the connection dies mid-answer, as real ones do
            return response
        await response.write(event)
        if step.chunk_delay_s or step.drip_s:
            await asyncio.sleep(step.chunk_delay_s or step.drip_s)
    await response.write_eof()
    return response


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the mock provider on loopback.")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--delay", action="append", default=[], metavar="MODEL=SECONDS",
                        help="answer this provider model id after a delay (repeatable)")
    parser.add_argument("--words", action="append", default=[], metavar="MODEL=N",
                        help="this provider model id answers N words, one stream delta "
                             "each (repeatable)")
    args = parser.parse_args()
    mock = MockProvider(keep_history=False)
    for delay in args.delay:
        model, _, seconds = delay.partition("=")
        mock.always[model] = Step(delay_s=float(seconds))
    for words in args.words:
        model, _, count = words.partition("=")
        mock.always[model] = dataclasses.replace(
            mock.always.get(model, Step()),
            text=" ".join(f"word{i}" for i in range(int(count))))
    web.run_app(mock.app(), host="127.0.0.1", port=args.port, access_log=None, print=None,
                handler_cancellation=True)


if __name__ == "__main__":
    main()
