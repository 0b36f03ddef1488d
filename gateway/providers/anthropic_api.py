"""Calls to Anthropic's Messages API, on the shared client, spoken as OpenAI to the gateway."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from gateway import output_limit
from gateway.config import Model
from gateway.errors import ProviderError, identifier, kind_for_status, provider_reason
from gateway.providers import anthropic_translate, upstream
from gateway.providers.anthropic_stream import ERROR_STATUSES, ChunkTranslator, parse_event

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


def _request(model: Model, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    limit = model.max_output_tokens or output_limit.ANTHROPIC_DEFAULT_OUTPUT_LIMIT
    json_mode = anthropic_translate.response_schema(body.get("response_format")) is not None
    return anthropic_translate.to_anthropic(body, model.provider_model, limit), json_mode


def _url(model: Model) -> str:
    return f"{model.provider.api_base}/v1/messages"


async def complete(http: aiohttp.ClientSession, model: Model,
                   body: dict[str, Any]) -> dict[str, Any]:
    request, json_mode = _request(model, body)
    message = await upstream.post_json(http, _url(model), _headers(model), request, model.name,
                                       read_error, model.provider.max_response_bytes)
    if message.get("type") != "message" or not isinstance(message.get("content"), list):
        if message.get("type") == "error":  # a 200 that carries an error
            error = message.get("error") or {}
            raise read_error(ERROR_STATUSES.get(str(error.get("type")), 502), message, {})
        raise ProviderError(f"{model.name}'s provider answered 200 without a message",
                            status=502, kind="transient")
    return anthropic_translate.from_anthropic(message, model.name, json_mode)


async def stream(http: aiohttp.ClientSession, model: Model,
                 body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    request, json_mode = _request(model, {**body, "stream": True})
    translator = ChunkTranslator(model.name, json_mode)
    lines = upstream.post_lines(http, _url(model), _headers(model), request, model.name,
                                read_error, model.provider.max_response_bytes)
    async with contextlib.aclosing(lines):
        with upstream.translated(model.name):
            async for data in upstream.sse_data(lines):
                for chunk in translator.feed(parse_event(data)):
                    yield chunk
                if translator.finished:
                    return
    raise ProviderError(f"{model.name}'s stream ended before message_stop", status=502,
                        kind="transient")


async def embed(http: aiohttp.ClientSession, model: Model,
                body: dict[str, Any]) -> dict[str, Any]:
    raise ProviderError(f"{model.name} is an Anthropic model, and Anthropic serves no "
                        "embeddings; ask for an embedding model", status=400, kind="client")
