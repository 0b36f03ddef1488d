"""The fast path for OpenAI-compatible providers (openai, groq, ollama's /v1, any api_base).

The client's body is forwarded as is, so fields the gateway does not know still
reach the provider; only `model` is rewritten, both ways.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiohttp
import orjson

from gateway.config import Model
from gateway.errors import ProviderError, identifier, kind_for_status, provider_reason
from gateway.providers import upstream
from gateway.providers.base import OPENAI_RESPONSES, NativeAdapter
from gateway.providers.openai_responses import OpenAIResponses
from gateway.providers.sessions import Session

# Ollama serves its OpenAI-compatible API under /v1 of its documented base URL.
PATH_PREFIX = {"ollama": "/v1"}
CONTEXT_OVERFLOW_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
# Ollama and vLLM say it only in words, with no structured code to go by.
CONTEXT_OVERFLOW_PHRASES = ("exceeds the context length", "maximum context length")


def _url(model: Model, endpoint: str) -> str:
    base = model.provider.api_base or ""
    return f"{base}{PATH_PREFIX.get(model.provider.type, '')}/{endpoint}"


def _headers(model: Model) -> dict[str, str]:
    headers = {"content-type": "application/json", **model.provider.headers}
    if model.provider.api_key:
        headers["authorization"] = f"Bearer {model.provider.api_key}"
    return headers


def read_error(status: int, body: Any, headers: dict[str, str]) -> ProviderError:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        code = error.get("code") if isinstance(error.get("code"), str) else None
        etype = str(error.get("type") or "api_error")
        param = error.get("param") if isinstance(error.get("param"), str) else None
    else:
        message = str(error or body or "")[:500]
        code, etype, param = None, "api_error", None
    overflow = code in CONTEXT_OVERFLOW_CODES or (
        status == 400 and any(p in message.lower() for p in CONTEXT_OVERFLOW_PHRASES))
    kind = "overflow" if overflow else kind_for_status(status)
    return ProviderError(provider_reason(status, kind, etype, code, message), status=status,
                         kind=kind, type=identifier(etype) or "api_error",
                         code=identifier(code), param=identifier(param),
                         retry_after_s=upstream.retry_after_s(headers))


class OpenAICompat:
    """An Adapter for one model of an OpenAI-compatible provider, on its address's session."""

    read_error = staticmethod(read_error)

    def __init__(self, model: Model, session: Session):
        self.model = model
        self._session = session
        self.headers = _headers(model)

    @property
    def http(self) -> aiohttp.ClientSession:
        return self._session.http

    def url(self, endpoint: str) -> str:
        return _url(self.model, endpoint)

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post("chat/completions", body, "choices")

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post("embeddings", body, "data")

    async def _post(self, endpoint: str, body: dict[str, Any],
                    answer_field: str) -> dict[str, Any]:
        model = self.model
        reply = await upstream.post_json(self._session.http, _url(model, endpoint),
                                         self.headers, {**body, "model": model.provider_model},
                                         model.name, read_error,
                                         model.provider.max_response_bytes)
        if not isinstance(reply.get(answer_field), list):
            if "error" in reply:  # a 200 that carries an error: some proxies in front do that
                raise read_error(502, reply, {})
            raise ProviderError(f"{model.name}'s provider answered 200 without "
                                f"'{answer_field}'", status=502, kind="transient")
        reply["model"] = model.name
        return reply

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        model = self.model
        # Always ask for the usage chunk: spend is settled from it.
        options = {**(body.get("stream_options") or {}), "include_usage": True}
        forwarded = {**body, "model": model.provider_model, "stream": True,
                     "stream_options": options}
        lines = upstream.post_lines(self._session.http, _url(model, "chat/completions"),
                                    self.headers, forwarded, model.name, read_error,
                                    model.provider.max_response_bytes)
        started: set[int] = set()  # choice indexes seen, and those that said why they ended
        finished: set[int] = set()
        async with contextlib.aclosing(lines):
            with upstream.translated(model.name):
                async for data in upstream.sse_data(lines):
                    if data == b"[DONE]":
                        return
                    chunk = orjson.loads(data)
                    if not isinstance(chunk, dict) or "error" in chunk:
                        raise read_error(502, chunk, {})
                    for choice in chunk.get("choices") or ():
                        started.add(choice.get("index", 0))
                        if choice.get("finish_reason"):
                            finished.add(choice.get("index", 0))
                    chunk["model"] = model.name
                    yield chunk
        if not started or finished != started:  # cut short; without [DONE] but ended is complete
            raise ProviderError(f"{model.name}'s stream ended before its answer did",
                                status=502, kind="transient")

    def native(self, format: str, headers: Mapping[str, str]) -> NativeAdapter | None:
        """OpenAI's own Responses API, for OpenAI's models (the OpenAI chat body is already
        what every provider here takes as is). Groq's and Ollama's Responses APIs lack
        parts of OpenAI's (stored state, some items): they are spoken to through chat."""
        if format == OPENAI_RESPONSES and self.model.provider.type == "openai":
            return OpenAIResponses(self)
        return None

    async def close(self) -> None:
        await self._session.release()
