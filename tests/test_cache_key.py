"""The cache key recipe: every OpenAI field classified, and what does and does not change a key."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types import embedding_create_params
from openai.types.chat import completion_create_params

from gateway import cache
from gateway.config import Model, Price, Provider

ASK = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}


def model(name: str, provider_model: str, provider_type: str = "openai") -> Model:
    provider = Provider(name=provider_type, type=provider_type, api_key="sk-x", api_base=None,
                        api_version=None, headers={}, unusable=None)
    return Model(name=name, provider=provider, provider_model=provider_model,
                 price=Price(1, 2, None), max_output_tokens=None)


CHAIN = (model("gpt", "gpt-4o-mini"), model("llama", "llama3.2", "ollama"))


def key(body: dict[str, Any], requested: str = "fast", chain: tuple[Model, ...] = CHAIN,
        kind: cache.Kind = "chat") -> str:
    return cache.digest(kind, requested, chain, body)


@pytest.mark.parametrize("kind, sdk_fields", [
    ("chat", {*completion_create_params.CompletionCreateParamsBase.__annotations__, "stream"}),
    ("embeddings", set(embedding_create_params.EmbeddingCreateParams.__annotations__)),
])
def test_every_field_of_the_openai_sdk_is_classified(kind: str, sdk_fields: set[str]) -> None:
    answer, bookkeeping = {
        "chat": (cache.CHAT_ANSWER_FIELDS, cache.CHAT_BOOKKEEPING_FIELDS),
        "embeddings": (cache.EMBEDDINGS_ANSWER_FIELDS, cache.EMBEDDINGS_BOOKKEEPING_FIELDS),
    }[kind]
    unclassified = sdk_fields - answer - bookkeeping
    assert not unclassified, f"classify in gateway/cache.py, as answer or bookkeeping: " \
                             f"{sorted(unclassified)}"
    assert not answer & bookkeeping


def test_nested_key_order_does_not_change_the_key() -> None:
    first = {**ASK, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}}
    second = {"response_format": {"json_schema": {"schema": {"properties": {"a": {
        "type": "string"}}, "type": "object"}, "name": "x"}, "type": "json_schema"}, **ASK}
    assert key(first) == key(second)


def test_every_field_but_bookkeeping_is_in_the_key() -> None:
    for name in cache.CHAT_ANSWER_FIELDS | {"some_provider_field"}:
        assert key({**ASK, name: 1}) != key(ASK), name
    for name in cache.CHAT_BOOKKEEPING_FIELDS - {"model"}:
        assert key({**ASK, name: 1}) == key(ASK), name


def test_a_rerouted_tier_does_not_share_entries_with_its_old_route() -> None:
    rerouted = (CHAIN[1], CHAIN[0])
    assert key(ASK, chain=rerouted) != key(ASK)
    assert key(ASK, chain=(model("gpt", "gpt-4o"), CHAIN[1])) != key(ASK)


def test_the_requested_name_and_the_kind_are_in_the_key() -> None:
    assert key(ASK, requested="smart") != key(ASK)
    assert key(ASK, kind="embeddings") != key(ASK)
