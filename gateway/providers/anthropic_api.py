"""Calls to Anthropic's Messages API: spoken as OpenAI to the gateway, or passed through."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from gateway import output_limit
from gateway.config import Model
from gateway.errors import ProviderError, identifier, kind_for_status, provider_reason
from gateway.providers import anthropic_translate, upstream
from gateway.providers.anthropic_stream import (
    ERROR_STATUSES,
    ChunkTranslator,
    parse_event,
    stream_error,
)
from gateway.providers.base import ANTHROPIC_MESSAGES, NativeAdapter
from gateway.providers.sessions import Session

API_VERSION = "2023-06-01"
# Anthropic says a too-long prompt only in words; no structured code exists for it.
OVERFLOW_PREFIX = "prompt is too long"


def _headers(model: Model) -> dict[str, str]:
    return {"content-type": "application/json", "anthropic-version": API_VERSION,
            "x-api-key": model.provider.api_key or "", **model.provider.headers}


def read_error(status: int, body: Any, headers: dict[str, str]) -> ProviderError:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message, etype = str(error.get("message") or ""), error.get("type")
    else:
        message, etype = str(body)[:500], "api_error"
    kind = kind_for_status(status)
    if status == 400 and message.lower().startswith(OVERFLOW_PREFIX):
        kind = "overflow"
    return ProviderError(provider_reason(status, kind, etype, None, message), status=status,
                         kind=kind, type=identifier(etype) or "api_error",
                         retry_after_s=upstream.retry_after_s(headers))


def _url(model: Model) -> str:
    return f"{model.provider.api_base}/v1/messages"


def _checked(message: dict[str, Any], model: Model) -> dict[str, Any]:
    if message.get("type") != "message" or not isinstance(message.get("content"), list):
        if message.get("type") == "error":  # a 200 that carries an error
            error = message.get("error") or {}
            raise read_error(ERROR_STATUSES.get(str(error.get("type")), 502), message, {})
        raise ProviderError(f"{model.name}'s provider answered 200 without a message",
                            status=502, kind="transient")
    return message


class AnthropicAPI:
    """An Adapter for one model of Anthropic's Messages API, translated to and from OpenAI."""

    def __init__(self, model: Model, session: Session):
        self.model = model
        self._session = session
        self._native = AnthropicMessages(model, session)

    def _request(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        limit = self.model.max_output_tokens or output_limit.ANTHROPIC_DEFAULT_OUTPUT_LIMIT
        json_mode = anthropic_translate.response_schema(body.get("response_format")) is not None
        return anthropic_translate.to_anthropic(body, self.model.provider_model, limit), json_mode

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        request, json_mode = self._request(body)
        message = await self._native.send(request)
        return anthropic_translate.from_anthropic(message, self.model.name, json_mode)

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        request, json_mode = self._request({**body, "stream": True})
        translator = ChunkTranslator(self.model.name, json_mode)
        events = self._native.events(request)
        async with contextlib.aclosing(events):
            async for event in events:
                for chunk in translator.feed(event):
                    yield chunk

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        raise ProviderError(f"{self.model.name} is an Anthropic model, and Anthropic serves no "
                            "embeddings; ask for an embedding model", status=400, kind="client")

    def native(self, format: str) -> NativeAdapter | None:
        return self._native if format == ANTHROPIC_MESSAGES else None

    async def close(self) -> None:
        await self._session.release()


class AnthropicMessages:
    """A NativeAdapter: an Anthropic Messages body sent as is, but for `model`, and the
    provider's message or events handed back as they came, but for `model` again."""

    def __init__(self, model: Model, session: Session):
        self.model = model
        self._session = session
        self._headers = _headers(model)

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        request = {**body, "model": self.model.provider_model}
        if request.get("stream"):
            request["stream"] = False  # asked for one message, not events
        message = await self.send(request)
        message["model"] = self.model.name
        return message

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        events = self.events({**body, "model": self.model.provider_model, "stream": True})
        async with contextlib.aclosing(events):
            async for event in events:
                if event.get("type") == "message_start" and isinstance(
                        event.get("message"), dict):
                    event["message"]["model"] = self.model.name
                yield event

    async def send(self, request: dict[str, Any]) -> dict[str, Any]:
        """One Messages request, not streamed: the message, checked to be one."""
        model = self.model
        message = await upstream.post_json(self._session.http, _url(model), self._headers,
                                           request, model.name, read_error,
                                           model.provider.max_response_bytes)
        return _checked(message, model)

    async def events(self, request: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """One streamed Messages request: its events up to message_stop; an `error` event,
        or a stream that ends before message_stop, raises ProviderError."""
        model = self.model
        lines = upstream.post_lines(self._session.http, _url(model), self._headers, request,
                                    model.name, read_error, model.provider.max_response_bytes)
        async with contextlib.aclosing(lines):
            with upstream.translated(model.name):
                async for data in upstream.sse_data(lines):
                    event = parse_event(data)
                    if event.get("type") == "error":
                        raise stream_error(event)
                    yield event
                    if event.get("type") == "message_stop":
                        return
        raise ProviderError(f"{model.name}'s stream ended before message_stop", status=502,
                            kind="transient")
