"""The Anthropic adapter's native capability, against the mock provider: a Messages body
goes to Anthropic as the client wrote it (only `model` becomes the provider's id), and
Anthropic's message, or its events, come back as Anthropic sent them (only `model`
becomes the router.yaml name). Nothing the OpenAI translation drops is lost here:
cache_control with its ttl, signed thinking blocks, top_k, service_tier, metadata."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from gateway.config import Config, parse_config
from gateway.demo.mockprovider import MockProvider, Step
from gateway.providers.adapters import Adapters
from gateway.providers.base import ANTHROPIC_MESSAGES
from tests.conftest import sha

PROVIDER_MODEL = "claude-sonnet-4-5"
BODY: dict[str, Any] = {
    "model": "claude",
    "max_tokens": 512,
    "system": [{"type": "text", "text": "Answer in one word.",
                "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "What is 2+2?",
                                      "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Two and two.", "signature": "EqQBCkYIBhgCIkD="},
            {"type": "text", "text": "Four."}]},
        {"role": "user", "content": "And 3+3?"},
    ],
    "thinking": {"type": "enabled", "budget_tokens": 256},
    "top_k": 5,
    "service_tier": "standard_only",
    "metadata": {"user_id": "user-7"},
}
MESSAGE: dict[str, Any] = {
    "id": "msg_01native", "type": "message", "role": "assistant", "model": PROVIDER_MODEL,
    "content": [{"type": "thinking", "thinking": "Three and three.",
                 "signature": "ErUBCkYIBxgCIkBz="},
                {"type": "text", "text": "Six."}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 9, "cache_creation_input_tokens": 40,
              "cache_read_input_tokens": 100, "service_tier": "standard",
              "cache_creation": {"ephemeral_5m_input_tokens": 0,
                                 "ephemeral_1h_input_tokens": 40}},
}
EVENTS: list[dict[str, Any]] = [
    {"type": "message_start", "message": {**MESSAGE, "content": [], "stop_reason": None,
                                          "usage": {**MESSAGE["usage"], "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0,
     "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "content_block_delta", "index": 0,
     "delta": {"type": "thinking_delta", "thinking": "Three and three."}},
    {"type": "content_block_delta", "index": 0,
     "delta": {"type": "signature_delta", "signature": "ErUBCkYIBxgCIkBz="}},
    {"type": "content_block_stop", "index": 0},
    {"type": "ping"},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Six."}},
    {"type": "content_block_stop", "index": 1},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
     "usage": {"output_tokens": 9}},
    {"type": "message_stop"},
]


def config_for(mock: MockProvider) -> Config:
    text = (f"providers:\n  anthropic: {{api_key: sk-ant-native, api_base: '{mock.base_url}'}}\n"  # type: ignore[attr-defined]
            f"  openai: {{api_key: sk-openai-native, api_base: '{mock.base_url}/v1'}}\n"  # type: ignore[attr-defined]
            f"models:\n  claude: {{provider: anthropic, model: {PROVIDER_MODEL}}}\n"
            "  gpt: {provider: openai, model: gpt-4o-mini}\n"
            "tiers: {smart: [claude]}\n"
            f"keys: [{{name: team, key_sha256: {sha('sk-native')}}}]\n"
            "settings: {redis_url: 'redis://127.0.0.1:1'}\n")
    return parse_config(text.encode(), Path("router.yaml"), environ={})


def sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(f"event: {e['type']}\n".encode() + b"data: " + orjson.dumps(e) + b"\n\n"
                    for e in events)


def test_a_messages_body_reaches_anthropic_as_written_and_its_answer_comes_back_whole(
        mock: MockProvider) -> None:
    config = config_for(mock)
    mock.script(PROVIDER_MODEL, Step(raw=orjson.dumps(MESSAGE)))

    async def call() -> dict[str, Any]:
        adapters = Adapters(config)
        try:
            native = adapters.of(config)["claude"].native(ANTHROPIC_MESSAGES, {})
            assert native is not None
            return await native.complete(BODY)
        finally:
            await adapters.close()

    answer = asyncio.run(call())

    [received] = mock.calls(PROVIDER_MODEL)
    assert received.path == "/v1/messages"
    assert received.body == {**BODY, "model": PROVIDER_MODEL}
    assert received.headers["x-api-key"] == "sk-ant-native"
    assert received.headers["anthropic-version"]
    assert answer == {**MESSAGE, "model": "claude"}


def test_a_streamed_messages_body_gets_anthropics_own_events_back(mock: MockProvider) -> None:
    config = config_for(mock)
    mock.script(PROVIDER_MODEL, Step(raw=sse(EVENTS)))

    async def call() -> list[dict[str, Any]]:
        adapters = Adapters(config)
        try:
            native = adapters.of(config)["claude"].native(ANTHROPIC_MESSAGES, {})
            assert native is not None
            return [event async for event in native.stream({**BODY, "stream": True})]
        finally:
            await adapters.close()

    events = asyncio.run(call())

    [received] = mock.calls(PROVIDER_MODEL)
    assert received.body == {**BODY, "model": PROVIDER_MODEL, "stream": True}
    start = {**EVENTS[0], "message": {**EVENTS[0]["message"], "model": "claude"}}
    assert events == [start, *EVENTS[1:]]


def test_only_the_anthropic_adapter_takes_a_messages_body_as_is(mock: MockProvider) -> None:
    config = config_for(mock)

    async def capabilities() -> dict[str, bool]:
        adapters = Adapters(config)
        try:
            return {name: adapter.native(ANTHROPIC_MESSAGES, {}) is not None
                    for name, adapter in adapters.of(config).items()}
        finally:
            await adapters.close()

    assert asyncio.run(capabilities()) == {"claude": True, "gpt": False}
