"""The money guarantee, attacked: no tenant spends past its budget, and no budget refuses
what it could pay for. Two gateway processes share one real Redis, as two replicas would;
the mock provider writes as much as it is allowed to (or more, when scripted so).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.demo.mockprovider import MockProvider, Step
from gateway.money.watch import CHARS_PER_TOKEN, TALLY_BYTES
from tests.conftest import RedisServer, gateway_running, keys_yaml, start_gateway

CHEAP = "price: {input_per_mtok: 10, output_per_mtok: 20}"  # micro-dollars per token
MASTER_KEY = "sk-master-attacks"
BUDGETS = {  # key name -> daily budget (USD); every test spends on its own key
    "two-limits-openai": 0.02, "two-limits-anthropic": 0.02, "capped": 0.005,
    "capped-stream": 0.005, "reasoner": 1, "reasoner-tight": 0.05,
    "cache-writer": 10, "cache-priced": 10, "no-usage": 10, "negative": 10,
    "claude-coder": 1, "short": 0.05, "short-stream": 0.05, "mixed": 0.6, "crashed": 10,
    "crashed-early": 10, "slow-reader": 10000,
    "stalled": 100, "blob": 0.05, "blob-stream": 0.05, "overrun": 2, "overclaim": 2,
    "thrifty": 0.01, "dropped-whole": 10, "paused": 1, "claude-short": 0.05,
    "overreport": 0.01, "overreport-stream": 0.01, "claude-overreport": 0.01, "stranded": 1,
}
UNBUDGETED = ("unbudgeted",)
WORDS = " ".join(f"word{i}" for i in range(3000))


def key_of(name: str) -> str:
    return f"sk-attack-{name}"


def router_yaml(mock_url: str, redis_url: str, tmp: Path, total_s: float = 20) -> str:
    keys = keys_yaml(BUDGETS, UNBUDGETED, key_of)
    return "\n".join([
        "providers:",
        f"  openai: {{api_key: sk-o, api_base: '{mock_url}/v1'}}",
        f"  anthropic: {{api_key: sk-a, api_base: '{mock_url}'}}",
        "models:",
        f"  cheap: {{provider: openai, model: gpt-cheap, {CHEAP}}}",
        f"  cheap-dropping: {{provider: openai, model: gpt-dropping, {CHEAP}}}",
        "  dear: {provider: openai, model: gpt-dear, price: {input_per_mtok: 1000, "
        "output_per_mtok: 2000}}",
        f"  claude-cheap: {{provider: anthropic, model: claude-cheap, {CHEAP}, "
        "max_output_tokens: 8192}",
        f"  capped: {{provider: openai, model: gpt-capped, {CHEAP}, max_output_tokens: 100}}",
        "  reasoner: {provider: openai, model: gpt-5, price: {input_per_mtok: 1, "
        "output_per_mtok: 2}}",
        "  sonnet: {provider: anthropic, model: claude-sonnet-4-5}",
        "  sonnet-priced: {provider: anthropic, model: claude-sonnet-4-5, price: "
        "{input_per_mtok: 3, output_per_mtok: 15, cache_write_per_mtok: 5, "
        "cache_write_1h_per_mtok: 7}}",
        "tiers:",
        "  coding: [sonnet]",
        "  thrifty: [cheap, dear]",
        "keys:", *keys,
        "settings:",
        f"  redis_url: '{redis_url}'",
        f"  master_key: {MASTER_KEY}",
        "  cache: {enabled: false}",
        "  retry: {max_retries: 0}",
        "  log_content: true",
        f"  usage_log: {tmp}/usage.jsonl",
        f"  timeouts: {{connect_s: 2, first_token_s: 5, total_s: {total_s}}}",
    ]) + "\n"


@pytest.fixture(scope="module")
def files(mock: MockProvider, redis_server: RedisServer,
          tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("attacks")
    (tmp / "router.yaml").write_text(
        router_yaml(mock.base_url, redis_server.url, tmp))  # type: ignore[attr-defined]
    return tmp


@pytest.fixture(scope="module")
def gateways(files: Path) -> Iterator[list[str]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(gateway_running(files / "router.yaml",
                                                   files / f"gateway-{i}.log"))
               for i in range(2)]


def client_for(base_url: str, name: str, **options: Any) -> openai.OpenAI:
    options.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key_of(name), **options)


def balance(base_url: str, name: str, settled: bool = True) -> dict[str, Any]:
    """The key's balance; `settled`: once no request of it holds a reservation."""
    deadline = time.monotonic() + 10
    while True:
        response = httpx.get(f"{base_url}/v1/budget",
                             headers={"authorization": f"Bearer {key_of(name)}"})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if not settled or body["reserved_usd"] == 0 or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def spent_once_expired(base_url: str, name: str) -> int:
    """The key's spend, micro-dollars, once its reservations have expired (a killed
    gateway's: total_s 2 + the 5 s margin, and some slack)."""
    deadline = time.monotonic() + 15
    while balance(base_url, name, settled=False)["reserved_usd"] > 0:
        assert time.monotonic() < deadline, "the reservation did not expire"
        time.sleep(0.2)
    return micro(balance(base_url, name)["spent_usd"])


