"""Every body and stream chunk the tests receive on an OpenAI path, checked against OpenAI's schema.

The schema is tests/schema/openai_chat.json (chat, embeddings, models, and the Responses
API's response object and stream events) (extracted from openai/openai-openapi by
tests/schema/extract.py). `watch()` wraps the transports of httpx and httpx2, the layer under the
`openai` SDK's clients (httpx2) and under the tests' own raw `httpx` calls, so every test is
covered without asking for it; what it finds is collected in `Findings` and fails the
test that received it (conftest's autouse fixture). It only reads: what a test sees is
byte for byte what the server sent.

Not covered: tests that speak HTTP over raw sockets (tests/test_hostile.py,
tests/test_connections.py), whose point is malformed traffic.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMA = json.loads((Path(__file__).parent / "schema" / "openai_chat.json").read_text())
_REGISTRY = Registry().with_resource("urn:openai", Resource.from_contents(SCHEMA))
# The paths OpenAI's API answers on, below any prefix (/v1, Groq's /openai/v1).
OPENAI_PATH = re.compile(r"/v1/(chat/completions|embeddings|responses|models(/[^/]+)?)$")
SUCCESS = {"chat/completions": "CreateChatCompletionResponse", "responses": "Response",
           "embeddings": "CreateEmbeddingResponse", "models": "ListModelsResponse",
           "model": "Model"}


def validator(component: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"urn:openai#/$defs/{component}"}, registry=_REGISTRY)


VALIDATORS = {name: validator(name) for name in (
    *SUCCESS.values(), "CreateChatCompletionStreamResponse", "ResponseStreamEvent",
    "ErrorResponse")}


def problems(component: str, document: Any) -> list[str]:
    """What in `document` breaks `component`, one line each; [] when it conforms."""
    return [f"{component}: at /{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in VALIDATORS[component].iter_errors(document)]


def body_problems(path: str, status: int, content_type: str, body: bytes) -> list[str]:
    """A whole (non-streamed) answer from an OpenAI path."""
    match = OPENAI_PATH.search(path)
    if match is None:
        return ["not an OpenAI path"]
    try:
        document = json.loads(body)
    except ValueError:
        return [f"HTTP {status} with a body that is not JSON ({content_type}): {body[:200]!r}"]
    if status >= 400:
        return problems("ErrorResponse", document)
    endpoint = "model" if match.group(2) else match.group(1)
    return problems(SUCCESS[endpoint], document)


def event_problems(data: bytes, path: str = "/v1/chat/completions") -> list[str]:
    """One `data:` payload of a chat stream (a chunk, an error event, or the [DONE] mark),
    or of a Responses stream (one of its typed events)."""
    if data.strip() == b"[DONE]":
        return []
    try:
        document = json.loads(data)
    except ValueError:
        return [f"a stream event that is not JSON: {data[:200]!r}"]
    if path.endswith("/responses"):
        return problems("ResponseStreamEvent", document)
    if isinstance(document, dict) and "error" in document:
        return problems("ErrorResponse", document)
    return problems("CreateChatCompletionStreamResponse", document)


@dataclass
class Findings:
    """What the checks found, for the test running now."""

    lines: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, request: Any, found: list[str]) -> None:
        if found:
            with self.lock:
                self.lines += [f"{request.method} {request.url}: {line}" for line in found]

    def take(self) -> list[str]:
        with self.lock:
            taken, self.lines = self.lines, []
            return taken


class _Reader:
    """Sees the body as the client reads it; checks it once it is whole (for a stream: each
    event as soon as it is whole). A body the client stops reading early is not judged."""

    def __init__(self, request: Any, response: Any, findings: Findings):
        self.request, self.findings = request, findings
        self.status = response.status_code
        self.content_type = response.headers.get("content-type", "")
        self.stream = self.content_type.startswith("text/event-stream")
        self.buffer = b""

    def feed(self, part: bytes) -> None:
        self.buffer += part
        if not self.stream:
            return
        *events, self.buffer = re.split(rb"\r?\n\r?\n", self.buffer)
        for event in events:
            for line in event.splitlines():
                if line.startswith(b"data:"):
                    self.findings.add(self.request, event_problems(
                        line[5:].strip(), self.request.url.path))

    def end(self) -> None:
        if self.stream:
            self.feed(b"\n\n")
        else:
            self.findings.add(self.request, body_problems(
                self.request.url.path, self.status, self.content_type, self.buffer))


def _watched(request: Any) -> bool:
    """Answers from loopback servers (the gateway, the mock provider) on OpenAI's paths."""
    return (request.url.host == "127.0.0.1" and request.method in ("GET", "POST")
            and OPENAI_PATH.search(request.url.path) is not None)


def watch(monkeypatch: Any, findings: Findings) -> None:
    """Wrap the transports of httpx and of httpx2 (the `openai` SDK's own fork), for the
    session: `monkeypatch` is a pytest.MonkeyPatch."""
    for module in (httpx, httpx2):
        _wrap(module, monkeypatch, findings)


def _wrap(module: Any, monkeypatch: Any, findings: Findings) -> None:
    class Stream(module.SyncByteStream):  # type: ignore[misc]
        def __init__(self, inner: Any, reader: _Reader):
            self.inner, self.reader = inner, reader

        def __iter__(self) -> Iterator[bytes]:
            for part in self.inner:
                self.reader.feed(part)
                yield part
            self.reader.end()

        def close(self) -> None:
            self.inner.close()

    class AsyncStream(module.AsyncByteStream):  # type: ignore[misc]
        def __init__(self, inner: Any, reader: _Reader):
            self.inner, self.reader = inner, reader

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for part in self.inner:
                self.reader.feed(part)
                yield part
            self.reader.end()

        async def aclose(self) -> None:
            await self.inner.aclose()

    sync_send = module.HTTPTransport.handle_request
    async_send = module.AsyncHTTPTransport.handle_async_request

    def handle_request(self: Any, request: Any) -> Any:
        response = sync_send(self, request)
        if _watched(request):
            response.stream = Stream(response.stream, _Reader(request, response, findings))
        return response

    async def handle_async_request(self: Any, request: Any) -> Any:
        response = await async_send(self, request)
        if _watched(request):
            response.stream = AsyncStream(response.stream,
                                          _Reader(request, response, findings))
        return response

    monkeypatch.setattr(module.HTTPTransport, "handle_request", handle_request)
    monkeypatch.setattr(module.AsyncHTTPTransport, "handle_async_request", handle_async_request)
