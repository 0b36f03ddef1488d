"""Every provider type off the fast path goes through litellm, imported on first use only.

litellm's own retries are off (retries live in one place in the gateway), its
price-map download and tokenizer downloads are off (the gateway may run offline),
and only OpenAI request fields are forwarded: nothing in a client's body can
choose the api_base or api_key.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import AsyncGenerator, Mapping
from types import ModuleType
from typing import Any

import openai
import orjson

from gateway import completions
from gateway.config import Model
from gateway.errors import ProviderError, kind_for_status, provider_reason
from gateway.providers import upstream
from gateway.providers.base import NativeAdapter

FORWARDED = frozenset({
    "messages", "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens",
    "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "user",
    "seed", "tools", "tool_choice", "parallel_tool_calls", "response_format", "reasoning_effort",
    "stream_options", "modalities", "audio", "prediction",
})
EMBEDDINGS_FORWARDED = frozenset({"input", "dimensions", "encoding_format", "user"})


def _litellm() -> ModuleType:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    module = importlib.import_module("litellm")
    switches: Any = module  # litellm's module-level switches are not in its type hints
    switches.suppress_debug_info = True
    switches.telemetry = False
    return module


def preload() -> None:
    """Import litellm fully (about 3 s of CPU); call it off the event loop, at start-up."""
    module = _litellm()
    for name in ("acompletion", "aembedding", "ContextWindowExceededError", "Timeout"):
        getattr(module, name)  # litellm imports lazily, on first attribute access


def _kwargs(model: Model, body: dict[str, Any],
            forwarded: frozenset[str] = FORWARDED) -> dict[str, Any]:
    kwargs = {k: v for k, v in body.items() if k in forwarded}
    kwargs.update(model=f"{model.provider.type}/{model.provider_model}", num_retries=0,
                  max_retries=0, drop_params=True)
    provider = model.provider
    if provider.api_key:
        kwargs["api_key"] = provider.api_key
    if provider.api_base:
        kwargs["api_base"] = provider.api_base
    if provider.api_version:
        kwargs["api_version"] = provider.api_version
    if provider.headers:
        kwargs["extra_headers"] = dict(provider.headers)
    return kwargs


def _translate(exc: Exception, model: Model, litellm: ModuleType) -> ProviderError:
    if isinstance(exc, litellm.ContextWindowExceededError):
        return ProviderError(provider_reason(400, "overflow"), status=400, kind="overflow")
    if isinstance(exc, litellm.Timeout):
        return ProviderError(f"{model.name} timed out", status=504, kind="transient",
                             timed_out=True)
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) and status >= 400 else 502
    kind = kind_for_status(status)
    # litellm's text quotes the provider's; its exception class names the kind of failure.
    return ProviderError(provider_reason(status, kind, type(exc).__name__, None,
                                         str(getattr(exc, "message", ""))),
                         status=status, kind=kind)


def _bounded(out: dict[str, Any], model: Model) -> dict[str, Any]:
    """litellm reads the provider's body itself, unbounded: an answer over
    settings.max_response_mb is at least neither served nor cached (see the README)."""
    limit = model.provider.max_response_bytes
    if len(orjson.dumps(out)) > limit:
        raise upstream.too_large(model.name, limit)
    return out


def _openai_chunk(chunk: dict[str, Any], model_name: str) -> dict[str, Any]:
    """litellm glues the usage onto an empty choice and adds its own `cost`; OpenAI does not."""
    chunk["model"] = model_name
    completions.conform_chunk(chunk)  # exclude_none dropped a null finish_reason
    usage = chunk.get("usage")
    if usage:
        usage.pop("cost", None)
        if all(not c.get("delta") and not c.get("finish_reason") for c in chunk["choices"]):
            chunk["choices"] = []
    return chunk


class ViaLitellm:
    """An Adapter for one model of any provider type off the fast path.

    It holds no session of the gateway's: litellm keeps its own HTTP clients,
    for the whole process, whichever configuration serves.
    """

    def __init__(self, model: Model):
        self.model = model
        self._litellm = _litellm()

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        model, litellm = self.model, self._litellm
        try:
            reply = await litellm.acompletion(**_kwargs(model, {**body, "stream": False}))
        except openai.OpenAIError as exc:  # the base of litellm's whole exception tree
            raise _translate(exc, model, litellm) from exc
        out: dict[str, Any] = _bounded(reply.model_dump(exclude_none=True), model)
        out["model"] = model.name
        (out.get("usage") or {}).pop("cost", None)
        completions.conform(out)  # exclude_none dropped the nulls OpenAI's schema requires
        return out

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        model, litellm = self.model, self._litellm
        try:
            reply = await litellm.aembedding(**_kwargs(model, body, EMBEDDINGS_FORWARDED))
        except openai.OpenAIError as exc:
            raise _translate(exc, model, litellm) from exc
        # litellm's type says list[float]; a base64 answer is a string, and correct as such.
        out: dict[str, Any] = _bounded(reply.model_dump(exclude_none=True, warnings=False),
                                       model)
        out["model"] = model.name
        return out

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        model, litellm = self.model, self._litellm
        options = {**(body.get("stream_options") or {}), "include_usage": True}
        try:
            response = await litellm.acompletion(
                **_kwargs(model, {**body, "stream_options": options}), stream=True)
            size, limit = 0, model.provider.max_response_bytes
            async for chunk in response:
                out = _openai_chunk(chunk.model_dump(exclude_none=True), model.name)
                size += len(orjson.dumps(out))  # as they arrive: litellm's reading is unbounded
                if size > limit:
                    await response.aclose()  # stop reading the rest
                    raise upstream.too_large(model.name, limit)
                yield out
        except openai.OpenAIError as exc:
            raise _translate(exc, model, litellm) from exc

    def native(self, format: str, headers: Mapping[str, str]) -> NativeAdapter | None:
        return None  # litellm's translation is to and from OpenAI's shapes only

    async def close(self) -> None:
        pass  # nothing of its own to let go of (see the class's docstring)