def micro(usd: str | float) -> int:
    return round(float(usd) * 1_000_000)


def log_lines(files: Path, key: str) -> list[dict[str, Any]]:
    text = (files / "usage.jsonl").read_text() if (files / "usage.jsonl").exists() else ""
    # Whole lines only: the writer thread may be half-way through a long one (a 50 KB prompt).
    whole = text[:text.rfind("\n") + 1]
    return [line for line in map(json.loads, whole.splitlines()) if line["key"] == key]


def written_lines(files: Path, key: str, expected_lines: int) -> list[dict[str, Any]]:
    """The key's usage-log lines, once they are all written (a thread writes them)."""
    deadline = time.monotonic() + 5
    while len(lines := log_lines(files, key)) < expected_lines and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(lines) == expected_lines
    return lines


def logged_spend(files: Path, key: str, expected_lines: int) -> int:
    """The key's charges in the usage log, once its lines are all written."""
    return sum(micro(line["cost_usd"] or 0) for line in written_lines(files, key,
                                                                       expected_lines))


def chat(client: openai.OpenAI, model: str, text: str, **options: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **options)


def answer(client: openai.OpenAI, model: str, text: str, stream: bool,
           ) -> tuple[str, str | None, dict[str, str]]:
    """Ask, streamed or not: the answer's text, its finish_reason, and (not streamed) the
    response headers."""
    if stream:
        chunks = [c for c in client.chat.completions.create(
            model=model, stream=True, messages=[{"role": "user", "content": text}]) if c.choices]
        return ("".join(c.choices[0].delta.content or "" for c in chunks),
                chunks[-1].choices[0].finish_reason, {})
    raw = chat(client, model, text)
    choice = raw.parse().choices[0]
    return choice.message.content or "", choice.finish_reason, dict(raw.headers)


def concurrently(count: int, one: Any) -> list[Any]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


# --- spend past the budget -----------------------------------------------------------------

@pytest.mark.parametrize("path, model, provider_model", [
    ("openai", "cheap", "gpt-cheap"), ("anthropic", "claude-cheap", "claude-cheap")])
def test_two_output_limits_in_one_body_cannot_spend_past_the_budget(
        gateways: list[str], mock: MockProvider, files: Path, path: str, model: str,
        provider_model: str) -> None:
    """max_tokens: 1 beside max_completion_tokens: 2000 must not reserve 1 and send 2000."""
    name = f"two-limits-{path}"
    mock.always[provider_model] = Step(text=WORDS, delay_s=0.05)
    clients = [client_for(base, name) for base in gateways]

    def one(i: int) -> int:
        try:
            raw = chat(clients[i % 2], model, f"Write a lot, number {i}", max_tokens=1,
                       max_completion_tokens=2000)
        except openai.RateLimitError:
            return 429
        return raw.http_response.status_code

    try:
        statuses = concurrently(10, one)
    finally:
        for client in clients:
            client.close()
    assert 200 in statuses
    spent = micro(balance(gateways[0], name)["spent_usd"])
    assert spent <= micro(BUDGETS[name])
    assert spent == logged_spend(files, name, 10)
    for call in mock.calls(provider_model):  # one limit went out, the one that was paid for
        limits = {call.body.get(f) for f in ("max_tokens", "max_completion_tokens")} - {None}
        assert len(limits) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_a_models_known_output_limit_is_sent_when_a_budget_is_in_play(
        gateways: list[str], mock: MockProvider, stream: bool) -> None:
    name = "capped-stream" if stream else "capped"
    mock.always["gpt-capped"] = Step(text=WORDS)  # 3,000 tokens, when nothing stops it
    with client_for(gateways[0], name) as client:
        _, finish, _ = answer(client, "capped", "Go", stream)
    assert mock.calls("gpt-capped")[-1].body["max_tokens"] == 100
    assert finish == "length"
    assert micro(balance(gateways[1], name)["spent_usd"]) <= micro(BUDGETS[name])


