"""OpenAI's Responses API served by any model: a NativeAdapter over its chat Adapter.

The body is translated to the gateway's OpenAI chat form (responses_translate),
sent with the model's own adapter, and its answer or chunks translated back
(responses_stream). Errors are the adapter's, untouched, or Unsupported for a body
that chat cannot carry (the chain then tries its next model, maybe a native one).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from gateway.completions import Assembler
from gateway.errors import InvalidRequest, Unsupported
from gateway.money import meter, tokens
from gateway.providers import responses_translate as translate
from gateway.providers.base import Adapter
from gateway.providers.responses_stream import EventTranslator


class ResponsesViaChat:
    """A NativeAdapter for OPENAI_RESPONSES bodies, on any model's Adapter."""

    def __init__(self, adapter: Adapter) -> None:
        self._adapter = adapter

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        chat = self._chat(body)
        answer = await self._adapter.complete(chat)
        if not isinstance(answer.get("usage"), dict):  # spend is settled from the usage
            answer["usage"] = {"prompt_tokens": await self._input_tokens(chat),
                               "completion_tokens": await self._output_tokens(answer)}
        return translate.from_chat(answer, self._adapter.model.name, body)

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        model = self._adapter.model
        chat = {**self._chat(body), "stream": True,
                "stream_options": {"include_usage": True}}  # spend is settled from it
        input_tokens = await self._input_tokens(chat)
        translator = EventTranslator(model.name, input_tokens, body)
        seen = Assembler()  # for a provider that sends no usage chunk: its output, counted
        chunks = self._adapter.stream(chat)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                seen.add(chunk)
                for event in translator.feed(chunk):
                    yield event
        if not translator.finished:
            estimate = {"prompt_tokens": input_tokens,
                        "completion_tokens": await self._output_tokens(seen.completion())}
            for event in translator.close(estimate):
                yield event

    async def count_tokens(self, body: dict[str, Any]) -> int:
        """The input tokens of `body` as sent to this model, as the gateway counts them
        (money/tokens.py: an estimate that errs high)."""
        return await self._input_tokens(self._chat(body))

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        model = self._adapter.model
        try:
            return translate.to_chat(body, model)
        except (TypeError, AttributeError, ValueError):  # a field of a type the API never has
            raise InvalidRequest("an input item or tool of the body has a field of a type "
                                 "OpenAI's Responses API does not allow; check the body "
                                 "against the API reference") from None
        except InvalidRequest as refused:
            raise Unsupported(f"{model.name} cannot take this request through the gateway's "
                              f"translation: {refused.message}", param=refused.param) from None

    async def _input_tokens(self, chat: dict[str, Any]) -> int:
        return (await meter.exact(tokens.chat_tally(chat))).for_model(self._adapter.model)

    async def _output_tokens(self, answer: dict[str, Any]) -> int:
        return (await meter.exact(tokens.output_tally(answer))).for_model(self._adapter.model)
