"""OpenAI's Responses API, passed through: a Responses body sent to an OpenAI model as is.

Only `model` is rewritten, both ways, and the conversation the gateway itself made
is made fit for OpenAI: an item the gateway made (its id holds GATEWAY_MARK: a
translated turn of another model, or an input item stored by the gateway) loses its
id, which OpenAI would look up and not find, and a reasoning item the gateway made
from another model's reasoning is dropped (OpenAI takes back only its own).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import orjson

from gateway.errors import ProviderError
from gateway.forms.responses import GATEWAY_MARK
from gateway.money import tokens
from gateway.providers import upstream

if TYPE_CHECKING:
    from gateway.providers.openai_compat import OpenAICompat

ENDED = frozenset({"response.completed", "response.incomplete"})


def made_here(item: Any) -> bool:
    return isinstance(item, dict) and GATEWAY_MARK in str(item.get("id") or "")


def for_openai(body: dict[str, Any]) -> dict[str, Any]:
    """The body without what only the gateway knows of (the module's docstring)."""
    given = body.get("input")
    if not isinstance(given, list) or not any(made_here(item) for item in given):
        return body
    kept = [{k: v for k, v in item.items() if k != "id"} if made_here(item) else item
            for item in given
            if not (made_here(item) and item.get("type") == "reasoning")]
    return {**body, "input": kept}


class OpenAIResponses:
    """A NativeAdapter for OPENAI_RESPONSES bodies, on an OpenAI model's adapter."""

    def __init__(self, compat: OpenAICompat) -> None:
        self._compat = compat

    def _sent(self, body: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {**for_openai(body), **extra, "model": self._compat.model.provider_model}

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        compat, model = self._compat, self._compat.model
        reply = await upstream.post_json(compat.http, compat.url("responses"), compat.headers,
                                         self._sent(body), model.name, compat.read_error,
                                         model.provider.max_response_bytes)
        if reply.get("object") != "response" or not isinstance(reply.get("output"), list):
            if "error" in reply and reply.get("object") != "response":
                raise compat.read_error(502, reply, {})
            raise ProviderError(f"{model.name}'s provider answered 200 without a response",
                                status=502, kind="transient")
        if reply.get("status") == "failed":
            raise _failed(compat, reply)
        reply["model"] = model.name
        return reply

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        compat, model = self._compat, self._compat.model
        lines = upstream.post_lines(compat.http, compat.url("responses"), compat.headers,
                                    self._sent(body, stream=True), model.name,
                                    compat.read_error, model.provider.max_response_bytes)
        ended = False
        async with contextlib.aclosing(lines):
            with upstream.translated(model.name):
                async for data in upstream.sse_data(lines):
                    if data == b"[DONE]":
                        break
                    event = orjson.loads(data)
                    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                        raise ProviderError(f"{model.name}'s provider sent an event that is "
                                            "not a Responses stream event", status=502,
                                            kind="transient")
                    kind = event["type"]
                    if kind == "error":
                        raise compat.read_error(502, {"error": event}, {})
                    response = event.get("response")
                    if isinstance(response, dict):
                        if kind == "response.failed":
                            raise _failed(compat, response)
                        response["model"] = model.name
                    yield event
                    if kind in ENDED:
                        ended = True
                        break
        if not ended:
            raise ProviderError(f"{model.name}'s stream ended before its answer did",
                                status=502, kind="transient")

    async def count_tokens(self, body: dict[str, Any]) -> int:
        """The gateway's count (money/tokens.py: an estimate that errs high)."""
        return tokens.responses_tally(body).counted().for_model(self._compat.model)


def _failed(compat: OpenAICompat, response: dict[str, Any]) -> ProviderError:
    """A response OpenAI ended as failed: a failure of this model (the chain may fall back
    before the first token; after it, the client is told), read as any of its errors are,
    so that its words stay with the operator and its code is kept."""
    given = response.get("error")
    error: dict[str, Any] = given if isinstance(given, dict) else {}
    status = 429 if error.get("code") == "rate_limit_exceeded" else 502
    return compat.read_error(status, {"error": {"type": "api_error", **error}}, {})