def test_a_reasoning_model_gets_its_limit_as_max_completion_tokens(
        gateways: list[str], mock: MockProvider) -> None:
    # gpt-5 answers 400 to max_tokens (so does the mock, as OpenAI does).
    with client_for(gateways[0], "reasoner") as client:
        chat(client, "reasoner", "Think")  # no limit: the model's own is sent
        sent = mock.calls("gpt-5")[-1].body
        assert "max_tokens" not in sent and sent["max_completion_tokens"] == 128_000
        chat(client, "reasoner", "Think", max_tokens=50)  # the client's field, moved
        sent = mock.calls("gpt-5")[-1].body
        assert "max_tokens" not in sent and sent["max_completion_tokens"] == 50
    with client_for(gateways[0], "unbudgeted") as client:  # no budget: moved all the same
        chat(client, "reasoner", "Think", max_tokens=60)
        assert mock.calls("gpt-5")[-1].body["max_completion_tokens"] == 60


def test_a_clamp_on_a_reasoning_model_is_written_where_it_reads_it(
        gateways: list[str], mock: MockProvider) -> None:
    """Its thinking is billed and not streamed: the whole limit is reserved up front, and
    lowered (the clamp) when the budget cannot pay for it."""
    with client_for(gateways[0], "reasoner-tight") as client:
        raw = chat(client, "reasoner", "Think hard")
    clamped = int(raw.headers["x-gateway-max-tokens-clamped"])
    sent = mock.calls("gpt-5")[-1].body
    assert "max_tokens" not in sent and sent["max_completion_tokens"] == clamped < 128_000
    assert clamped * 2 <= micro(BUDGETS["reasoner-tight"])


def _debug_sleep(port: int, seconds: float) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=seconds + 10) as sock:
        sock.sendall(f"DEBUG SLEEP {seconds}\r\n".encode())
        assert sock.recv(16).startswith(b"+OK")


def test_a_stalled_redis_leaves_no_phantom_reservation(
        mock: MockProvider, tmp_path: Path) -> None:
    """redis-py resends a command whose reply timed out: the second must change nothing."""
    server = RedisServer(tmp_path, debug=True).start()
    config = tmp_path / "router.yaml"
    config.write_text(router_yaml(mock.base_url, server.url, tmp_path))  # type: ignore[attr-defined]
    stop = threading.Event()
    statuses: list[int] = []
    try:
        with gateway_running(config, tmp_path / "gateway.log") as base_url:
            def traffic(worker: int) -> None:
                with client_for(base_url, "stalled", timeout=30) as client:
                    i = 0
                    while not stop.is_set() and i < 400:
                        i += 1
                        try:
                            chat(client, "cheap", f"stall {worker} {i}", max_tokens=20)
                            statuses.append(200)
                        except openai.APIStatusError as exc:
                            statuses.append(exc.status_code)

            workers = [threading.Thread(target=traffic, args=(w,)) for w in range(6)]
            for worker in workers:
                worker.start()
            for _ in range(5):
                time.sleep(0.3)
                _debug_sleep(server.port, 1.5)
            stop.set()
            for worker in workers:
                worker.join(60)
            logged = logged_spend(tmp_path, "stalled", len(statuses))
            deadline = time.monotonic() + 10  # settlements queued in the stall land
            while True:
                after = balance(base_url, "stalled", settled=False)
                if ((after["reserved_usd"] == 0 and micro(after["spent_usd"]) == logged)
                        or time.monotonic() > deadline):
                    break
                time.sleep(0.2)
            assert statuses.count(200) > 0
            assert after["reserved_usd"] == 0, "reservations no request holds"
            assert micro(after["spent_usd"]) == logged
    finally:
        server.kill()


