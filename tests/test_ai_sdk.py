"""The Vercel AI SDK (`ai` with `@ai-sdk/openai`, pinned in tests/clients) through the gateway:
its default OpenAI provider, `createOpenAI({baseURL, apiKey})('fast')`, speaks the Responses
API (AI SDK 5 and later), so `generateText` and `streamText` reach POST /v1/responses. On a
tier whose first model is OpenAI (passed through) and one whose first model is Claude
(translated): text, and a tool the SDK runs itself (`execute`) with `stopWhen` letting it send
the result back for the answer.

tests/clients/ai_sdk.mjs runs one scenario per call and prints what the SDK returned and every
exchange it had, checked against OpenAI's schema (tests/node_clients.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.demo.mockprovider import MockProvider
from tests.conftest import KEY_A
from tests.responses_clients import TIERS, NodeRun, run_node, token
from tests.responses_clients import assert_logged as logged


def run(gateway: str, tier: str, scenario: str, value: str) -> NodeRun:
    return run_node("ai_sdk.mjs", baseURL=f"{gateway}/v1", apiKey=KEY_A, model=tier,
                    scenario=scenario, token=value)


def assert_logged(gateway_files: Path, node: NodeRun, tier: str, model: str) -> None:
    """Every request the SDK made went to the Responses surface and was answered by `model`."""
    assert [t["url"].rsplit("/v1", 1)[-1] for t in node.traffic] == ["/responses"] * len(
        node.traffic)
    logged(gateway_files, node, tier, model)


def assert_tool_round_trip(result: dict[str, Any], provider_model: str, value: str) -> None:
    """The SDK called the tool the mock asked for, ran it, and got an answer quoting it."""
    expected = f"mock answer from {provider_model} after the tool said: sunny in Paris {value}"
    called, answered = result["steps"]
    assert called["finishReason"] == "tool-calls"
    assert called["toolCalls"] == [{"toolName": "get_weather", "input": {"city": "Paris"}}]
    assert called["toolResults"] == [{"toolName": "get_weather",
                                      "output": f"sunny in Paris {value}"}]
    assert answered["finishReason"] == "stop" and answered["text"] == expected
    assert result["text"] == expected


@pytest.mark.parametrize("tier,model,provider_model,path", TIERS)
def test_generate_text_answers(gateway: str, gateway_files: Path, mock: MockProvider,
                               tier: str, model: str, provider_model: str, path: str) -> None:
    value = token()

    node = run(gateway, tier, "generate", value)

    assert node.result["text"] == f"mock answer from {provider_model} to: Say hello {value}"
    assert node.result["finishReason"] == "stop"
    assert node.result["usage"]["inputTokens"] > 0 and node.result["usage"]["outputTokens"] > 0
    assert [r.path for r in mock.received] == [path]
    assert_logged(gateway_files, node, tier, model)


@pytest.mark.parametrize("tier,model,provider_model,path", TIERS)
def test_generate_text_runs_a_tool_and_answers_with_its_result(
        gateway: str, gateway_files: Path, mock: MockProvider, tier: str, model: str,
        provider_model: str, path: str) -> None:
    value = token()

    node = run(gateway, tier, "generate_tool", value)

    assert_tool_round_trip(node.result, provider_model, value)
    assert [r.path for r in mock.received] == [path, path]
    assert_logged(gateway_files, node, tier, model)


@pytest.mark.parametrize("tier,model,provider_model,path", TIERS)
def test_stream_text_streams_the_answer(gateway: str, gateway_files: Path, mock: MockProvider,
                                        tier: str, model: str, provider_model: str,
                                        path: str) -> None:
    value = token()

    node = run(gateway, tier, "stream", value)

    expected = f"mock answer from {provider_model} to: Stream hello {value}"
    assert node.result["text"] == expected and "".join(node.result["pieces"]) == expected
    assert len(node.result["pieces"]) > 1  # it came in pieces, not at the end
    assert node.result["finishReason"] == "stop"
    assert node.result["usage"]["outputTokens"] > 0
    assert [r.path for r in mock.received] == [path]
    assert mock.received[0].body.get("stream") is True
    assert_logged(gateway_files, node, tier, model)


@pytest.mark.parametrize("tier,model,provider_model,path", TIERS)
def test_stream_text_runs_a_tool_and_streams_the_answer_with_its_result(
        gateway: str, gateway_files: Path, mock: MockProvider, tier: str, model: str,
        provider_model: str, path: str) -> None:
    value = token()

    node = run(gateway, tier, "stream_tool", value)

    assert_tool_round_trip(node.result, provider_model, value)
    assert "".join(node.result["pieces"]) == node.result["text"]
    assert [r.path for r in mock.received] == [path, path]
    assert_logged(gateway_files, node, tier, model)


@pytest.mark.parametrize("tier,model,provider_model,path", TIERS)
def test_an_output_object_fits_its_schema(gateway: str, gateway_files: Path, mock: MockProvider,
                                          tier: str, model: str, provider_model: str,
                                          path: str) -> None:
    node = run(gateway, tier, "object", token())

    assert node.result["output"] == {"name": f"from {provider_model}",
                                     "age": node.result["output"]["age"]}
    assert isinstance(node.result["output"]["age"], int) and node.result["output"]["age"] >= 0
    assert [r.path for r in mock.received] == [path]
    assert_logged(gateway_files, node, tier, model)


def carried(received: Any, first_answer: str) -> bool:
    """Whether a provider request carries the first answer: its text (any wire format), or,
    to an OpenAI model, a reference to the output item the provider itself stored."""
    body = received.body
    referenced = [i for i in body.get("input") or [] if isinstance(i, dict)
                  and i.get("type") == "item_reference" and str(i.get("id")).startswith("msg_")
                  and not str(i.get("id")).startswith("msg_gw_")]
    return first_answer in json.dumps(body) or bool(referenced)


@pytest.mark.parametrize("tier,model,provider_model,path", TIERS)
def test_a_chat_apps_second_turn_is_answered_by_the_tier_with_the_first_answer_in_it(
        gateway: str, gateway_files: Path, mock: MockProvider, tier: str, model: str,
        provider_model: str, path: str) -> None:
    """The SDK's way to continue a chat: the first turn's `response.messages` sent back with
    the next question. With `store` on (its default) it sends the earlier answer as an
    `item_reference` to the stored output item; the tier's own model must still answer, and
    it must see that answer (the gateway stored it: its ids are the gateway's on a translated
    tier, the provider's on a native one)."""
    value = token()

    node = run(gateway, tier, "conversation", value)

    assert node.result["first"] == f"mock answer from {provider_model} to: Remember {value}"
    assert node.result["second"] == (
        f"mock answer from {provider_model} to: What did I ask you to remember?")
    assert [r.path for r in mock.received] == [path, path]
    assert carried(mock.received[1], node.result["first"]), mock.received[1].body
    assert_logged(gateway_files, node, tier, model)
