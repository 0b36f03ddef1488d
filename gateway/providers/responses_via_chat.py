"""OpenAI's Responses API served by any model: the body translated to chat
(responses_translate), the answer or chunks translated back (responses_stream), around
the model's chat Adapter as every translation is (via_chat.py). A body chat cannot
carry is Unsupported: the chain tries its next model, maybe a native one."""

from __future__ import annotations

from typing import Any

from gateway.config import Model
from gateway.providers import responses_translate as translate
from gateway.providers.responses_stream import EventTranslator
from gateway.providers.via_chat import ViaChat


class ResponsesViaChat(ViaChat):
    """A NativeAdapter for OPENAI_RESPONSES bodies, on any model's Adapter."""

    MALFORMED = ("an input item or tool of the body has a field of a type OpenAI's "
                 "Responses API does not allow")

    def to_chat(self, body: dict[str, Any], model: Model) -> dict[str, Any]:
        return translate.to_chat(body, model)

    def from_chat(self, answer: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        return translate.from_chat(answer, self._adapter.model.name, body)

    def translator(self, input_tokens: int, body: dict[str, Any]) -> EventTranslator:
        return EventTranslator(self._adapter.model.name, input_tokens, body)