def test_anthropic_prompt_cache_writes_are_priced_as_writes(
        gateways: list[str], mock: MockProvider, files: Path) -> None:
    prompt = "word " * 10_050  # the mock bills 10,056 input tokens: 56 plain, 10,000 written
    mock.script("claude-sonnet-4-5", Step(text="cached", cache_write_tokens=6000,
                                          cache_write_1h_tokens=4000))
    with client_for(gateways[0], "cache-writer") as client:
        raw = chat(client, "sonnet", prompt, max_tokens=10)
    # litellm's map: $3 input, $3.75 a 5-minute write, $6 an hour's write, $15 output
    expected = math.ceil(56 * 3 + 6000 * 3.75 + 4000 * 6 + 1 * 15)
    assert micro(raw.headers["x-gateway-cost-usd"]) == expected
    [line] = written_lines(files, "cache-writer", 1)
    assert (line["input_tokens"], line["cache_write_tokens"], line["cache_write_1h_tokens"],
            line["cache_read_tokens"]) == (10_056, 6000, 4000, 0)
    mock.script("claude-sonnet-4-5", Step(text="cached", cache_write_tokens=6000,
                                          cache_write_1h_tokens=4000))
    with client_for(gateways[0], "cache-priced") as client:  # router.yaml's own rates
        raw = chat(client, "sonnet-priced", prompt, max_tokens=10, stream=True,
                   stream_options={"include_usage": True})
        list(raw.parse())
    spent = micro(balance(gateways[1], "cache-priced")["spent_usd"])
    assert spent == 56 * 3 + 6000 * 5 + 4000 * 7 + 15


@pytest.mark.parametrize("model, provider_model", [
    ("cheap", "gpt-cheap"), ("claude-cheap", "claude-cheap")])
def test_an_answer_without_usage_is_charged_for_its_counted_tokens(
        gateways: list[str], mock: MockProvider, model: str, provider_model: str) -> None:
    before = micro(balance(gateways[0], "no-usage")["spent_usd"])
    mock.script(provider_model, Step(text="hello " * 200, usage={}))
    with client_for(gateways[0], "no-usage") as client:
        raw = chat(client, model, "Say hello two hundred times", max_tokens=500)
    charged = micro(raw.headers["x-gateway-cost-usd"])
    assert charged >= 200 * 20  # 200 output tokens at least, and the input
    usage = raw.parse().usage  # the client reads what it was charged for
    assert usage.completion_tokens >= 200 and usage.prompt_tokens > 0
    assert micro(balance(gateways[1], "no-usage")["spent_usd"]) == before + charged


@pytest.mark.parametrize("stream", [False, True])
def test_a_negative_usage_never_lowers_the_spend(
        gateways: list[str], mock: MockProvider, stream: bool) -> None:
    before = micro(balance(gateways[0], "negative")["spent_usd"])
    broken = {"prompt_tokens": -1_000_000, "completion_tokens": 5, "total_tokens": -999_995}
    mock.script("gpt-cheap", Step(text="five words of an answer", usage=broken))
    with client_for(gateways[0], "negative") as client:
        if stream:
            list(client.chat.completions.create(
                model="cheap", stream=True, stream_options={"include_usage": True},
                messages=[{"role": "user", "content": "Count"}]))
        else:
            assert chat(client, "cheap", "Count").http_response.status_code == 200
    assert micro(balance(gateways[1], "negative")["spent_usd"]) > before


