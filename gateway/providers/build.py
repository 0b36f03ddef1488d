"""Which adapter serves a model: the fast path for the types it knows, litellm for the rest;
and what speaks another wire format to it: its own native pass-through, else a translation."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from gateway.config import Model
from gateway.providers.anthropic_api import AnthropicAPI
from gateway.providers.base import (
    ANTHROPIC_MESSAGES,
    OPENAI_RESPONSES,
    Adapter,
    NativeAdapter,
    Speaker,
)
from gateway.providers.messages_via_chat import MessagesViaChat
from gateway.providers.openai_compat import OpenAICompat
from gateway.providers.responses_via_chat import ResponsesViaChat
from gateway.providers.sessions import Session, Sessions
from gateway.schema import TimeoutSettings

FAST_PATH: dict[str, Callable[[Model, Session], Adapter]] = {
    "openai": OpenAICompat, "groq": OpenAICompat, "ollama": OpenAICompat,
    "anthropic": AnthropicAPI,
}


def adapter(model: Model, timeouts: TimeoutSettings, sessions: Sessions) -> Adapter:
    """`model`'s adapter, on the session of its provider's address (opened if none is)."""
    fast = FAST_PATH.get(model.provider.type)
    if fast is None:
        from gateway.providers.via_litellm import ViaLitellm  # litellm only when configured

        return ViaLitellm(model)
    return fast(model, sessions.take(model.provider.api_base, timeouts))


# A wire format no adapter of a model takes natively, translated onto its chat calls.
TRANSLATIONS: dict[str, Callable[[Adapter], NativeAdapter]] = {
    ANTHROPIC_MESSAGES: MessagesViaChat, OPENAI_RESPONSES: ResponsesViaChat}


def in_format(adapter: Adapter, format: str, headers: Mapping[str, str]) -> NativeAdapter:
    """The model spoken to in `format`: its native pass-through, else the translation."""
    return adapter.native(format, headers) or TRANSLATIONS[format](adapter)


def speaking(adapter: Adapter, format: str | None, headers: Mapping[str, str]) -> Speaker:
    """What the chain calls for this model: the adapter itself in the gateway's own form
    (format None), or the model in `format`."""
    return adapter if format is None else in_format(adapter, format, headers)


def needs_litellm(models: Iterable[Model]) -> bool:
    return any(m.provider.type not in FAST_PATH for m in models)


def preload_litellm() -> None:
    """Import litellm fully (seconds of CPU): call it off the event loop, before building."""
    from gateway.providers import via_litellm

    via_litellm.preload()
