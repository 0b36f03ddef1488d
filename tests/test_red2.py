"""Red team 2: money, cache, reload, errors and streams on /v1/messages and the chat surface.

Each test here failed against the gateway when written (branch red2): it shows one
promise of the README broken, with real processes (redis-server, the mock providers,
`gateway serve`) spoken to over raw HTTP, as Claude Code and the SDKs speak.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import RedisServer, gateway_running, serving, sha, usage_lines_of

KEY = "sk-red2-team"
CLAUDE_PRICE = ("price: {input_per_mtok: 3, output_per_mtok: 15, cached_input_per_mtok: 0.3, "
                "cache_write_per_mtok: 3.75, cache_write_1h_per_mtok: 6}")


def budget_key(name: str) -> str:
    return f"sk-red2-budget-{name}"


BUDGETS = {"twoproc": 1, "pdf": 0.1, "clampcache": 0.015, "crewmate": 100,
           "toolcut": 0.05, "chatcut": 0.05, "chatcut2": 0.05, "chatcut3": 0.05}
CREW = ("clampcache", "crewmate")  # keys that share cache entries (cache_scope: crew)


def router_yaml(mock_url: str, redis_url: str, tmp: Path, log_name: str = "usage.jsonl") -> str:
    return "\n".join([
        "providers:",
        f"  anthropic: {{api_key: sk-ant-red2-secret-0123456789, api_base: '{mock_url}'}}",
        f"  openai: {{api_key: sk-openai-red2-secret-0123456789, api_base: '{mock_url}/v1'}}",
        "models:",
        f"  claude: {{provider: anthropic, model: claude-sonnet-4-5, {CLAUDE_PRICE}}}",
        "  gpt: {provider: openai, model: gpt-4o-mini, "
        "price: {input_per_mtok: 1, output_per_mtok: 2}}",
        "  gpt-pricey: {provider: openai, model: gpt-pricey, "
        "price: {input_per_mtok: 1, output_per_mtok: 100}}",
        "tiers:",
        "  smart: [claude]",
        "  pricey-chat: [gpt-pricey]",
        "  fast: [gpt]",
        "keys:",
        f"  - {{name: team, key_sha256: {sha(KEY)}, daily_budget_usd: 1000}}",
        *[f"  - {{name: {n}, key_sha256: {sha(budget_key(n))}, daily_budget_usd: {b}"
          + (", cache_scope: crew}" if n in CREW else "}")
          for n, b in BUDGETS.items()],
        "settings:",
        f"  redis_url: '{redis_url}'",
        f"  usage_log: {tmp}/{log_name}",
        "  cache: {enabled: true}",
        "  retry: {max_retries: 0}",
        "  cooldown: {after_failures: 1000, for_s: 0}",
        "  timeouts: {connect_s: 2, first_token_s: 5, total_s: 30}",
    ]) + "\n"


@pytest.fixture(scope="module")
def gateway(mock: MockProvider, redis_server: RedisServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("red2")
    config = router_yaml(mock.base_url, redis_server.url, tmp)  # type: ignore[attr-defined]
    with serving(tmp, config) as url:
        yield url, tmp


def headers(key: str = KEY, **more: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", "anthropic-version": "2023-06-01",
            "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14", **more}


def usage_lines(tmp: Path, log_name: str = "usage.jsonl") -> list[dict[str, Any]]:
    path = tmp / log_name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def spent_micro(redis_url: str, name: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter("gw:spend:v1:*"):
            value = client.hget(key, name)
            if value is not None:
                return int(value)
        return 0
    finally:
        client.close()


def tool(i: int) -> dict[str, Any]:
    return {"name": f"Tool{i}", "description": f"Tool number {i}. " + "Use it wisely. " * 40,
            "input_schema": {"type": "object", "properties": {
                f"arg{j}": {"type": "string", "description": "an argument " * 8}
                for j in range(6)}, "required": ["arg0"]}}


def claude_code_body(session: str, turn: int = 0, kb: int = 100, **more: Any) -> dict[str, Any]:
    """A Claude Code-sized turn: 24 tools, a long system prompt, a long history with
    cache_control markers (1 hour) on the last turn, thinking adaptive, max_tokens 32000."""
    history: list[dict[str, Any]] = []
    filler = "The quick brown fox reads file src/module.py and edits line 42. "
    i = 0
    while len(json.dumps(history)) < kb * 1000 - 40_000:
        history += [{"role": "user",
                     "content": [{"type": "text", "text": f"[{i}] " + filler * 20}]},
                    {"role": "assistant", "content": [{"type": "text", "text": filler * 10}]}]
        i += 1
    history.append({"role": "user", "content": [
        {"type": "text", "text": f"turn {turn}: summarise", "cache_control":
         {"type": "ephemeral", "ttl": "1h"}}]})
    return {"model": "smart", "max_tokens": 32000, "stream": True,
            "thinking": {"type": "adaptive"},
            "metadata": {"user_id": f"user_abc_account__session_{session}"},
            "system": [{"type": "text", "text": "You are Claude Code. " * 400,
                        "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            "tools": [tool(i) for i in range(24)], "messages": history, **more}


# --- money ----------------------------------------------------------------------------

def one_hour_writes(body: dict[str, Any], output_tokens: int = 32000) -> Step:
    """What Anthropic bills for a first Claude Code turn with 1-hour cache_control: the whole
    prompt written to the cache for an hour (2x input), counted as the gateway itself counts
    it (cl100k x 1.35: its own estimate, which it says errs high), and the thinking using the
    whole max_tokens it was sent (the gateway caps the count at that limit)."""
    from gateway.money import tokens
    counted = tokens.messages_tally(body).counted()
    prompt = min(int(counted.text_tokens * 1.35) + 1, counted.text_bytes) + counted.fixed_tokens
    return Step(usage={"input_tokens": 3, "output_tokens": output_tokens,
                       "cache_read_input_tokens": 0, "cache_creation_input_tokens": prompt - 3,
                       "cache_creation": {"ephemeral_5m_input_tokens": 0,
                                          "ephemeral_1h_input_tokens": prompt - 3}})


def stream_message(url: str, key: str, body: dict[str, Any]) -> tuple[int, str]:
    with httpx.Client(timeout=60) as http:
        response = http.post(f"{url}/v1/messages?beta=true", json=body,
                             headers=headers(key, **{"cache-control": "no-store"}))
        return response.status_code, response.text


def test_claude_code_turns_with_one_hour_cache_writes_never_end_a_day_above_its_budget(
        mock: MockProvider, redis_server: RedisServer,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Two gateway processes on one Redis, eight concurrent Claude Code turns (108 KB, 24
    tools, thinking adaptive, max_tokens 32000, cache_control ttl 1h) on a $1 key. Anthropic
    bills the 1-hour cache write at 2x input; the gateway reserves the counted input at 1x,
    so the requests reserved on the count (all but the first: the byte bound no longer fits)
    are charged more than they held, and the day ends above the budget."""
    tmp = tmp_path_factory.mktemp("red2-twoproc")
    for n in (1, 2):
        (tmp / f"router{n}.yaml").write_text(router_yaml(
            mock.base_url, redis_server.url, tmp, f"usage{n}.jsonl"))  # type: ignore[attr-defined]
    body = claude_code_body("s1")
    mock.always["claude-sonnet-4-5"] = one_hour_writes(body)
    with gateway_running(tmp / "router1.yaml", tmp / "gateway1.log") as one, \
            gateway_running(tmp / "router2.yaml", tmp / "gateway2.log") as two:
        key = budget_key("twoproc")
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: stream_message((one, two)[i % 2], key, body),
                                    range(8)))
        time.sleep(1)
    lines = [line for n in (1, 2) for line in usage_lines(tmp, f"usage{n}.jsonl")]
    logged = round(sum(line.get("cost_usd") or 0 for line in lines), 6)
    spent = spent_micro(redis_server.url, "twoproc") / 1e6
    statuses = [status for status, _ in results]
    assert 200 in statuses
    assert logged == pytest.approx(spent, abs=1e-6), (logged, spent)
    assert spent <= BUDGETS["twoproc"], (
        f"the key's day ended at ${spent:.6f}, above its ${BUDGETS['twoproc']} budget "
        f"(statuses {statuses}; usage log: "
        f"{[(x['status'], x.get('cost_usd'), x.get('budget_limited')) for x in lines]})")