def test_a_crashed_gateway_charges_what_its_stream_had_made(
        gateways: list[str], mock: MockProvider, redis_server: RedisServer,
        tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(router_yaml(mock.base_url, redis_server.url, tmp_path,  # type: ignore[attr-defined]
                                  total_s=2))
    process, doomed = start_gateway(config, tmp_path / "doomed.log")
    mock.script("gpt-cheap", Step(text=WORDS, chunk_delay_s=0.005))
    relayed = ""
    body = {"model": "cheap", "stream": True, "max_tokens": 3000,
            "messages": [{"role": "user", "content": "Go on"}]}
    with httpx.stream("POST", f"{doomed}/v1/chat/completions", json=body, timeout=10,
                      headers={"authorization": f"Bearer {key_of('crashed')}"}) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                relayed += "".join(c["delta"].get("content") or "" for c in chunk["choices"])
            if len(relayed.split()) >= 95:
                os.kill(process.pid, signal.SIGKILL)  # no chance to settle anything
                break
    process.wait(10)
    spent = spent_once_expired(gateways[0], "crashed")
    # The tally: 3 characters a token, written every TALLY_BYTES of output.
    assert spent >= (len(relayed.encode()) - TALLY_BYTES) // CHARS_PER_TOKEN * 20 > 0


def test_a_gateway_crashed_before_its_streams_first_token_charges_the_input(
        gateways: list[str], mock: MockProvider, redis_server: RedisServer,
        tmp_path: Path) -> None:
    """The provider has the prompt, and bills it, from the moment it is sent: a stream's
    first tally (its input) is written with its reservation, so a gateway killed while
    the provider thinks still charges the input when the reservation expires."""
    config = tmp_path / "router.yaml"
    config.write_text(router_yaml(mock.base_url, redis_server.url, tmp_path,  # type: ignore[attr-defined]
                                  total_s=2))
    process, doomed = start_gateway(config, tmp_path / "doomed.log")
    mock.script("gpt-cheap", Step(hang=True))
    prompt = "Think about this for a long while. " * 30  # 1,050 bytes: 350 tokens tallied
    body = {"model": "cheap", "stream": True, "max_tokens": 50,
            "messages": [{"role": "user", "content": prompt}]}

    def call() -> None:
        with contextlib.suppress(httpx.TransportError):  # the gateway dies under it
            httpx.post(f"{doomed}/v1/chat/completions", json=body, timeout=10,
                       headers={"authorization": f"Bearer {key_of('crashed-early')}"})

    threading.Thread(target=call, daemon=True).start()
    deadline = time.monotonic() + 5
    while balance(gateways[0], "crashed-early", settled=False)["reserved_usd"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)  # before any token: no chance to settle
    process.wait(10)
    spent = spent_once_expired(gateways[0], "crashed-early")
    assert spent >= len(prompt) // 3 * 10  # the input at 3 bytes a token, 10 u$ a token


def test_a_client_too_slow_to_read_its_stream_is_cut_at_total_s_and_charged_once(
        gateways: list[str], mock: MockProvider, redis_server: RedisServer,
        tmp_path: Path) -> None:
    """A client that reads 2 KB a second of a 3.6 MB stream holds the gateway's sends, not
    its reads of the provider. The stream must still end at total_s (2 s; 1 s of grace):
    past it the reservation, held total_s + 5 s, would expire under a stream still sent,
    and its settlement would then be skipped as already made. The connection is reset, so
    the client does not go on reading what the kernel had buffered for it."""
    config = tmp_path / "router.yaml"
    config.write_text(router_yaml(mock.base_url, redis_server.url, tmp_path,  # type: ignore[attr-defined]
                                  total_s=2))
    process, slow = start_gateway(config, tmp_path / "slow.log")
    try:
        mock.script("gpt-cheap", Step(text=" ".join(["x" * 60] * 60000), ignore_limit=True))
        host, port = slow.removeprefix("http://").split(":")
        body = json.dumps({"model": "cheap", "stream": True, "max_tokens": 100000,
                           "messages": [{"role": "user", "content": "Everything"}]}).encode()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n"
                     b"content-type: application/json\r\n"
                     + f"authorization: Bearer {key_of('slow-reader')}\r\n".encode()
                     + f"content-length: {len(body)}\r\n\r\n".encode() + body)
        started, closed_after = time.monotonic(), None
        sock.settimeout(1)
        while time.monotonic() - started < 12:
            try:
                if not sock.recv(200):
                    closed_after = time.monotonic() - started
                    break
            except ConnectionResetError:
                closed_after = time.monotonic() - started
                break
            except TimeoutError:
                pass
            time.sleep(0.1)
        sock.close()
        assert closed_after is not None and closed_after < 9, closed_after  # not 30 min on
        deadline = time.monotonic() + 5
        while balance(gateways[0], "slow-reader", settled=False)["reserved_usd"] > 0:
            assert time.monotonic() < deadline, "the reservation was not settled"
            time.sleep(0.1)
        line = next(json.loads(text) for text in (tmp_path / "usage.jsonl").read_text()
                    .splitlines() if json.loads(text)["key"] == "slow-reader")
        assert line["status"] == 504 and line["latency_ms"] < 4000
        spent = micro(balance(gateways[0], "slow-reader")["spent_usd"])
        assert spent == micro(line["cost_usd"]) > 0  # charged once, for what was made
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize("stream", [False, True])
def test_a_first_delta_larger_than_the_budget_is_not_sent(
        gateways: list[str], mock: MockProvider, stream: bool) -> None:
    """The first token's chunk is held to the reservation like every other one."""
    name = "blob-stream" if stream else "blob"
    blob = "".join(chr(0x4E00 + i % 2000) for i in range(3000))  # 9,000 bytes, one delta
    mock.script("gpt-cheap", Step(text=blob))
    with client_for(gateways[0], name) as client:
        _, finish, _ = answer(client, "cheap", "Blob", stream)
    assert finish == "length"
    assert micro(balance(gateways[1], name)["spent_usd"]) <= micro(BUDGETS[name])


