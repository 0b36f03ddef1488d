"""Another API's bodies served by any model: a NativeAdapter over its chat Adapter.

The body is translated to the gateway's OpenAI chat form, sent with the model's own
adapter, and its answer or chunks translated back. Errors are the adapter's,
untouched, or Unsupported for a body that chat cannot carry (the chain then tries
its next model). A subclass names the translation (messages_via_chat.py,
responses_via_chat.py); what is done around it is the same for every API.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from gateway.completions import Assembler
from gateway.config import Model
from gateway.errors import InvalidRequest, Unsupported
from gateway.money import meter, tokens
from gateway.providers.base import Adapter


class ChunkTranslator:
    """One chat stream's chunks in, for its one choice, the API's events out. How chunks
    are read is the same for every API (`feed`, `close`); a subclass says what its stream
    opens with (`_begin`), makes of a delta (`_delta`), and ends the choice and the stream
    with (`_end_choice`, then `_end` with the usage)."""

    finished = False  # the stream's last event is made
    _usage: dict[str, Any] | None = None  # the provider's, once its usage chunk came

    def _begun(self) -> bool:
        raise NotImplementedError

    def _begin(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _delta(self, delta: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _choice_ended(self) -> bool:
        raise NotImplementedError

    def _end_choice(self, finish_reason: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _end(self, chat_usage: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if self.finished:
            return []
        events = [] if self._begun() else self._begin(chunk)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # one choice is asked for
            if not self._choice_ended():
                events += self._delta(choice.get("delta") or {})
                if choice.get("finish_reason"):
                    events += self._end_choice(choice["finish_reason"])
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
            # Usage sent before the finish (vLLM's running counts) is not yet the final one.
            if self._choice_ended():
                events += self._end(self._usage)
        return events

    def close(self, estimated_usage: dict[str, Any]) -> list[dict[str, Any]]:
        """The events that end the stream, with `estimated_usage` (chat's shape) unless the
        provider sent its own: for a stream that ended without a usage chunk."""
        if self.finished:
            return []
        events = [] if self._begun() else self._begin({})
        if not self._choice_ended():
            events += self._end_choice("stop")
        return events + self._end(self._usage or estimated_usage)


class ViaChat:
    """A NativeAdapter for one API's bodies, on any model's Adapter."""

    # What a refusal of a field of a type the API never has says is wrong.
    MALFORMED = ""

    def __init__(self, adapter: Adapter) -> None:
        self._adapter = adapter

    def to_chat(self, body: dict[str, Any], model: Model) -> dict[str, Any]:
        """The body as chat; InvalidRequest for what chat cannot carry."""
        raise NotImplementedError

    def from_chat(self, answer: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """A chat.completion as the API's answer to `body`."""
        raise NotImplementedError

    def translator(self, input_tokens: int, body: dict[str, Any]) -> ChunkTranslator:
        """What turns the chat stream into the API's events for `body`."""
        raise NotImplementedError

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        chat = self._chat(body)
        answer = await self._adapter.complete(chat)
        if not isinstance(answer.get("usage"), dict):  # spend is settled from the usage
            answer["usage"] = {"prompt_tokens": await self._input_tokens(chat),
                               "completion_tokens": await self._output_tokens(answer)}
        return self.from_chat(answer, body)

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        chat = {**self._chat(body), "stream": True,
                "stream_options": {"include_usage": True}}  # spend is settled from it
        # The stream's first event may carry the input tokens (Anthropic's message_start);
        # the provider counts them only at the end.
        input_tokens = await self._input_tokens(chat)
        translator = self.translator(input_tokens, body)
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
            return self.to_chat(body, model)
        except (TypeError, AttributeError, ValueError):  # a field of a type the API never has
            raise InvalidRequest(f"{self.MALFORMED}; check the body against the API "
                                 "reference") from None
        except InvalidRequest as refused:
            raise Unsupported(f"{model.name} cannot take this request through the gateway's "
                              f"translation: {refused.message}", param=refused.param) from None

    async def _input_tokens(self, chat: dict[str, Any]) -> int:
        return (await meter.exact(tokens.chat_tally(chat))).for_model(self._adapter.model)

    async def _output_tokens(self, answer: dict[str, Any]) -> int:
        return (await meter.exact(tokens.output_tally(answer))).for_model(self._adapter.model)