def blank_pdf(pages: int) -> bytes:
    """A valid PDF of `pages` empty pages, as small as a PDF gets (about 60 bytes a page)."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [" + b" ".join(
                   f"{3 + i} 0 R".encode() for i in range(pages)) + b"] /Count "
               + str(pages).encode() + b" /MediaBox [0 0 612 792] >>"]
    objects += [b"<< /Type /Page /Parent 2 0 R >>"] * pages
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += (f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
            .encode())
    return bytes(out)


def test_a_pdf_of_many_pages_cannot_spend_past_the_budget(gateway: tuple[str, Path],
                                                          mock: MockProvider,
                                                          redis_server: RedisServer) -> None:
    """Anthropic bills a PDF by the page: each page is read as text and as an image, 1,500
    to 3,000 tokens a page by its own documentation, whatever the file's size. The gateway
    counts a document block as the text of its base64 data (a 100-page blank PDF: 11 KB,
    about 4,000 tokens), so a key with $0.10 left is let in for a request Anthropic bills
    $0.45 for (150,000 input tokens at the lowest per-page figure), and the day ends 4x over."""
    import base64
    url, _ = gateway
    pdf = base64.b64encode(blank_pdf(100)).decode()
    mock.script("claude-sonnet-4-5", Step(text="The document is blank.", usage={
        "input_tokens": 100 * 1500, "output_tokens": 6, "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0}))
    body = {"model": "smart", "max_tokens": 200, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                        "data": pdf}},
        {"type": "text", "text": "What does this document say?"}]}]}
    response = httpx.post(f"{url}/v1/messages", json=body, timeout=30,
                          headers=headers(budget_key("pdf"), **{"cache-control": "no-store"}))
    time.sleep(0.5)
    spent = spent_micro(redis_server.url, "pdf") / 1e6
    assert response.status_code in (200, 429)
    assert spent <= BUDGETS["pdf"], (
        f"a {len(pdf)}-byte PDF of 100 pages was let in and charged ${spent:.6f} to a key "
        f"whose budget is ${BUDGETS['pdf']} (status {response.status_code}, "
        f"x-gateway-cost-usd {response.headers.get('x-gateway-cost-usd')})")


# --- cache ----------------------------------------------------------------------------

def test_an_answer_the_budget_clamp_made_without_thinking_is_not_served_as_a_whole_one(
        gateway: tuple[str, Path], mock: MockProvider) -> None:
    """A nearly spent key asks with thinking on (budget_tokens 2000, max_tokens 4000); the
    clamp lowers max_tokens below 1,025 and so turns thinking off (README: Budgets). That
    answer, made without the thinking that was asked for, ends end_turn and is cached under
    the request that asked for thinking; a key of the same cache group with money to spare,
    sending the very same request, is then served it: no thinking block, from the cache."""
    url, _ = gateway
    body = {"model": "smart", "max_tokens": 4000,
            "thinking": {"type": "enabled", "budget_tokens": 2000},
            "messages": [{"role": "user", "content": "Prove that sqrt(2) is irrational."}]}
    poor = httpx.post(f"{url}/v1/messages", json=body, headers=headers(budget_key("clampcache")),
                      timeout=30)
    assert poor.status_code == 200, poor.text
    assert poor.headers.get("x-gateway-max-tokens-clamped"), dict(poor.headers)
    sent = mock.calls("claude-sonnet-4-5")[-1].body
    assert sent["thinking"] == {"type": "disabled"}  # the clamp turned it off, as documented
    rich = httpx.post(f"{url}/v1/messages", json=body, headers=headers(budget_key("crewmate")),
                      timeout=30)
    assert rich.status_code == 200, rich.text
    kinds = [block["type"] for block in rich.json()["content"]]
    assert rich.headers.get("x-gateway-cache") != "hit" and "thinking" in kinds, (
        f"a key with $100 left asked for thinking and was served, from the cache "
        f"(x-gateway-cache: {rich.headers.get('x-gateway-cache')}), the answer another key's "
        f"clamp made with thinking off: blocks {kinds}")


# --- streams --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick_gateway(mock: MockProvider, redis_server: RedisServer,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """first_token_s 1: a model that has begun its answer is past it; total_s 30."""
    tmp = tmp_path_factory.mktemp("red2-quick")
    (tmp / "router.yaml").write_text(router_yaml(
        mock.base_url, redis_server.url, tmp).replace(  # type: ignore[attr-defined]
        "first_token_s: 5", "first_token_s: 1"))
    with gateway_running(tmp / "router.yaml", tmp / "gateway.log") as url:
        yield url, tmp


def test_a_long_tool_call_from_an_openai_model_is_not_timed_out_as_a_hung_model(
        quick_gateway: tuple[str, Path], mock: MockProvider) -> None:
    """Claude Code on an OpenAI-first tier asks for a Write of a file: the model streams the
    tool call's arguments steadily for 3 s. The chat surface relays that as it comes; on
    /v1/messages the translation holds tool calls until the choice finishes, and the
    fallback loop counts nothing before the first content block as the first token, so a
    model that is writing is taken for a hung one: first_token_s (1 s here, 60 s by default
    for a long file) passes, and the turn fails with a 504 while the model was answering."""
    url, _ = quick_gateway
    content = "print('hello')\n" * 16  # 240 characters: 30 fragments of arguments
    step = Step(tool_call=("Write", {"file_path": "/tmp/a.py", "content": content}),
                chunk_delay_s=0.1)
    tools = [{"name": "Write", "description": "write a file", "input_schema": {
        "type": "object", "properties": {"file_path": {"type": "string"},
                                         "content": {"type": "string"}}}}]
    # The chat surface, as a baseline: the same model, the same stream, answered.
    mock.script("gpt-4o-mini", step)
    chat = httpx.post(f"{url}/v1/chat/completions", timeout=30, headers=headers(
        **{"cache-control": "no-store"}), json={
        "model": "fast", "stream": True, "messages": [{"role": "user", "content": "write it"}],
        "tools": [{"type": "function", "function": {"name": "Write", "parameters":
                                                    tools[0]["input_schema"]}}]})
    assert chat.status_code == 200 and '"tool_calls"' in chat.text, chat.text[:300]
    mock.script("gpt-4o-mini", step)
    started = time.monotonic()
    message = httpx.post(f"{url}/v1/messages", timeout=30, headers=headers(
        **{"cache-control": "no-store"}), json={
        "model": "fast", "max_tokens": 4000, "stream": True, "tools": tools,
        "messages": [{"role": "user", "content": "write it"}]})
    took = time.monotonic() - started
    assert message.status_code == 200 and '"tool_use"' in message.text, (
        f"after {took:.1f} s: {message.status_code} {message.text[:400]}")


def usage_line(tmp: Path, request_id: str, within_s: float = 5) -> dict[str, Any]:
    lines = usage_lines_of(tmp / "usage.jsonl", request_id, within_s)
    assert lines, f"no usage line for {request_id}"
    return lines[-1]


def test_a_tool_call_the_budget_cuts_on_a_translated_stream_is_charged_for_what_was_made(
        gateway: tuple[str, Path], mock: MockProvider) -> None:
    """On an OpenAI model behind /v1/messages, a tool call reaches the budget's watch only
    whole, once the provider has written (and billed) all of it. When the budget cannot pay
    for it, the watch cuts there: the client gets the tool_use block without its input, and
    the key is charged for the few tokens of the tool's name, not for the call the provider
    made. The same call on the chat surface is watched as it streams and cut where the
    budget ends. A tenant near the end of its budget can repeat this without end: the
    operator pays the provider for every call, the key almost nothing."""
    url, tmp = gateway
    arguments = {"file_path": "/tmp/big.py", "content": "x = 1\n" * 600}  # 3,600 characters
    mock.script("gpt-pricey", Step(tool_call=("Write", arguments)))
    tools = [{"name": "Write", "description": "write a file", "input_schema": {
        "type": "object", "properties": {"file_path": {"type": "string"},
                                         "content": {"type": "string"}}}}]
    response = httpx.post(f"{url}/v1/messages", timeout=30, headers=headers(
        budget_key("toolcut"), **{"cache-control": "no-store"}), json={
        "model": "pricey-chat", "max_tokens": 8000, "stream": True, "tools": tools,
        "messages": [{"role": "user", "content": "write it"}]})
    assert response.status_code == 200, response.text
    line = usage_line(tmp, response.headers["x-request-id"])
    billed = mock.last_answer().output_tokens
    # Fixed: the call now streams as it is made and the watch cuts it where the budget ends,
    # charging what it sent: the whole budget (the provider's writing past the cut is the
    # operator's, as on the chat surface: a key is never charged past its budget).
    assert line["budget_limited"] == "cut"
    assert line["cost_usd"] >= BUDGETS["toolcut"] * 0.95, (
        f"the provider wrote (and billed) {billed} output tokens of tool call; the key was "
        f"charged {line['output_tokens']} (${line['cost_usd']}), budget_limited "
        f"{line['budget_limited']}; the client got: {response.text[-600:]}")


# --- the chat surface -----------------------------------------------------------------

LONG = " ".join(f"w{i}" for i in range(2000))  # 2000 output tokens, as the mock counts


def test_a_budget_cut_answer_with_n_2_has_both_choices(gateway: tuple[str, Path],
                                                       mock: MockProvider) -> None:
    """n=2, not streamed, on a key the budget cuts: the provider streams its choices one
    after the other (as the mock does, and as clients must accept), the budget ends the
    answer inside choice 0, and the answer has one choice only: `choices[1]` is missing
    from an answer that asked for two (OpenAI's own cut ends every choice with "length")."""
    import openai
    url, _ = gateway
    mock.script("gpt-pricey", Step(text=LONG))
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=budget_key("chatcut2"), max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="pricey-chat", n=2, messages=[{"role": "user", "content": "two long answers"}],
        extra_headers={"cache-control": "no-store"})
    answer = raw.parse()
    assert raw.headers.get("x-gateway-budget-cut") == "true"
    assert [c.index for c in answer.choices] == [0, 1], (
        f"n=2 answered with choices {[(c.index, c.finish_reason) for c in answer.choices]}")


def test_a_budget_cut_stream_still_sends_the_usage_chunk_it_was_asked_for(
        gateway: tuple[str, Path], mock: MockProvider) -> None:
    """stream_options.include_usage: a stream the budget ends gets its finish_reason
    "length" chunk and [DONE], but never the usage chunk the client asked for, so an OpenAI
    SDK client that counts its tokens from it reads nothing for the answer it paid for."""
    import openai
    url, _ = gateway
    mock.script("gpt-pricey", Step(text=LONG))
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=budget_key("chatcut3"), max_retries=0)
    chunks = list(client.chat.completions.create(
        model="pricey-chat", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "a long answer"}],
        extra_headers={"cache-control": "no-store"}))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert [c.usage for c in chunks if c.usage], "no usage chunk after the budget's cut"