@pytest.mark.parametrize("stream", [False, True])
def test_a_provider_that_writes_past_its_limit_is_not_charged_past_it(
        gateways: list[str], mock: MockProvider, stream: bool) -> None:
    mock.always["gpt-cheap"] = Step(text=WORDS[:3000], ignore_limit=True)
    with client_for(gateways[0], "overrun") as client:
        for i in range(20):
            if stream:
                list(client.chat.completions.create(
                    model="cheap", stream=True, max_tokens=1,
                    messages=[{"role": "user", "content": f"Overrun {i}"}]))
            else:
                chat(client, "cheap", f"Overrun {i}", max_tokens=1)
    assert micro(balance(gateways[1], "overrun")["spent_usd"]) <= micro(BUDGETS["overrun"])
    mock.script("gpt-cheap", Step(usage={"prompt_tokens": 10, "completion_tokens": 5_000_000,
                                         "total_tokens": 5_000_010}))
    with client_for(gateways[0], "overclaim") as client:
        raw = chat(client, "cheap", "Claim", max_tokens=10)
    assert micro(raw.headers["x-gateway-cost-usd"]) == 10 * 10 + 10 * 20
    assert raw.parse().usage.completion_tokens == 10


@pytest.mark.parametrize("name, model, provider_model, stream", [
    ("overreport", "cheap", "gpt-cheap", False), ("overreport-stream", "cheap", "gpt-cheap", True),
    ("claude-overreport", "claude-cheap", "claude-cheap", True)])
def test_a_provider_that_reports_more_output_than_it_showed_is_charged_what_it_showed(
        gateways: list[str], mock: MockProvider, name: str, model: str, provider_model: str,
        stream: bool) -> None:
    """Ten words shown, 3,000 tokens claimed, under the limit it was sent (8,192)."""
    openai_usage = {"prompt_tokens": 10, "completion_tokens": 3000, "total_tokens": 3010}
    claude_usage = {"input_tokens": 10, "output_tokens": 3000}
    mock.script(provider_model, Step(text="one two three four five six seven eight nine ten",
                                     usage=claude_usage if "claude" in model else openai_usage))
    with client_for(gateways[0], name) as client:
        if stream:
            list(client.chat.completions.create(
                model=model, stream=True, messages=[{"role": "user", "content": "Claim"}]))
        else:
            chat(client, model, "Claim")
    spent = micro(balance(gateways[1], name)["spent_usd"])
    assert spent <= micro(BUDGETS[name])
    assert spent <= 10 * 10 + (49 + 8) * 20  # its input, and the 49 bytes it showed at most


LONG = " ".join(["one two three four five six seven eight nine ten"] * 60)


@contextlib.contextmanager
def stallable(mock: MockProvider, tmp_path: Path) -> Iterator[tuple[RedisServer, str]]:
    """A gateway on a Redis of its own, which the test may stall with DEBUG SLEEP; the mock
    streams 600 words, one token each for it and for the gateway's tokenizer alike."""
    server = RedisServer(tmp_path, debug=True).start()
    config = tmp_path / "router.yaml"
    config.write_text(router_yaml(mock.base_url, server.url, tmp_path))  # type: ignore[attr-defined]
    mock.script("gpt-cheap", Step(text=LONG, chunk_delay_s=0.002))
    try:
        with gateway_running(config, tmp_path / "gateway.log") as base_url:
            yield server, base_url
    finally:
        server.kill()


