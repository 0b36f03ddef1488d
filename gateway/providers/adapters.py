"""Which adapter serves a model: each turns an OpenAI request into one provider call and back.

Every adapter is a module with the same three functions:
    async complete(http, model, body) -> dict                    (a chat.completion)
    stream(http, model, body) -> AsyncIterator[dict]             (chat.completion.chunks)
    async embed(http, model, body) -> dict                       (an embeddings list)
and raises only ProviderError (or InvalidRequest for a body it cannot translate).
"""

from __future__ import annotations

from types import ModuleType

from gateway.config import Model
from gateway.providers import anthropic_api, openai_compat

FAST_PATH = {"openai": openai_compat, "groq": openai_compat, "ollama": openai_compat,
             "anthropic": anthropic_api}


def adapter_for(model: Model) -> ModuleType:
    adapter = FAST_PATH.get(model.provider.type)
    if adapter is None:
        from gateway.providers import via_litellm  # imports litellm only when configured
        adapter = via_litellm
    return adapter


def needs_litellm(models: list[Model]) -> bool:
    return any(m.provider.type not in FAST_PATH for m in models)


def preload_litellm() -> None:
    from gateway.providers import via_litellm

    via_litellm.preload()
