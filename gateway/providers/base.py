"""The Adapter protocol: what the gateway asks of the provider behind one configured model.

One adapter object serves one router.yaml model (providers/build.py makes it when
a configuration is compiled). It speaks the gateway's request, the OpenAI chat
body, and answers in OpenAI's shapes:
    await complete(body)  -> a chat.completion
    stream(body)          -> chat.completion.chunks (an async generator: close it when
                             you stop reading, so that its connection goes back at once)
    await embed(body)     -> an embeddings list
and raises only ProviderError (or InvalidRequest for a body it cannot translate).

An adapter may also take a body in another wire format as is: `native(format,
headers)` answers an object that sends such a body unchanged but for `model` (with
those of the client's headers the provider's API reads, such as anthropic-beta),
and hands back the provider's own answer and events, so that nothing the client
wrote or the provider sent is lost in translation; None when it cannot. Formats are
named "<provider>.<api>", as in ANTHROPIC_MESSAGES. Where no adapter of a model
takes a format natively, a translation onto its chat calls does (adapters.speaking).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any, Protocol

from gateway.config import Model

ANTHROPIC_MESSAGES = "anthropic.messages"  # a body of Anthropic's POST /v1/messages
OPENAI_RESPONSES = "openai.responses"  # a body of OpenAI's POST /v1/responses


class Speaker(Protocol):
    """What the chain calls: one model's provider, in the request's wire format."""

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]: ...


class NativeAdapter(Speaker, Protocol):
    """One model's provider, spoken to in its own wire format."""

    async def count_tokens(self, body: dict[str, Any]) -> int:
        """The input tokens of the body, as the provider (or the gateway) counts them."""
        ...

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """The provider's answer, as it sent it but for `model` (the router.yaml name)."""
        ...

    def stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """The provider's stream events, each as it sent it but for `model`."""
        ...


class Adapter(Protocol):
    """One router.yaml model's provider, spoken to in the gateway's (OpenAI's) shapes."""

    @property
    def model(self) -> Model:
        """The model it was built for."""
        ...

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]: ...

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def native(self, format: str, headers: Mapping[str, str]) -> NativeAdapter | None:
        """What takes a body of wire format `format` as is, with the client's `headers` of
        that API, or None if nothing here does."""
        ...

    async def close(self) -> None:
        """Let go of its connections; it is not called again after this."""
        ...
