"""OpenAI Embeddings, inbound (POST /v1/embeddings). Never streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from gateway import validation
from gateway.answer import Answer, Events
from gateway.errors import GatewayError
from gateway.request import GatewayRequest
from gateway.surfaces import openai


class OpenAIEmbeddings:
    name = "embeddings"

    def parse(self, raw: bytes, headers: Mapping[str, str]) -> GatewayRequest:
        return GatewayRequest("embeddings", validation.parse_embeddings(raw))

    def answer(self, request: GatewayRequest, answer: Answer) -> bytes:
        return answer.encoded()

    def events(self, request: GatewayRequest, events: Events) -> AsyncIterator[bytes]:
        raise TypeError("embeddings are never streamed")

    def error(self, error: GatewayError) -> bytes:
        return openai.error_json(error)


SURFACE = OpenAIEmbeddings()