def test_a_stream_whose_store_stays_silent_ends_with_an_error_within_wait_s(
        mock: MockProvider, tmp_path: Path) -> None:
    with stallable(mock, tmp_path) as (server, base_url), \
            client_for(base_url, "stranded", timeout=60) as client:
        stream = client.chat.completions.create(
            model="cheap", stream=True, messages=[{"role": "user", "content": "Long"}])
        next(stream)
        stall = threading.Thread(target=_debug_sleep, args=(server.port, 12))
        stall.start()
        last = time.monotonic()
        with pytest.raises(openai.APIError) as ended:
            for _ in stream:
                last = time.monotonic()
        paused = time.monotonic() - last
        stall.join(20)
    assert "store does not answer" in str(ended.value)
    assert paused <= 5 + 3  # settings.budgets.wait_s, and the store's own timeouts


def test_a_tier_whose_dear_fallback_the_budget_cannot_pay_for_is_served_by_the_rest(
        gateways: list[str], mock: MockProvider) -> None:
    with client_for(gateways[0], "thrifty") as client:
        raw = chat(client, "thrifty", "Cheap please", max_tokens=20)
    assert raw.headers["x-gateway-model"] == "cheap"
    assert mock.calls("gpt-dear") == []


def test_a_non_streamed_answer_cut_by_its_provider_is_charged_and_logged_alike(
        gateways: list[str], mock: MockProvider, files: Path) -> None:
    # No limit on a large worst case: answered whole to the client, streamed behind it.
    mock.script("gpt-cheap", Step(text=WORDS, drop_after=50))
    with client_for(gateways[0], "dropped-whole") as client, pytest.raises(openai.APIStatusError):
        chat(client, "cheap", "Drop it")
    spent = micro(balance(gateways[1], "dropped-whole")["spent_usd"])
    assert spent > 0
    assert spent == logged_spend(files, "dropped-whole", 1)


def test_a_stream_pauses_through_a_redis_stall_instead_of_ending(
        mock: MockProvider, tmp_path: Path) -> None:
    with stallable(mock, tmp_path) as (server, base_url), \
            client_for(base_url, "paused", timeout=30) as client:
        stream = client.chat.completions.create(
            model="cheap", stream=True, messages=[{"role": "user", "content": "Long"}])
        chunks = [next(stream)]
        _debug_sleep(server.port, 4)  # its reservation must grow within these 4 s
        chunks += list(stream)
    answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert answer == LONG
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


# --- refusals the budget could pay for -----------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_eight_concurrent_claude_requests_without_a_limit_are_all_served_whole(
        gateways: list[str], mock: MockProvider, stream: bool) -> None:
    """64,000 output tokens at $15 per million is $0.96: reserved whole, one would fit."""
    mock.always["claude-sonnet-4-5"] = Step(delay_s=0.3)
    clients = [client_for(base, "claude-coder") for base in gateways]

    def one(i: int) -> tuple[str, str | None, dict[str, str]]:
        return answer(clients[i % 2], "coding", f"Fix bug {i} {'streamed' if stream else ''}",
                      stream)

    try:
        results = concurrently(8, one)
    finally:
        for client in clients:
            client.close()
    for i, (text, finish, headers) in enumerate(results):
        assert text.startswith("mock answer from claude-sonnet-4-5 to: Fix bug") , i
        assert finish == "stop"
        assert "x-gateway-max-tokens-clamped" not in headers
    assert micro(balance(gateways[0], "claude-coder")["spent_usd"]) < micro(0.01)


@pytest.mark.parametrize("name, model, provider_model, stream, share", [
    ("short", "cheap", "gpt-cheap", False, 0.9), ("short-stream", "cheap", "gpt-cheap", True, 0.9),
    # Claude's tokens are counted at 1.35 x OpenAI's: it is cut sooner, never later
    ("claude-short", "claude-cheap", "claude-cheap", True, 0.65)])
