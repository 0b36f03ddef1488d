"""Fuzzing the request schema against a live gateway: whatever arrives, an OpenAI-shaped answer.

Hypothesis builds bodies shaped like chat and embeddings requests with the wrong
type anywhere (and bytes that are not JSON at all), sends them through the
gateway to the mock providers (OpenAI, Anthropic, Ollama and Groq wire formats),
and checks each answer: never a 500, every refusal OpenAI-shaped with a message,
and the process still serving at the end. Bounded: a few hundred bodies.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import KEY_A

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 250)), deadline=None,
                derandomize=not os.environ.get("FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
# A provider's client error is passed on with its status; 413 for bodies over max_body_mb.
ACCEPTED = {200, 400, 404, 413, 422}

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=False) | st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                           max_leaves=12)
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function",
                         "robot", ""]) | json_values
parts = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "input_audio",
                                                        "file", "?"]) | json_values},
                              optional={"text": st.text(max_size=30) | json_values,
                                        "image_url": json_values})
contents = st.text(max_size=50) | st.lists(parts | json_values, max_size=3) | json_values
messages = st.fixed_dictionaries({"role": roles},
                                 optional={"content": contents, "name": json_values,
                                           "tool_calls": json_values,
                                           "tool_call_id": json_values})
good_messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant"]),
     "content": st.text(min_size=1, max_size=40) | st.lists(parts, min_size=1, max_size=2)}),
    min_size=1, max_size=3)
models = st.sampled_from(["fast", "smart", "gpt", "claude", "llama-local", "llama-groq",
                          "no-such-model"]) | json_values
chat_bodies = st.fixed_dictionaries(
    {"model": models,
     "messages": good_messages | st.lists(messages | json_values, max_size=3) | json_values},
    optional={name: json_values for name in (
        "max_tokens", "max_completion_tokens", "n", "stream", "stream_options", "temperature",
        "top_p", "stop", "tools", "tool_choice", "response_format", "seed", "user")}
    | {"max_tokens": st.integers(-5, 10**12), "stream": st.booleans(),
       "stream_options": st.fixed_dictionaries({}, optional={"include_usage": json_values})})
# Well-formed messages, anything in the fields the gateway forwards or translates unread.
provider_bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(["fast", "smart", "claude", "llama-local", "llama-groq"]),
     "messages": good_messages, "stream": st.booleans()},
    optional={name: json_values for name in (
        "temperature", "top_p", "stop", "tools", "tool_choice", "response_format", "seed",
        "user", "logit_bias", "presence_penalty", "metadata", "parallel_tool_calls")})
embedding_bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(["vectors", "embed", "claude", "nope"]) | json_values,
     "input": st.text(max_size=30) | st.lists(st.text(max_size=10) | st.integers(), max_size=3)
     | json_values},
    optional={"dimensions": json_values, "encoding_format": json_values, "user": json_values})


@pytest.fixture(scope="module")
def http(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, timeout=30,
                      headers={"authorization": f"Bearer {KEY_A}"}) as client:
        yield client


def check(response: httpx.Response, sent: Any) -> None:
    assert response.status_code in ACCEPTED, (response.status_code, response.text, sent)
    if response.status_code == 200:
        if response.headers["content-type"].startswith("text/event-stream"):
            assert response.text.rstrip().endswith(("data: [DONE]", "}")), response.text
        else:
            assert isinstance(response.json(), dict)
        return
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error


@FUZZ
@given(body=chat_bodies)
def test_any_chat_body_gets_an_answer_or_an_openai_shaped_refusal(http: httpx.Client,
                                                                 body: dict[str, Any]) -> None:
    check(http.post("/v1/chat/completions", content=json.dumps(body)), body)


@FUZZ
@given(body=provider_bodies)
def test_well_formed_messages_with_any_options_get_an_answer_or_a_clear_refusal(
        http: httpx.Client, body: dict[str, Any]) -> None:
    check(http.post("/v1/chat/completions", content=json.dumps(body)), body)


@FUZZ
@given(body=embedding_bodies)
def test_any_embeddings_body_gets_an_answer_or_an_openai_shaped_refusal(
        http: httpx.Client, body: dict[str, Any]) -> None:
    check(http.post("/v1/embeddings", content=json.dumps(body)), body)


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200) | json_values.map(lambda value: json.dumps(value).encode()))
def test_any_bytes_get_a_400_or_an_answer(http: httpx.Client, raw: bytes) -> None:
    check(http.post("/v1/chat/completions", content=raw), raw)


def test_the_gateway_still_serves_after_the_fuzzing(http: httpx.Client) -> None:
    assert http.get("/ready").json()["status"] == "ready"
    body = {"model": "fast", "messages": [{"role": "user", "content": "still there?"}]}
    assert http.post("/v1/chat/completions", json=body).json()["choices"]
