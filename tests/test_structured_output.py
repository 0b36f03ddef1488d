"""Structured output on the demo's OpenAI tier, through the libraries people use for it.

The mock behind `gateway demo` honours `response_format`, `n`, `stop`, `logprobs` and
parallel tool calls in OpenAI's wire format, so these libraries get answers they accept:
the `openai` SDK's `parse` and pydantic-ai, each validating a pydantic model. (instructor
cannot be installed beside the locked `openai` 3: every release caps openai below 3 or
jiter below 0.15, which openai 3 needs.)
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from enum import StrEnum
from typing import Any, Literal

import jsonschema
import openai
import pydantic
import pytest
from pydantic_ai import Agent, NativeOutput, ToolOutput
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from gateway.demo.demo import DEMO_KEY
from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import demo_running, free_port

TIER = "fast"  # the demo's OpenAI tier: gpt-4o-mini first
HELLO = [{"role": "user", "content": "Describe a city"}]


class Size(StrEnum):
    small = "small"
    large = "large"


class District(pydantic.BaseModel):
    name: str
    population: int = pydantic.Field(ge=1000)


class City(pydantic.BaseModel):
    name: str = pydantic.Field(min_length=3)
    country: str
    size: Size
    kind: Literal["capital", "town"]
    area_km2: float = pydantic.Field(gt=0, lt=10_000)
    districts: list[District] = pydantic.Field(min_length=2)
    twin: str | None


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    port = free_port()
    with demo_running([sys.executable, "-m", "gateway", "demo", "--port", str(port)]):
        yield f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def demo_client(demo_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=demo_url, api_key=DEMO_KEY, max_retries=0) as client:
        yield client


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_the_sdks_parse_gets_a_pydantic_model_from_the_demo(demo_client: openai.OpenAI,
                                                           stream: bool) -> None:
    if stream:
        with demo_client.chat.completions.stream(model=TIER, messages=HELLO,  # type: ignore[arg-type]
                                                 response_format=City) as events:
            completion = events.get_final_completion()
    else:
        completion = demo_client.chat.completions.parse(model=TIER, messages=HELLO,  # type: ignore[arg-type]
                                                        response_format=City)
    city = completion.choices[0].message.parsed
    assert isinstance(city, City) and len(city.districts) >= 2
    assert city.size in Size and city.districts[0].population >= 1000


def test_the_sdks_parse_gets_typed_arguments_of_a_strict_tool(demo_client: openai.OpenAI) -> None:
    completion = demo_client.chat.completions.parse(
        model=TIER, messages=HELLO,  # type: ignore[arg-type]
        tools=[openai.pydantic_function_tool(City), openai.pydantic_function_tool(District)])
    calls = completion.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["City", "District"]  # parallel calls
    assert isinstance(calls[0].function.parsed_arguments, City)
    assert isinstance(calls[1].function.parsed_arguments, District)


@pytest.mark.parametrize("mode", ["tool", "native"])
def test_pydantic_ai_gets_a_pydantic_model_from_the_demo(demo_url: str, mode: str) -> None:
    output: Any = ToolOutput(City) if mode == "tool" else NativeOutput(City)

    async def run() -> Any:
        async with openai.AsyncOpenAI(base_url=demo_url, api_key=DEMO_KEY,
                                      max_retries=0) as client:
            model = OpenAIChatModel(TIER, provider=OpenAIProvider(openai_client=client))
            return (await Agent(model, output_type=output).run("Describe a city")).output

    assert isinstance(asyncio.run(run()), City)


# --- the mock itself, straight, streamed and not -------------------------------------

@pytest.fixture
def oai(mock: MockProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{mock.base_url}/v1", api_key="k",  # type: ignore[attr-defined]
                       max_retries=0) as client:
        yield client


def streamed(oai: openai.OpenAI, **body: Any) -> dict[int, dict[str, Any]]:
    """Per choice index: its text, finish reason, logprobs and tool calls, from a stream."""
    out: dict[int, dict[str, Any]] = {}
    for chunk in oai.chat.completions.create(model="m", messages=HELLO, stream=True,  # type: ignore[arg-type]
                                             **body):
        for choice in chunk.choices:
            seen = out.setdefault(choice.index, {"text": "", "logprobs": [], "calls": {}})
            seen["text"] += choice.delta.content or ""
            seen["finish"] = choice.finish_reason or seen.get("finish")
            seen["logprobs"] += choice.logprobs.content if choice.logprobs else []
            for call in choice.delta.tool_calls or []:
                known = seen["calls"].setdefault(call.index, {"name": "", "arguments": ""})
                known["name"] += (call.function.name or "") if call.function else ""
                known["arguments"] += (call.function.arguments or "") if call.function else ""
    return out


SCHEMA = {"type": "object", "additionalProperties": False,
          "required": ["city", "rank", "tags", "kind"],
          "properties": {"city": {"type": "string", "minLength": 10},
                         "rank": {"type": "integer", "minimum": 5, "maximum": 9},
                         "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                         "kind": {"anyOf": [{"type": "null"}, {"enum": ["capital", "town"]}]}}}


def test_the_mock_answers_json_that_fits_the_schema_asked_for(oai: openai.OpenAI) -> None:
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}}
    plain = oai.chat.completions.create(model="m", messages=HELLO,  # type: ignore[arg-type]
                                        response_format=response_format)
    answer = json.loads(plain.choices[0].message.content or "")
    jsonschema.validate(answer, SCHEMA)
    assert answer["kind"] == "capital"
    assert json.loads(streamed(oai, response_format=response_format)[0]["text"]) == answer
    as_object = oai.chat.completions.create(model="m", messages=HELLO,  # type: ignore[arg-type]
                                            response_format={"type": "json_object"})
    assert isinstance(json.loads(as_object.choices[0].message.content or ""), dict)


def test_the_mock_answers_n_choices(oai: openai.OpenAI, mock: MockProvider) -> None:
    plain = oai.chat.completions.create(model="m", messages=HELLO, n=3)  # type: ignore[arg-type]
    assert [c.index for c in plain.choices] == [0, 1, 2]
    assert len({c.message.content for c in plain.choices}) == 1
    assert plain.usage is not None
    assert plain.usage.completion_tokens == mock.last_answer().output_tokens
    assert mock.last_answer().output_tokens == 3 * len(mock.last_answer().pieces)
    assert sorted(streamed(oai, n=2)) == [0, 1]


def test_the_mock_stops_before_a_stop_sequence(oai: openai.OpenAI, mock: MockProvider) -> None:
    plain = oai.chat.completions.create(model="m", messages=HELLO, stop=[" to:", "from"])  # type: ignore[arg-type]
    assert (plain.choices[0].message.content, plain.choices[0].finish_reason) == (
        "mock answer ", "stop")
    assert streamed(oai, stop="answer")[0]["text"] == "mock "
    mock.script("m", Step(text="one two END three"))
    cut = oai.chat.completions.create(model="m", messages=HELLO, stop="END")  # type: ignore[arg-type]
    assert cut.choices[0].message.content == "one two "


def test_the_mock_sends_logprobs_of_its_tokens(oai: openai.OpenAI) -> None:
    plain = oai.chat.completions.create(model="m", messages=HELLO, logprobs=True,  # type: ignore[arg-type]
                                        top_logprobs=3)
    choice = plain.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    assert "".join(t.token for t in choice.logprobs.content) == choice.message.content
    assert all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in choice.logprobs.content)
    assert all(t.top_logprobs[0].token == t.token for t in choice.logprobs.content)
    tokens = streamed(oai, logprobs=True)[0]["logprobs"]
    assert [t.token for t in tokens] == [t.token for t in choice.logprobs.content]
    assert oai.chat.completions.create(model="m", messages=HELLO).choices[0].logprobs is None  # type: ignore[arg-type]


TOOLS: Any = [{"type": "function", "function": {"name": name, "parameters": {
    "type": "object", "required": [field], "properties": {field: {"type": kind}}}}}
    for name, field, kind in (("weather", "city", "string"), ("clock", "hours", "integer"))]


def test_the_mock_calls_tools_in_parallel_with_arguments_that_fit(oai: openai.OpenAI) -> None:
    plain = oai.chat.completions.create(model="m", messages=HELLO, tools=TOOLS)  # type: ignore[arg-type]
    calls = plain.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
        ("weather", {"city": "from m"}), ("clock", {"hours": 1})]
    assert len({c.id for c in calls}) == 2
    assert plain.choices[0].finish_reason == "tool_calls"
    stream = streamed(oai, tools=TOOLS)[0]
    assert [(c["name"], json.loads(c["arguments"])) for c in stream["calls"].values()] == [
        ("weather", {"city": "from m"}), ("clock", {"hours": 1})]
    one = oai.chat.completions.create(model="m", messages=HELLO, tools=TOOLS,  # type: ignore[arg-type]
                                      parallel_tool_calls=False)
    assert [c.function.name for c in one.choices[0].message.tool_calls or []] == ["weather"]  # type: ignore[union-attr]
    forced = oai.chat.completions.create(
        model="m", messages=HELLO, tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "clock"}})
    assert [c.function.name for c in forced.choices[0].message.tool_calls or []] == ["clock"]  # type: ignore[union-attr]


def test_the_mock_answers_in_words_once_its_tools_have_answered(oai: openai.OpenAI) -> None:
    messages: Any = [*HELLO, {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_1", "type": "function", "function": {"name": "weather",
                                                         "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    reply = oai.chat.completions.create(model="m", messages=messages, tools=TOOLS)
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.tool_calls is None and reply.choices[0].message.content