def test_an_answer_the_budget_cannot_finish_ends_where_the_budget_does(
        gateways: list[str], mock: MockProvider, files: Path, name: str, model: str,
        provider_model: str, stream: bool, share: float) -> None:
    words = " ".join(["one two three four five six seven eight nine ten"] * 600)
    mock.always[provider_model] = Step(text=words)
    with client_for(gateways[0], name) as client:
        text, finish, headers = answer(client, model, "Go", stream)
    if not stream:
        assert headers["x-gateway-budget-cut"] == "true"
    assert finish == "length"
    spent = micro(balance(gateways[1], name)["spent_usd"])
    assert spent <= micro(BUDGETS[name])
    assert spent == logged_spend(files, name, 1)
    # It got most of what the budget pays for at the provider's own count (a word a token).
    affordable = (micro(BUDGETS[name]) - mock.last_answer().input_tokens * 10) // 20
    assert len(text.split()) >= share * affordable


def test_two_hundred_mixed_requests_on_two_replicas_spend_exactly_within_the_budget(
        gateways: list[str], mock: MockProvider, files: Path) -> None:
    """Both limit fields, no limit, n=2, tools, streams read whole, streams abandoned by
    their client, cut by the provider and cut by the budget, at once across two processes:
    the spend stays within the budget, equals the usage log's sum, and equals the
    provider's own usage x price for every answer the provider finished."""
    # 300 words, each one token for the mock and for the gateway's tokenizer alike
    text = " ".join(["one two three four five six seven eight nine ten"] * 30)
    mock.always["gpt-cheap"] = Step(text=text, delay_s=0.02, chunk_delay_s=0.001)
    mock.always["gpt-dropping"] = Step(text=text, drop_after=40)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}]

    async def run() -> list[tuple[str, int]]:
        clients = [openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=key_of("mixed"),
                                      max_retries=0) for base in gateways]
        raw = [httpx.AsyncClient(base_url=base, timeout=30) for base in gateways]

        async def one(i: int) -> tuple[str, int]:
            kind = ("both", "none", "n2", "tools", "stream", "abandon", "dropped")[i % 7]
            text = f"mix {kind} {i}"
            client = clients[i % 2]
            messages = [{"role": "user", "content": text}]
            try:
                if kind == "both":
                    await client.chat.completions.create(model="cheap", messages=messages,
                                                         max_tokens=1, max_completion_tokens=400)
                elif kind == "none":
                    await client.chat.completions.create(model="cheap", messages=messages)
                elif kind == "n2":
                    await client.chat.completions.create(model="cheap", messages=messages, n=2,
                                                         max_tokens=200)
                elif kind == "tools":
                    await client.chat.completions.create(model="cheap", messages=messages,
                                                         tools=tools)
                elif kind in ("stream", "dropped"):
                    model = "cheap" if kind == "stream" else "cheap-dropping"
                    stream = await client.chat.completions.create(
                        model=model, messages=messages, stream=True)
                    async for _ in stream:
                        pass
                else:
                    body = {"model": "cheap", "stream": True, "messages": messages}
                    async with raw[i % 2].stream(
                            "POST", "/v1/chat/completions", json=body,
                            headers={"authorization": f"Bearer {key_of('mixed')}"}) as response:
                        async for _ in response.aiter_bytes():
                            break  # the client leaves after its first bytes
                    return text, 499
            except openai.RateLimitError:
                return text, 429
            except openai.APIError:  # the provider's cut, as the SDK reports it mid-stream
                assert kind == "dropped"
                return text, 502
            return text, 200

        try:
            return await asyncio.gather(*(one(i) for i in range(200)))
        finally:
            for client in clients:
                await client.close()
            for http in raw:
                await http.aclose()

    results = asyncio.run(run())
    assert sum(1 for _, status in results if status == 200) > 10
    after = balance(gateways[0], "mixed")
    assert after["reserved_usd"] == 0
    spent = micro(after["spent_usd"])
    assert spent <= micro(BUDGETS["mixed"])
    assert spent == logged_spend(files, "mixed", 200)
    finished = {a.asked: a for a in mock.answers if a.asked.startswith("mix ")}
    compared = 0
    for line in log_lines(files, "mixed"):
        asked = line["prompt"][-1]["content"]
        sent = finished.get(asked)
        if (line["status"] == 200 and sent is not None and line["budget_limited"] is None
                and not asked.startswith(("mix abandon", "mix dropped"))):
            compared += 1
            assert micro(line["cost_usd"]) == sent.input_tokens * 10 + sent.output_tokens * 20, (
                asked)
    assert compared > 10
