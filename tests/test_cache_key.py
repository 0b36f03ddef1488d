"""The cache key recipe: every OpenAI field classified, and what does and does not change a key."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from anthropic.types import message_create_params as anthropic_params
from anthropic.types.beta import message_create_params as beta_params
from openai.types import embedding_create_params
from openai.types.chat import completion_create_params
from openai.types.responses import response_create_params

from gateway import cache
from gateway.auth import ANONYMOUS
from gateway.config import ApiKey, Model, Price, Provider
from gateway.schema import CacheSettings

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
    # The same model name and id at another address (a reload that moves it to a local
    # vLLM) is another model's answers.
    moved = dataclasses.replace(CHAIN[0], provider=dataclasses.replace(
        CHAIN[0].provider, api_base="http://vllm.internal:8000/v1"))
    assert key(ASK, chain=(moved, CHAIN[1])) != key(ASK)


def test_every_field_of_the_anthropic_messages_api_is_classified() -> None:
    """Beta fields included: Claude Code sends context_management and output_config."""
    sdk_fields = {*anthropic_params.MessageCreateParamsBase.__annotations__,
                  *beta_params.MessageCreateParamsBase.__annotations__, "stream"} - {"betas"}
    unclassified = sdk_fields - cache.MESSAGES_ANSWER_FIELDS - cache.MESSAGES_BOOKKEEPING_FIELDS
    assert not unclassified, f"classify in gateway/cache.py: {sorted(unclassified)}"
    assert not cache.MESSAGES_ANSWER_FIELDS & cache.MESSAGES_BOOKKEEPING_FIELDS
    ask = {"model": "smart", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    for name in cache.MESSAGES_ANSWER_FIELDS - {"messages", "max_tokens"}:
        assert key({**ask, name: 1}, kind="messages") != key(ask, kind="messages"), name
    for name in cache.MESSAGES_BOOKKEEPING_FIELDS - {"model"}:
        assert key({**ask, name: 1}, kind="messages") == key(ask, kind="messages"), name
    # The betas the provider is sent are in the key; the same words as chat are not a hit.
    beta = cache.digest("messages", "fast", CHAIN, ask, {"anthropic-beta": "x"})
    assert beta != key(ask, kind="messages") != key(ask)


def test_every_field_of_the_responses_api_is_classified() -> None:
    """Codex's client_metadata (not in the SDK) included."""
    sdk_fields = {*response_create_params.ResponseCreateParamsBase.__annotations__, "stream",
                  "client_metadata"}
    answer, bookkeeping = cache.RESPONSES_ANSWER_FIELDS, cache.RESPONSES_BOOKKEEPING_FIELDS
    unclassified = sdk_fields - answer - bookkeeping
    assert not unclassified, f"classify in gateway/cache.py: {sorted(unclassified)}"
    assert not answer & bookkeeping
    ask = {"model": "fast", "input": "hi"}
    for name in answer - {"input"}:
        assert key({**ask, name: 1}, kind="responses") != key(ask, kind="responses"), name
    for name in bookkeeping - {"model"}:
        assert key({**ask, name: 1}, kind="responses") == key(ask, kind="responses"), name
    assert key(ask, kind="responses") != key({"model": "fast", "input": "hi!"},
                                              kind="responses")


def test_the_requested_name_and_the_kind_are_in_the_key() -> None:
    assert key(ASK, requested="smart") != key(ASK)
    assert key(ASK, kind="embeddings") != key(ASK)


def api_key(name: str, cache_scope: str | None = None) -> ApiKey:
    return ApiKey(name=name, digest=bytes(32), daily_budget_usd=None, allow=None,
                  cache_scope=cache_scope)


SHARED, PER_KEY = CacheSettings(scope="shared"), CacheSettings(scope="key")


def reads(settings: CacheSettings, caller: ApiKey, cache_control: str | None = None,
          ) -> cache.Lookup:
    return cache.plan(settings, cache_control, caller, "chat", "fast", CHAIN, ASK)


@pytest.mark.parametrize("first, second", [
    (api_key("x"), api_key("y")),  # two keys, per key
    (api_key("x"), api_key("y", cache_scope="x")),  # a key and a group of the same name
    (ANONYMOUS, api_key("anonymous")),  # keyless callers and a key named like them
])
def test_different_callers_never_share_their_own_scope(first: ApiKey, second: ApiKey) -> None:
    for settings in (SHARED, PER_KEY):
        assert reads(settings, first).reads[0] != reads(settings, second).reads[0]
    assert not set(reads(PER_KEY, first).reads) & set(reads(PER_KEY, second).reads)


def test_a_scope_several_keys_read_is_read_after_the_callers_own_and_never_overwritten(
        ) -> None:
    for settings, a, b in ((SHARED, api_key("a"), api_key("b")),
                           (PER_KEY, api_key("a", "g"), api_key("b", "g"))):
        mine, theirs = reads(settings, a), reads(settings, b)
        assert mine.reads[1] == theirs.reads[1] == mine.writes and not mine.overwrites
        assert mine.reads[0] != theirs.reads[0]
        refresh = reads(settings, a, "no-cache")
        assert (refresh.reads, refresh.writes, refresh.overwrites) == ((), mine.reads[0], True)


def test_store_keys_are_versioned_and_name_no_key() -> None:
    lookup = reads(SHARED, api_key("team-a"))
    assert all(k.startswith("gw:cache:v2:") and "team-a" not in k for k in lookup.reads)
