"""OpenAI Chat Completions, inbound (POST /v1/chat/completions): the gateway's first surface.

The gateway's own form is this API's, so parsing is validation and an answer is
sent as it is. A stream is relayed chunk by chunk; the usage chunk the gateway
asks every provider for on its own behalf is dropped unless the client asked
for it (`stream_options.include_usage`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from gateway import validation
from gateway.answer import Answer, Events
from gateway.errors import GatewayError
from gateway.request import GatewayRequest
from gateway.surfaces import openai


class OpenAIChat:
    name = "chat.completions"

    def parse(self, raw: bytes, headers: Mapping[str, str]) -> GatewayRequest:
        return GatewayRequest("chat", validation.parse_chat(raw))

    def answer(self, request: GatewayRequest, answer: Answer) -> bytes:
        return answer.encoded()

    async def events(self, request: GatewayRequest, events: Events) -> AsyncIterator[bytes]:
        include_usage = request.include_usage
        try:
            async for batch in events.batches:
                data = b"".join(openai.sse_event(shown) for chunk in batch
                                if (shown := _for_client(chunk, include_usage)) is not None)
                if data:
                    yield data
        except GatewayError as error:  # after the stream began: one more event says why
            yield openai.sse_event(openai.error_object(error))
            return
        finally:
            await events.batches.aclose()
        yield openai.DONE

    def error(self, error: GatewayError) -> bytes:
        return openai.error_json(error)


def _for_client(chunk: dict[str, Any], include_usage: bool) -> dict[str, Any] | None:
    if include_usage:
        return chunk
    if not chunk.get("choices"):
        return None  # the usage chunk the gateway asked for on its own behalf
    chunk.pop("usage", None)
    return chunk


SURFACE = OpenAIChat()
