"""Where the gateway's OpenAI surface departed from OpenAI's own description of it, fixed.

Every answer every test receives is checked against OpenAI's schema (tests/conftest.py);
these tests name the cases that schema found, and the ones it cannot see: a route that
was missing, and parameters a Claude model cannot honour.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import KEY_A, KEY_B, ROUTER_YAML, RedisServer, gateway_running, sha

AUTH = {"authorization": f"Bearer {KEY_A}"}
# The session's configuration, with the cache on and a chain that falls back from an
# OpenAI model to a Claude one.
CACHED_YAML = (ROUTER_YAML.replace("cache: {{enabled: false}}", "cache: {{enabled: true}}")
               .replace("tiers:\n", "tiers:\n  openai-then-claude: [gpt-backup, claude]\n"))


@pytest.fixture(scope="module")
def cached(mock: MockProvider, redis_server: RedisServer,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("conformance")
    config = tmp / "router.yaml"
    config.write_text(CACHED_YAML.format(mock=mock.base_url, digest_a=sha(KEY_A),  # type: ignore[attr-defined]
                                         digest_b=sha(KEY_B), tmp=tmp,
                                         redis_url=redis_server.url))
    with gateway_running(config, Path(tmp) / "gateway.log",
                         env={"TEST_OPENAI_KEY": "sk-openai-test"}) as base_url:
        yield base_url


def fresh() -> list[dict[str, str]]:
    """A prompt no other test sends: nothing comes from another test's cache entry."""
    return [{"role": "user", "content": f"Tell me about {uuid.uuid4().hex}"}]


def post(base_url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/chat/completions", json=body, headers=AUTH, timeout=10)


def test_a_claude_answer_says_it_refused_nothing(gateway: str) -> None:
    reply = post(gateway, {"model": "claude", "messages": fresh()})
    assert reply.status_code == 200
    message = reply.json()["choices"][0]["message"]
    assert "refusal" in message and message["refusal"] is None
    assert message["content"].startswith("mock answer from claude-sonnet-4-5")


@pytest.mark.parametrize("model", ["fast", "smart"])
def test_an_answer_replayed_from_a_streamed_cache_entry_says_it_refused_nothing(
        cached: str, model: str) -> None:
    messages = fresh()
    streamed = httpx.post(f"{cached}/v1/chat/completions", headers=AUTH, timeout=10,
                          json={"model": model, "messages": messages, "stream": True})
    assert streamed.headers["x-gateway-cache"] == "miss"
    replayed = post(cached, {"model": model, "messages": messages})
    assert replayed.headers["x-gateway-cache"] == "hit"
    message = replayed.json()["choices"][0]["message"]
    assert "refusal" in message and message["refusal"] is None


@pytest.mark.parametrize("name", ["fast", "gpt"])
def test_models_retrieve_answers_a_tier_or_model_the_key_may_use(
        connect: Callable[..., openai.OpenAI], name: str) -> None:
    model = connect(api_key=KEY_B).models.retrieve(name)
    assert (model.id, model.object, model.owned_by) == (name, "model", "gateway")
    listed = {m.id for m in connect(api_key=KEY_B).models.list()}
    assert name in listed


def test_models_retrieve_refuses_as_a_chat_request_would(
        gateway: str, connect: Callable[..., openai.OpenAI]) -> None:
    client = connect(api_key=KEY_B)
    for name, error in (("no-such-model", openai.NotFoundError),
                        ("smart", openai.PermissionDeniedError)):
        with pytest.raises(error) as retrieved:
            client.models.retrieve(name)
        with pytest.raises(error) as chatted:
            client.chat.completions.create(model=name, messages=fresh())  # type: ignore[arg-type]
        assert retrieved.value.body == chatted.value.body
    unauthenticated = httpx.get(f"{gateway}/v1/models/fast", timeout=5)
    assert unauthenticated.status_code == 401


CLAUDE_CANNOT = [{"logprobs": True}, {"logprobs": True, "top_logprobs": 2}, {"n": 2}]


@pytest.mark.parametrize("asked", CLAUDE_CANNOT, ids=["logprobs", "top_logprobs", "n"])
def test_a_claude_model_refuses_what_it_cannot_honour_naming_the_parameter(
        gateway: str, mock: MockProvider, asked: dict[str, Any]) -> None:
    reply = post(gateway, {"model": "claude", "messages": fresh(), **asked})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == next(iter(asked))
    assert "Anthropic" in error["message"] and "remove" in error["message"]
    assert mock.calls("claude-sonnet-4-5") == []


@pytest.mark.parametrize("asked", CLAUDE_CANNOT, ids=["logprobs", "top_logprobs", "n"])
def test_a_fallback_from_openai_to_claude_refuses_rather_than_drops_what_was_asked(
        cached: str, mock: MockProvider, asked: dict[str, Any]) -> None:
    mock.script("gpt-backup", Step(status=529))
    reply = post(cached, {"model": "openai-then-claude", "messages": fresh(), **asked})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == next(iter(asked))
    assert mock.calls("claude-sonnet-4-5") == []
    # with the OpenAI model up, the same request is answered in full
    answered = post(cached, {"model": "openai-then-claude", "messages": fresh(), **asked})
    assert answered.status_code == 200
    choices = answered.json()["choices"]
    assert len(choices) == asked.get("n", 1)
    if asked.get("logprobs"):
        assert choices[0]["logprobs"]["content"]
