"""Red team 3: /v1/messages through litellm's providers, the live tool calls of translated
streams, Anthropic's server tools on the native path, and the cache across a reload.

Each test here failed against the gateway when written (branch red3): it shows one promise
of the README broken, with real processes (redis-server, the mock providers, `gateway
serve`) spoken to over raw HTTP or through the official `anthropic` SDK.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import RedisServer, gateway_running, serving, sha, usage_lines_of

KEY = "sk-red3-team"
CLAUDE_PRICE = "price: {input_per_mtok: 3, output_per_mtok: 15}"
CHEAP = "price: {input_per_mtok: 1, output_per_mtok: 2}"


def router_yaml(mock_url: str, redis_url: str, tmp: Path) -> str:
    return "\n".join([
        "providers:",
        f"  anthropic: {{api_key: sk-ant-red3-secret, api_base: '{mock_url}'}}",
        f"  openai: {{api_key: sk-openai-red3-secret, api_base: '{mock_url}/v1'}}",
        f"  deepseek: {{api_key: deepseek-red3-secret, api_base: '{mock_url}/v1'}}",
        "models:",
        f"  claude: {{provider: anthropic, model: claude-sonnet-4-5, {CLAUDE_PRICE}}}",
        f"  gpt: {{provider: openai, model: gpt-4o-mini, {CHEAP}}}",
        f"  ds: {{provider: deepseek, model: deepseek-chat, {CHEAP}}}",  # litellm's path
        "tiers:",
        "  smart: [claude]",
        "  fast: [gpt]",
        "  seek: [ds]",
        "keys:",
        f"  - {{name: team, key_sha256: {sha(KEY)}, daily_budget_usd: 1000}}",
        "settings:",
        f"  redis_url: '{redis_url}'",
        f"  usage_log: {tmp}/usage.jsonl",
        "  cache: {enabled: true}",
        "  retry: {max_retries: 0}",
        "  cooldown: {after_failures: 1000, for_s: 0}",
        "  timeouts: {connect_s: 2, first_token_s: 5, total_s: 30}",
    ]) + "\n"


@pytest.fixture(scope="module")
def gateway(mock: MockProvider, redis_server: RedisServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("red3")
    config = router_yaml(mock.base_url, redis_server.url, tmp)  # type: ignore[attr-defined]
    with serving(tmp, config) as url:
        yield url, tmp


def headers(**more: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01", **more}


NO_STORE = {"cache-control": "no-store"}


def usage_line(tmp: Path, request_id: str, within_s: float = 5) -> dict[str, Any]:
    lines = usage_lines_of(tmp / "usage.jsonl", request_id, within_s)
    assert lines, f"no usage line for {request_id}"
    return lines[-1]


def sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def claude_stream(*blocks: list[dict[str, Any]], usage: dict[str, Any],
                  stop_reason: str = "end_turn") -> bytes:
    """Anthropic's event stream: message_start, each block's events (given without their
    index), message_delta with `usage`, message_stop."""
    events: list[dict[str, Any]] = [{"type": "message_start", "message": {
        "id": "msg_red3", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 100, "output_tokens": 1, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0}}}]
    for index, block in enumerate(blocks):
        events += [{**event, "index": index} for event in block]
    events += [{"type": "message_delta", "delta": {"stop_reason": stop_reason,
                                                    "stop_sequence": None}, "usage": usage},
               {"type": "message_stop"}]
    return b"".join(sse(event) for event in events)


def block(start: dict[str, Any], *deltas: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "content_block_start", "content_block": start},
            *[{"type": "content_block_delta", "delta": d} for d in deltas],
            {"type": "content_block_stop"}]


WEB_SEARCH = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 50}]
SEARCHED = [
    block({"type": "server_tool_use", "id": "srvtoolu_red3", "name": "web_search", "input": {}},
          {"type": "input_json_delta", "partial_json": '{"query": "weather in Paris"}'}),
    block({"type": "web_search_tool_result", "tool_use_id": "srvtoolu_red3", "content": [
        {"type": "web_search_result", "title": "Paris weather", "url": "https://example.com/w",
         "encrypted_content": "EqgfCioIARgBIiQ3YTAwMjY1Mi1mZjM5LTQ1NGUtODgxNC1kNjNjNTk1ZWI3Y",
         "page_age": None}]}),
]


# --- the native path: Anthropic's server tools -------------------------------------------

def test_a_cited_text_block_that_starts_with_null_citations_is_relayed_whole(
        gateway: tuple[str, Path], mock: MockProvider) -> None:
    """Claude answering from a web search streams a text block whose start carries
    `"citations": null` (the SDK's TextBlock default; its accumulator checks `if not
    content.citations` for that reason), then `citations_delta`s. The gateway's assembler
    does `block.setdefault("citations", []).append(...)`: the key is there, its value None,
    and the request dies with AttributeError mid-stream: the connection is cut without an
    error event, the SDK raises a transport error, and the usage log calls it a client that
    left (499)."""
    url, tmp = gateway
    cited = block({"type": "text", "text": "", "citations": None},
                  {"type": "citations_delta", "citation": {
                      "type": "web_search_result_location", "cited_text": "sunny, 24 C",
                      "url": "https://example.com/w", "title": "Paris weather",
                      "encrypted_index": "Eo8BCioIAhgBIiQyYjQ0OWJmZi1lNm"}},
                  {"type": "text_delta", "text": "It is sunny in Paris."})
    mock.script("claude-sonnet-4-5", Step(raw=claude_stream(
        *SEARCHED, cited, usage={"output_tokens": 60,
                                 "server_tool_use": {"web_search_requests": 1}})))
    with anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0) as client:
        try:
            with client.messages.stream(model="smart", max_tokens=500, tools=WEB_SEARCH,  # type: ignore[list-item]
                                        messages=[{"role": "user", "content": "Weather?"}],
                                        extra_headers=NO_STORE) as stream:
                message = stream.get_final_message()
        except Exception as failed:  # the SDK's transport error, not an APIError
            time.sleep(0.3)
            log = (tmp / "gateway.log").read_text()[-300:]
            pytest.fail(f"a cited web-search answer failed mid-stream: "
                        f"{type(failed).__name__}: {failed}; gateway log: {log}", pytrace=False)
    assert [b.type for b in message.content] == [
        "server_tool_use", "web_search_tool_result", "text"]
    text = message.content[2]
    assert text.type == "text" and text.text == "It is sunny in Paris."
    assert text.citations and text.citations[0].cited_text == "sunny, 24 C"


def test_web_searches_anthropic_bills_are_charged_to_the_key(
        gateway: tuple[str, Path], mock: MockProvider) -> None:
    """Anthropic bills web search by the search ($10 per 1,000, on top of tokens) and says
    how many were made in the usage: `server_tool_use.web_search_requests`. The gateway
    passes web_search through to Claude and charges tokens only: a turn that made 40
    searches ($0.40 at Anthropic) is charged about $0.001. A key with a $1 budget can make
    the operator pay for thousands of searches a day ("a key's spend never exceeds its
    budget" holds only for the part of the bill the gateway reads); nothing reserves for
    them either, since max_uses is not priced."""
    url, tmp = gateway
    answer = block({"type": "text", "text": ""},
                   {"type": "text_delta", "text": "Here is what forty searches found. " * 8})
    mock.script("claude-sonnet-4-5", Step(raw=claude_stream(
        *SEARCHED, answer, usage={"input_tokens": 100, "output_tokens": 60,
                                  "server_tool_use": {"web_search_requests": 40}})))
    response = httpx.post(f"{url}/v1/messages", timeout=30, headers=headers(**NO_STORE), json={
        "model": "smart", "max_tokens": 500, "stream": True, "tools": WEB_SEARCH,
        "messages": [{"role": "user", "content": "Research the weather, thoroughly."}]})
    assert response.status_code == 200 and "message_stop" in response.text, response.text[-300:]
    line = usage_line(tmp, response.headers["x-request-id"])
    searches_usd = 40 * 10 / 1000
    assert (line["cost_usd"] or 0) >= searches_usd, (
        f"Anthropic billed 40 web searches (${searches_usd:.2f}) for this turn; the key was "
        f"charged ${line['cost_usd']} ({line['input_tokens']} input, "
        f"{line['output_tokens']} output tokens)")


def test_code_claude_writes_for_its_code_execution_tool_is_charged_as_output(
        gateway: tuple[str, Path], mock: MockProvider) -> None:
    """Anthropic's server tools are called in `server_tool_use` blocks whose input Claude
    writes, and bills, as output tokens: the program for code_execution, the query for
    web_search. The gateway caps what a watched answer is charged at the bytes it shows
    plus 8 tokens (a provider "that claims more than it wrote"), and counts only text,
    thinking and tool_use blocks as shown: Claude writes a 9 KB program (about 2,300
    tokens, all billed) and answers "Done.", and the key is charged for 13 output tokens."""
    url, tmp = gateway
    program = "".join(f"total_{i} = sum(range({i}))  # step {i}\n" for i in range(240))
    ran = [
        block({"type": "server_tool_use", "id": "srvtoolu_code", "name": "code_execution",
               "input": {}},
              {"type": "input_json_delta", "partial_json": json.dumps({"code": program})}),
        block({"type": "code_execution_tool_result", "tool_use_id": "srvtoolu_code",
               "content": {"type": "code_execution_result", "stdout": "", "stderr": "",
                           "return_code": 0, "content": []}}),
        block({"type": "text", "text": ""}, {"type": "text_delta", "text": "Done."}),
    ]
    billed = 2400  # what Anthropic reports (and bills) for the program and the answer
    mock.script("claude-sonnet-4-5", Step(raw=claude_stream(
        *ran, usage={"input_tokens": 100, "output_tokens": billed})))
    response = httpx.post(f"{url}/v1/messages", timeout=30, headers=headers(**NO_STORE), json={
        "model": "smart", "max_tokens": 8000, "stream": True,
        "tools": [{"type": "code_execution_20250825", "name": "code_execution"}],
        "messages": [{"role": "user", "content": "Compute the sums, in code."}]})
    assert response.status_code == 200 and "message_stop" in response.text, response.text[-300:]
    line = usage_line(tmp, response.headers["x-request-id"])
    assert line["output_tokens"] >= len(program) // 4, (
        f"Claude wrote a {len(program)}-character program in its server_tool_use block "
        f"(Anthropic billed {billed} output tokens); the key was charged for "
        f"{line['output_tokens']} output tokens (${line['cost_usd']})")


# --- translated streams: the live tool call ---------------------------------------------

def chunk(delta: dict[str, Any] | None = None, finish: str | None = None,
          usage: dict[str, Any] | None = None) -> bytes:
    out: dict[str, Any] = {"id": "chatcmpl-red3", "object": "chat.completion.chunk",
                           "created": 1, "model": "m", "choices": []}
    if delta is not None or finish is not None:
        out["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    if usage is not None:
        out["usage"] = usage
    return b"data: " + json.dumps(out).encode() + b"\n\n"


def call(arguments: str, name: str | None = None, index: int = 0) -> dict[str, Any]:
    fragment: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if name is not None:
        fragment.update(id=f"call_red3_{index}", type="function")
        fragment["function"]["name"] = name
    return {"tool_calls": [fragment]}


def chat_stream(*deltas: dict[str, Any]) -> bytes:
    usage = {"prompt_tokens": 40, "completion_tokens": 20, "total_tokens": 60}
    return b"".join([chunk({"role": "assistant", "content": None}),
                     *[chunk(d) for d in deltas], chunk(finish="tool_calls"),
                     chunk(usage=usage), b"data: [DONE]\n\n"])


BASH = [{"name": "Bash", "description": "run a command", "input_schema": {
    "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}]
TIERS = [("fast", "gpt-4o-mini"), ("seek", "deepseek-chat")]  # the fast path; litellm's


def streamed(url: str, tier: str, prompt: str) -> anthropic.types.Message:
    with anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0) as client, \
            client.messages.stream(model=tier, max_tokens=500, tools=BASH,  # type: ignore[arg-type]
                                   messages=[{"role": "user", "content": prompt}],
                                   extra_headers=NO_STORE) as stream:
        return stream.get_final_message()


@pytest.mark.parametrize("tier,model", TIERS)
def test_a_first_tool_call_whose_arguments_are_not_json_does_not_break_the_sdk(
        gateway: tuple[str, Path], mock: MockProvider, tier: str, model: str) -> None:
    """An OpenAI-compatible model writes its tool call's arguments as a Python dict
    (`{'command': 'ls'}`: small open models do). The non-streamed answer turns such
    arguments into `{}` (tool_input: "Anthropic's SDK fails a stream whose input_json_delta
    is not JSON"), and so do the held calls of a stream; but the first call now streams
    live, its fragments relayed as they come, unchecked: the Anthropic SDK's accumulator
    raises ValueError and the whole turn is lost."""
    url, _ = gateway
    mock.script(model, Step(raw=chat_stream(call("{'command': ", "Bash"), call("'ls'}"))))
    try:
        message = streamed(url, tier, "list the files")
    except ValueError as failed:
        pytest.fail(f"{tier}: the Anthropic SDK failed the stream: {str(failed)[:200]}",
                    pytrace=False)
    [used] = [b for b in message.content if b.type == "tool_use"]
    assert used.name == "Bash" and isinstance(used.input, dict)


@pytest.mark.parametrize("tier,model", TIERS)
def test_text_between_a_live_tool_calls_fragments_does_not_lose_its_arguments(
        gateway: tuple[str, Path], mock: MockProvider, tier: str, model: str) -> None:
    """A model starts its tool call, says a few words (a `content` delta), then writes the
    rest of the call's arguments. The words close the live tool_use block and open a text
    block; the fragments that follow are dropped (`_open` is no longer "tool_use") and the
    call is not sent again at the end (it was "streamed already"). The client runs Bash with
    `{}`; the same answer, not streamed, carries {"command": "ls -la"}."""
    url, _ = gateway
    deltas = (call('{"comm', "Bash"), {"content": "Let me look."}, call('and": "ls -la"}'))
    mock.script(model, Step(raw=chat_stream(*deltas)))
    message = streamed(url, tier, "look around")
    [used] = [b for b in message.content if b.type == "tool_use"]
    assert used.input == {"command": "ls -la"}, (
        f"{tier}: the streamed tool call's input is {used.input}; the model wrote "
        '{"command": "ls -la"} (blocks: '
        f"{[(b.type, getattr(b, 'input', getattr(b, 'text', None))) for b in message.content]})")


@pytest.mark.parametrize("tier,model", TIERS)
def test_a_tool_name_sent_in_pieces_names_the_whole_tool(
        gateway: tuple[str, Path], mock: MockProvider, tier: str, model: str) -> None:
    """The gateway joins a call's name from its fragments (`call["name"] += ...`, as the
    chat Assembler does, so the non-streamed and cached answers say "Bash"), but the live
    block starts at the first fragment that has any name: a provider that splits the name
    ("Ba", "sh") gets a tool_use block for a tool "Ba", which Claude Code does not have."""
    url, _ = gateway
    mock.script(model, Step(raw=chat_stream(call("", "Ba"), call('{"command": "ls"}', "sh"))))
    message = streamed(url, tier, "list")
    assert [b.name for b in message.content if b.type == "tool_use"] == ["Bash"]


# --- the cache across a reload -----------------------------------------------------------

def test_a_model_moved_to_another_api_base_is_not_served_the_old_upstreams_answers(
        mock: MockProvider, redis_server: RedisServer,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """README (The cache): "a rerouted tier starts with a cold cache rather than serving
    another model's answers". The key holds each model's name, provider type and provider
    model, not where it is sent: an operator who moves a model to another upstream (off a
    misbehaving vLLM, or a proxy found to alter answers) by editing `api_base` keeps being
    served, from the cache, what the old upstream said, for ttl_s, though the reload log
    says "models changed"."""
    other = MockProvider()
    other_url = other.start_in_thread()
    tmp = tmp_path_factory.mktemp("red3-reload")
    config = tmp / "router.yaml"
    config.write_text(router_yaml(mock.base_url, redis_server.url, tmp))  # type: ignore[attr-defined]
    body = {"model": "seek", "max_tokens": 100,
            "messages": [{"role": "user", "content": "Who answers this?"}]}
    with gateway_running(config, tmp / "gateway.log") as url:
        mock.script("deepseek-chat", Step(text="the old upstream answers"))
        first = httpx.post(f"{url}/v1/messages", json=body, headers=headers(), timeout=30)
        assert first.status_code == 200 and first.headers["x-gateway-cache"] == "miss"
        moved = config.read_text().replace(
            f"deepseek: {{api_key: deepseek-red3-secret, api_base: '{mock.base_url}/v1'}}",  # type: ignore[attr-defined]
            f"deepseek: {{api_key: deepseek-red3-secret, api_base: '{other_url}/v1'}}")
        assert other_url in moved
        (tmp / "router.new").write_text(moved)
        os.replace(tmp / "router.new", config)  # replaced whole: applied as it is
        deadline = time.monotonic() + 10
        while "providers changed: deepseek" not in (tmp / "gateway.log").read_text():
            assert time.monotonic() < deadline, "the reload was not applied"
            time.sleep(0.05)
        other.script("deepseek-chat", Step(text="the new upstream answers"))
        second = httpx.post(f"{url}/v1/messages", json=body, headers=headers(), timeout=30)
    assert second.status_code == 200
    assert second.json()["content"][0]["text"] == "the new upstream answers", (
        f"after api_base moved to another upstream, x-gateway-cache: "
        f"{second.headers.get('x-gateway-cache')}, the new upstream was called "
        f"{len(other.calls())} times, and the answer was: {second.json()['content']}")
