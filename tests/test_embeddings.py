"""POST /v1/embeddings end to end: the OpenAI SDK -> a real gateway -> the mock provider."""

from __future__ import annotations

import base64
import struct
from typing import Any

import httpx
import openai
import pytest

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import KEY_A, KEY_B


def vector(embedding: list[float] | str) -> list[float]:
    if isinstance(embedding, str):  # base64 of little-endian float32s, as OpenAI sends it
        raw = base64.b64decode(embedding)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return embedding


# The SDK asks for base64 on its own and decodes it; asked explicitly, it hands it over as is.
@pytest.mark.parametrize("encoding_format", [openai.NOT_GIVEN, "float", "base64"])
@pytest.mark.parametrize("model, provider_model", [("embed", "text-embedding-3-small"),
                                                   ("mistral-embed", "mistral-embed")])
def test_embeddings_are_the_providers_vectors_in_every_encoding(
        client: openai.OpenAI, mock: MockProvider, model: str, provider_model: str,
        encoding_format: Any) -> None:
    raw = client.embeddings.with_raw_response.create(
        model=model, input=["one two", "three"], encoding_format=encoding_format)
    reply = raw.parse()
    assert raw.headers["x-gateway-model"] == model
    assert reply.model == model
    assert [d.index for d in reply.data] == [0, 1]
    assert vector(reply.data[1].embedding) == pytest.approx([0.2, 0.2, 0.3, 0.4])
    assert reply.usage.prompt_tokens == 3
    sent = mock.calls(provider_model)[-1]
    assert sent.path == "/v1/embeddings"
    assert sent.body["input"] == ["one two", "three"]


def test_embeddings_fall_back_along_the_tier(client: openai.OpenAI, mock: MockProvider) -> None:
    mock.script("text-embedding-3-small", Step(status=503, error_message="overloaded"))
    raw = client.embeddings.with_raw_response.create(model="vectors", input="hello")
    assert raw.headers["x-gateway-model"] == "embed-backup"
    assert raw.headers["x-gateway-attempts"] == "2"
    assert len(raw.parse().data) == 1


def test_a_chat_only_provider_refuses_embeddings_with_a_400_that_says_why(
        client: openai.OpenAI, mock: MockProvider) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="claude", input="hello")
    assert "Anthropic serves no embeddings" in caught.value.message
    assert mock.calls() == []


def test_the_keys_allow_list_applies_to_embeddings(connect: Any) -> None:
    with pytest.raises(openai.PermissionDeniedError):
        connect(api_key=KEY_B).embeddings.create(model="embed", input="hello")


@pytest.mark.parametrize("body, param", [
    ({"model": "embed"}, "input"),
    ({"model": "embed", "input": ""}, "input"),
    ({"model": "embed", "input": []}, "input"),
    ({"model": "embed", "input": [{"text": "x"}]}, "input"),
    ({"model": "embed", "input": ["a", 1]}, "input"),
    ({"model": "embed", "input": "a", "dimensions": 0}, "dimensions"),
    ({"model": "embed", "input": "a", "encoding_format": "hex"}, "encoding_format"),
    ({"input": "a"}, "model"),
])
def test_an_invalid_embeddings_body_is_a_400_naming_the_field(
        gateway: str, mock: MockProvider, body: dict[str, Any], param: str) -> None:
    response = httpx.post(f"{gateway}/v1/embeddings", json=body,
                          headers={"authorization": f"Bearer {KEY_A}"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert mock.calls() == []


def test_token_id_inputs_pass_through(client: openai.OpenAI, mock: MockProvider) -> None:
    client.embeddings.create(model="embed", input=[[1, 2, 3], [4, 5]])
    assert mock.calls("text-embedding-3-small")[-1].body["input"] == [[1, 2, 3], [4, 5]]
