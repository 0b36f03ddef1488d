"""The OpenAI Node SDK's Responses API (`client.responses.create`, `.parse`, `.stream`, pinned in
tests/clients) through the gateway to the mock providers, on a tier whose first model is an
OpenAI one (the body passes through to the provider's /v1/responses) and on one whose first
model is Claude (translated to Anthropic's Messages API and back).

tests/clients/responses_node.mjs runs one scenario per call and prints what the SDK returned
and every exchange it had; each body and stream event is checked against OpenAI's schema, and
each request's usage-log line names the Responses surface and the model that answered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.demo.mockprovider import MockProvider
from tests.conftest import KEY_A
from tests.responses_clients import (
    TIERS,
    NodeRun,
    assert_logged,
    run_node,
    token,
    tool_exchanges,
)


def run(gateway: str, tier: str, scenario: str, value: str) -> NodeRun:
    return run_node("responses_node.mjs", baseURL=f"{gateway}/v1", apiKey=KEY_A, model=tier,
                    scenario=scenario, token=value)


def provider_paths(mock: MockProvider) -> list[str]:
    return [r.path for r in mock.received]


def function_calls(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in summary["output"] if o["type"] == "function_call"]


@pytest.mark.parametrize("tier,model,provider_model,path", TIERS)
def test_create_answers_text(gateway: str, gateway_files: Path, mock: MockProvider, tier: str,
                             model: str, provider_model: str, path: str) -> None:
    value = token()

    node = run(gateway, tier, "text", value)

    answer = node.result
    assert answer["output_text"] == f"mock answer from {provider_model} to: Say hello {value}"
    assert answer["status"] == "completed" and answer["id"].startswith("resp_")
    assert answer["usage"]["input_tokens"] > 0 and answer["usage"]["output_tokens"] > 0
    assert provider_paths(mock) == [path]
    assert "Answer briefly." in json.dumps(mock.received[0].body)  # the instructions went on
    assert_logged(gateway_files, node, tier, model)


@pytest.mark.parametrize("tier,model,provider_model,path", TIERS)
def test_a_function_call_and_its_output_make_a_round_trip(
        gateway: str, gateway_files: Path, mock: MockProvider, tier: str, model: str,
        provider_model: str, path: str) -> None:
    value = token()

    node = run(gateway, tier, "tool", value)

    first, second = node.result["first"], node.result["second"]
    [call] = function_calls(first)
    assert (call["name"], json.loads(call["arguments"])) == ("get_weather", {"city": "Paris"})
    assert call["call_id"]
    assert second["output_text"] == (
        f"mock answer from {provider_model} after the tool said: sunny {value}")
    assert provider_paths(mock) == [path, path]
    calls, results = tool_exchanges(mock.received[1].body)
    [(name, arguments, call_id)] = calls
    assert (name, arguments) == ("get_weather", {"city": "Paris"})
    assert results == [(call_id, f"sunny {value}")]  # the result answers that very call
    assert_logged(gateway_files, node, tier, model)


@pytest.mark.parametrize("tier,model,provider_model,path", TIERS)
def test_parse_with_a_json_schema_format_gives_the_parsed_object(
        gateway: str, gateway_files: Path, mock: MockProvider, tier: str, model: str,
        provider_model: str, path: str) -> None:
    node = run(gateway, tier, "structured", token())

    parsed = node.result["output_parsed"]
    assert set(parsed) == {"name", "age"}
    assert isinstance(parsed["name"], str) and isinstance(parsed["age"], int)
    assert parsed["age"] >= 0
    assert provider_paths(mock) == [path]
    assert_logged(gateway_files, node, tier, model)


@pytest.mark.parametrize("tier,model,provider_model,path", TIERS)
def test_previous_response_id_continues_the_stored_conversation(
        gateway: str, gateway_files: Path, mock: MockProvider, tier: str, model: str,
        provider_model: str, path: str) -> None:
    value = token()

    node = run(gateway, tier, "chained", value)

    first, second = node.result["first"], node.result["second"]
    assert second["previous_response_id"] == first["id"]
    assert second["output_text"] == (
        f"mock answer from {provider_model} to: What did I ask you to remember?")
    assert provider_paths(mock) == [path, path]
    # the model saw the whole conversation: the first turn's question and its answer
    seen = json.dumps(mock.received[1].body)
    assert f"Remember {value}" in seen and first["output_text"] in seen
    assert "previous_response_id" not in mock.received[1].body
    assert_logged(gateway_files, node, tier, model)


@pytest.mark.parametrize("tier,model,provider_model,path", TIERS)
def test_a_function_output_continues_the_stored_response_that_called_it(
        gateway: str, gateway_files: Path, mock: MockProvider, tier: str, model: str,
        provider_model: str, path: str) -> None:
    value = token()

    node = run(gateway, tier, "chained_tool", value)

    first, second = node.result["first"], node.result["second"]
    assert [c["name"] for c in function_calls(first)] == ["get_weather"]
    assert second["previous_response_id"] == first["id"]
    assert second["output_text"] == (
        f"mock answer from {provider_model} after the tool said: sunny {value}")
    calls, results = tool_exchanges(mock.received[1].body)
    [(name, arguments, call_id)] = calls  # the stored call is sent before its output
    assert (name, arguments) == ("get_weather", {"city": "Paris"})
    assert results == [(call_id, f"sunny {value}")]
    assert_logged(gateway_files, node, tier, model)


def assert_ordered(events: list[dict[str, Any]]) -> None:
    """A Responses stream as the SDK saw it: created first, completed last, numbered from 0."""
    types = [e["type"] for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed", types
    assert [e["sequence_number"] for e in events] == list(range(len(events))), events


@pytest.mark.parametrize("tier,model,provider_model,path", TIERS)
def test_stream_events_add_up_to_the_final_response(
        gateway: str, gateway_files: Path, mock: MockProvider, tier: str, model: str,
        provider_model: str, path: str) -> None:
    value = token()

    node = run(gateway, tier, "stream", value)

    expected = f"mock answer from {provider_model} to: Stream hello {value}"
    assert_ordered(node.result["events"])
    assert node.result["deltas"] == expected
    assert node.result["final"]["output_text"] == expected
    assert node.result["final"]["status"] == "completed"
    assert node.result["final"]["usage"]["output_tokens"] > 0
    assert provider_paths(mock) == [path]
    assert mock.received[0].body.get("stream") is True
    assert_logged(gateway_files, node, tier, model)


@pytest.mark.parametrize("tier,model,provider_model,path", TIERS)
def test_a_streamed_function_call_arrives_whole(
        gateway: str, gateway_files: Path, mock: MockProvider, tier: str, model: str,
        provider_model: str, path: str) -> None:
    node = run(gateway, tier, "stream_tool", token())

    assert_ordered(node.result["events"])
    assert json.loads(node.result["argumentsDone"]) == {"city": "Paris"}
    [call] = function_calls(node.result["final"])
    assert (call["name"], json.loads(call["arguments"])) == ("get_weather", {"city": "Paris"})
    assert "response.function_call_arguments.delta" in [e["type"]
                                                        for e in node.result["events"]]
    assert_logged(gateway_files, node, tier, model)


@pytest.mark.parametrize("tier,model,provider_model,path", TIERS)
def test_a_stored_response_is_retrieved_listed_and_deleted(
        gateway: str, gateway_files: Path, mock: MockProvider, tier: str, model: str,
        provider_model: str, path: str) -> None:
    value = token()

    node = run(gateway, tier, "stored", value)

    created, retrieved = node.result["created"], node.result["retrieved"]
    assert retrieved["id"] == created["id"]
    assert retrieved["output_text"] == created["output_text"] == (
        f"mock answer from {provider_model} to: Keep this {value}")
    [item] = node.result["items"]
    assert (item["type"], item["role"]) == ("message", "user")
    assert f"Keep this {value}" in json.dumps(item["content"])
    assert node.result["afterDelete"] == {"name": "NotFoundError", "status": 404,
                                          "code": node.result["afterDelete"]["code"]}
    assert [r.path for r in mock.received] == [path]  # all but the first from the store
