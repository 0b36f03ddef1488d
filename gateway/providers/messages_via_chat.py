"""Anthropic Messages served by any model: the body translated to chat (messages_translate),
the answer or chunks translated back (messages_stream), around the model's chat Adapter
as every translation is (via_chat.py)."""

from __future__ import annotations

from typing import Any

from gateway.config import Model
from gateway.providers import messages_translate as translate
from gateway.providers.messages_stream import EventTranslator
from gateway.providers.via_chat import ViaChat


class MessagesViaChat(ViaChat):
    """A NativeAdapter for ANTHROPIC_MESSAGES bodies, on any model's Adapter."""

    MALFORMED = ("a content block or tool of the body has a field of a type Anthropic's "
                 "Messages API does not allow")

    def to_chat(self, body: dict[str, Any], model: Model) -> dict[str, Any]:
        return translate.to_chat(body, model)

    def from_chat(self, answer: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        return translate.from_chat(answer, self._adapter.model.name,
                                   translate.wants_thinking(body))

    def translator(self, input_tokens: int, body: dict[str, Any]) -> EventTranslator:
        return EventTranslator(self._adapter.model.name, input_tokens,
                               translate.wants_thinking(body))
