"""Calls to Anthropic's Messages API: spoken as OpenAI to the gateway, or passed through."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from gateway import output_limit
from gateway.config import Model
from gateway.errors import ProviderError, identifier, kind_for_status, provider_reason
from gateway.forms.anthropic import UNSIGNED
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
# What POST /v1/messages/count_tokens takes of a Messages body (it refuses max_tokens, stream).
COUNT_FIELDS = frozenset({"messages", "model", "system", "thinking", "tool_choice", "tools",
                          "output_config", "cache_control", "speed", "mcp_servers",
                          "context_management"})
# Anthropic says a too-long prompt only in words; no structured code exists for it.
OVERFLOW_PREFIX = "prompt is too long"


def _headers(model: Model, client: Mapping[str, str] | None = None) -> dict[str, str]:
    """The provider's headers; on a pass-through, the client's anthropic-version, and its
    anthropic-beta joined to any the operator set. Every beta goes to Anthropic's own API
    (which ignores none it does not know; Bedrock and Vertex would refuse them, and reach
    Claude through litellm's translation, which sends none)."""
    client = client or {}
    headers = {"content-type": "application/json",
               "anthropic-version": client.get("anthropic-version") or API_VERSION,
               "x-api-key": model.provider.api_key or "", **model.provider.headers}
    betas = [b.strip() for value in (client.get("anthropic-beta"),
                                     model.provider.headers.get("anthropic-beta"))
             for b in (value or "").split(",") if b.strip()]
    if betas:
        headers["anthropic-beta"] = ",".join(dict.fromkeys(betas))
    return headers


def _own_history(body: dict[str, Any]) -> dict[str, Any]:
    """The body as Anthropic accepts it after another provider's turns: without the thinking
    blocks the gateway made when it translated another provider's reasoning (Anthropic would
    refuse their signature: a 400 others shipped), and with thinking off for a tool result
    whose assistant turn does not open with a thinking block (another model's tool call,
    after a fallback mid tool loop), which Anthropic refuses while thinking is on, as its
    error advises. A body that needs neither is sent as it is."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body
    out = body
    if any(isinstance(m, dict) and isinstance(m.get("content"), list)
           and any(isinstance(b, dict) and b.get("signature") == UNSIGNED for b in m["content"])
           for m in messages):
        messages = [{**m, "content": [b for b in m["content"] if not (
            isinstance(b, dict) and b.get("signature") == UNSIGNED)]}
            if isinstance(m, dict) and isinstance(m.get("content"), list) else m
            for m in messages]
        out = {**body, "messages": messages}
    if _thinking_on(body) and _unthought_tool_turn(messages):
        out = {**out, "thinking": {"type": "disabled"}}
    return out


def _thinking_on(body: dict[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled")


def _unthought_tool_turn(messages: list[Any]) -> bool:
    """Whether the last assistant turn calls a tool without opening with thinking."""
    said = [m for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
    last = said[-1].get("content") if said else None
    if not isinstance(last, list) or not last:
        return False
    opens = last[0].get("type") if isinstance(last[0], dict) else None
    return opens not in ("thinking", "redacted_thinking") and any(
        isinstance(b, dict) and b.get("type") == "tool_use" for b in last)


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

    def native(self, format: str, headers: Mapping[str, str]) -> NativeAdapter | None:
        if format != ANTHROPIC_MESSAGES:
            return None
        return AnthropicMessages(self.model, self._session, headers) if headers else self._native

    async def close(self) -> None:
        await self._session.release()


class AnthropicMessages:
    """A NativeAdapter: an Anthropic Messages body sent as is, but for `model`, and the
    provider's message or events handed back as they came, but for `model` again."""

    def __init__(self, model: Model, session: Session,
                 client_headers: Mapping[str, str] | None = None):
        self.model = model
        self._session = session
        self._headers = _headers(model, client_headers)

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        request = {**_own_history(body), "model": self.model.provider_model}
        if request.get("stream"):
            request["stream"] = False  # asked for one message, not events
        message = await self.send(request)
        message["model"] = self.model.name
        return message

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        events = self.events({**_own_history(body), "model": self.model.provider_model,
                              "stream": True})
        async with contextlib.aclosing(events):
            async for event in events:
                if event.get("type") == "message_start" and isinstance(
                        event.get("message"), dict):
                    event["message"]["model"] = self.model.name
                yield event

    async def count_tokens(self, body: dict[str, Any]) -> int:
        """Anthropic's own count of the body's input tokens."""
        model = self.model
        request = {k: v for k, v in _own_history(body).items() if k in COUNT_FIELDS}
        request["model"] = model.provider_model
        answer = await upstream.post_json(self._session.http, _url(model) + "/count_tokens",
                                          self._headers, request, model.name, read_error,
                                          model.provider.max_response_bytes)
        counted = answer.get("input_tokens") if isinstance(answer, dict) else None
        if not isinstance(counted, int) or isinstance(counted, bool) or counted < 0:
            raise ProviderError(f"{model.name}'s provider answered count_tokens without a "
                                "count", status=502, kind="transient")
        return counted

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
