"""Daily budgets end to end: two gateway processes sharing one real Redis, the OpenAI SDK."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
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
from tests.conftest import RedisServer, keys_yaml, replicas_running, start_gateway

# USD per million tokens: $0.001 per input token, $0.002 per output token.
PRICE = "price: {input_per_mtok: 1000, output_per_mtok: 2000}"
MASTER_KEY = "sk-master-test"
BUDGETS = {  # key name -> daily budget (USD); every test spends on its own key
    "crowd": 0.30, "nearly": 0.04, "exact": 10, "streamer": 10, "claude-streamer": 10,
    "leaver": 10, "crash": 0.10, "embedder": 10, "refused": 0.001, "reader": 5,
    "tight": 0.30, "chooser": 0.30, "burst": 3,
}
UNBUDGETED = ("open",)


def key_of(name: str) -> str:
    return f"sk-test-{name}"


def router_yaml(mock_url: str, redis_url: str, total_s: float = 10,
                on_store_error: str = "refuse") -> str:
    keys = keys_yaml(BUDGETS, UNBUDGETED, key_of)
    return "\n".join([
        "providers:",
        f"  openai: {{api_key: sk-o, api_base: '{mock_url}/v1'}}",
        f"  anthropic: {{api_key: sk-a, api_base: '{mock_url}'}}",
        "models:",
        f"  pricey: {{provider: openai, model: gpt-pricey, {PRICE}, max_output_tokens: 100}}",
        f"  claude-pricey: {{provider: anthropic, model: claude-pricey, {PRICE}, "
        "max_output_tokens: 100}",
        "  embed: {provider: openai, model: text-embedding-pricey, "
        "price: {input_per_mtok: 1000, output_per_mtok: 0}}",
        "tiers:",
        "  metered: [pricey]",
        "keys:", *keys,
        "settings:",
        f"  redis_url: '{redis_url}'",
        f"  master_key: {MASTER_KEY}",
        "  cache: {enabled: false}",
        "  retry: {max_retries: 0}",
        f"  timeouts: {{connect_s: 2, first_token_s: 5, total_s: {total_s}}}",
        f"  budgets: {{on_store_error: {on_store_error}}}",
    ]) + "\n"


@pytest.fixture(scope="module")
def gateways(mock: MockProvider, redis_server: RedisServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Two gateway processes, one configuration, one Redis: as two replicas would run."""
    tmp = tmp_path_factory.mktemp("budgets")
    config = tmp / "router.yaml"
    config.write_text(router_yaml(mock.base_url, redis_server.url))  # type: ignore[attr-defined]
    with replicas_running(config, tmp) as urls:
        yield urls


def client_for(base_url: str, name: str, **options: Any) -> openai.OpenAI:
    options.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key_of(name), **options)


def budget_of(base_url: str, name: str) -> dict[str, Any]:
    response = httpx.get(f"{base_url}/v1/budget",
                         headers={"authorization": f"Bearer {key_of(name)}"})
    assert response.status_code == 200, response.text
    return response.json()


def micro(usd: str | float) -> int:
    return round(float(usd) * 1_000_000)


def ask(client: openai.OpenAI, text: str = "How much does this cost?",
        **options: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="metered", messages=[{"role": "user", "content": text}], **options)


def test_the_cost_is_the_providers_usage_times_the_price(gateways: list[str],
                                                         mock: MockProvider) -> None:
    with client_for(gateways[0], "exact") as client:
        raw = ask(client, max_tokens=50)
    sent = mock.last_answer()
    expected = sent.input_tokens * 1000 + sent.output_tokens * 2000  # micro-dollars
    assert micro(raw.headers["x-gateway-cost-usd"]) == expected
    assert micro(raw.headers["x-gateway-budget-remaining-usd"]) == 10_000_000 - expected
    balance = budget_of(gateways[1], "exact")  # the other replica sees the same spend
    assert micro(balance["spent_usd"]) == expected
    assert balance["reserved_usd"] == 0
    assert balance["budget_usd"] == 10
    assert balance["resets_at"].endswith("T00:00:00Z")


def test_a_hundred_concurrent_requests_on_two_replicas_never_overspend(
        gateways: list[str], mock: MockProvider) -> None:
    mock.always["gpt-pricey"] = Step(delay_s=0.05)
    clients = [client_for(base_url, "crowd") for base_url in gateways]

    def one(i: int) -> tuple[int, int]:
        try:
            raw = ask(clients[i % 2], f"Request number {i}", max_tokens=10)
        except openai.RateLimitError as exc:
            assert exc.code == "budget_exceeded"
            return 429, 0
        return 200, micro(raw.headers["x-gateway-cost-usd"])

    try:
        with ThreadPoolExecutor(max_workers=100) as pool:
            results = list(pool.map(one, range(100)))
    finally:
        for client in clients:
            client.close()
    served = [charged for status, charged in results if status == 200]
    balance = budget_of(gateways[0], "crowd")
    assert served and len(served) < 100
    assert micro(balance["spent_usd"]) <= micro(0.30)
    assert micro(balance["spent_usd"]) == sum(served)
    assert balance["reserved_usd"] == 0
    assert len(mock.calls("gpt-pricey")) == len(served)  # refused ones never reached it


def test_a_burst_of_three_hundred_requests_on_one_gateway_is_metered_exactly(
        gateways: list[str], mock: MockProvider) -> None:
    """Reservations and settlements travel to Redis in batches; none may be lost or doubled."""
    mock.always["gpt-pricey"] = Step(delay_s=0.05)

    async def burst() -> list[tuple[int, int]]:
        async with openai.AsyncOpenAI(base_url=f"{gateways[0]}/v1", api_key=key_of("burst"),
                                      max_retries=0) as client:
            async def one(i: int) -> tuple[int, int]:
                try:
                    raw = await client.chat.completions.with_raw_response.create(
                        model="metered", max_tokens=10,
                        messages=[{"role": "user", "content": f"Burst request {i}"}])
                except openai.RateLimitError:
                    return 429, 0
                return 200, micro(raw.headers["x-gateway-cost-usd"])

            return await asyncio.gather(*(one(i) for i in range(300)))

    results = asyncio.run(burst())
    served = [charged for status, charged in results if status == 200]
    balance = budget_of(gateways[0], "burst")
    assert 0 < len(served) < 300  # the budget ran out part of the way
    assert micro(balance["spent_usd"]) == sum(served) <= micro(3)
    assert balance["reserved_usd"] == 0
    assert len(mock.calls("gpt-pricey")) == len(served)


def test_a_refusal_is_a_429_the_sdk_does_not_retry(gateways: list[str],
                                                   mock: MockProvider) -> None:
    sent: list[httpx.Request] = []
    http = httpx.Client(event_hooks={"request": [sent.append]})
    with (client_for(gateways[0], "refused", max_retries=2, http_client=http) as client,
          pytest.raises(openai.RateLimitError) as caught):
        ask(client, max_tokens=10)
    assert len(sent) == 1
    error = caught.value
    assert (error.code, error.type) == ("budget_exceeded", "insufficient_quota")
    assert error.response.headers["x-should-retry"] == "false"
    assert "budget for key refused" in error.message
    assert "$0.001000" in error.message and "resets at" in error.message
    assert mock.calls("gpt-pricey") == []


def test_a_nearly_spent_key_gets_the_answer_up_to_where_its_budget_ends(
        gateways: list[str], mock: MockProvider) -> None:
    mock.script("gpt-pricey", Step(text="budget " * 100))
    with client_for(gateways[0], "nearly") as client:
        raw = ask(client, "Tell me a long story about budgets", max_tokens=100)
    assert mock.calls("gpt-pricey")[-1].body["max_tokens"] == 100  # as asked: not lowered
    assert raw.parse().choices[0].finish_reason == "length"
    assert raw.headers["x-gateway-budget-cut"] == "true"
    assert micro(budget_of(gateways[1], "nearly")["spent_usd"]) <= micro(0.04)


def test_a_request_whose_bytes_would_not_fit_but_whose_tokens_do_is_served_whole(
        gateways: list[str], mock: MockProvider) -> None:
    # 700 bytes but about 100 tokens: priced on bytes ($0.80) it would not fit in $0.30,
    # so the gateway counts it ($0.21 with 50 output tokens) and sends it as asked.
    with client_for(gateways[0], "tight") as client:
        raw = ask(client, "budget " * 100, max_tokens=50)
    assert "x-gateway-max-tokens-clamped" not in raw.headers
    assert mock.calls("gpt-pricey")[-1].body["max_tokens"] == 50
    usage = raw.parse().usage
    charged = usage.prompt_tokens * 1000 + usage.completion_tokens * 2000
    balance = budget_of(gateways[1], "tight")
    assert (micro(balance["spent_usd"]), balance["reserved_usd"]) == (charged, 0)


def test_n_choices_reserve_n_times_the_output(gateways: list[str], mock: MockProvider) -> None:
    with client_for(gateways[0], "chooser") as client:
        ask(client, "Pick one", max_tokens=50, n=4)
        sent = mock.calls("gpt-pricey")[-1].body
        assert (sent["n"], sent["max_tokens"]) == (4, 50)
        with pytest.raises(openai.RateLimitError):
            ask(client, "Pick one", max_tokens=50, n=100_000)  # not one token each fits
    assert micro(budget_of(gateways[1], "chooser")["spent_usd"]) <= micro(0.30)


def test_spending_down_to_the_last_cent_then_refusing(gateways: list[str]) -> None:
    statuses = []
    with client_for(gateways[1], "reader") as client:
        mock_text = "Spend it all, " * 20
        for _ in range(400):
            try:
                ask(client, mock_text, max_tokens=100)
                statuses.append(200)
            except openai.RateLimitError:
                statuses.append(429)
                break
    assert statuses[-1] == 429
    balance = budget_of(gateways[0], "reader")
    assert micro(balance["spent_usd"]) <= micro(5)
    # Refused only once what is left cannot pay for the input and one output token.
    assert balance["remaining_usd"] < 0.25


@pytest.mark.parametrize("name, model, provider_model", [
    ("streamer", "pricey", "gpt-pricey"), ("claude-streamer", "claude-pricey", "claude-pricey")])
def test_a_stream_is_charged_from_the_providers_usage(
        gateways: list[str], mock: MockProvider, name: str, model: str,
        provider_model: str) -> None:
    with client_for(gateways[0], name) as client:
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Stream it"}], stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    sent = mock.last_answer()
    assert text == sent.text
    expected = sent.input_tokens * 1000 + sent.output_tokens * 2000
    balance = budget_of(gateways[1], name)
    assert micro(balance["spent_usd"]) == expected
    assert balance["reserved_usd"] == 0


def test_a_client_that_leaves_mid_stream_is_charged_for_what_was_generated(
        gateways: list[str], mock: MockProvider) -> None:
    words = " ".join(f"word{i}" for i in range(40))
    mock.script("gpt-pricey", Step(text=words, chunk_delay_s=0.1))
    body = {"model": "metered", "stream": True,
            "messages": [{"role": "user", "content": "Go on and on"}]}
    with httpx.stream("POST", f"{gateways[0]}/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {key_of('leaver')}"}) as response:
        assert response.status_code == 200
        next(response.iter_raw())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and budget_of(gateways[0], "leaver")["reserved_usd"]:
        time.sleep(0.05)
    balance = budget_of(gateways[0], "leaver")
    full = mock.last_answer().input_tokens * 1000 + 40 * 2000
    assert balance["reserved_usd"] == 0
    assert 0 < micro(balance["spent_usd"]) < full


def test_embeddings_are_charged_for_their_input(gateways: list[str],
                                                mock: MockProvider) -> None:
    with client_for(gateways[0], "embedder") as client:
        raw = client.embeddings.with_raw_response.create(model="embed", input="one two three")
    tokens = raw.parse().usage.prompt_tokens
    assert micro(raw.headers["x-gateway-cost-usd"]) == tokens * 1000
    assert micro(budget_of(gateways[1], "embedder")["spent_usd"]) == tokens * 1000


def test_a_killed_gateways_reservation_expires_on_its_own(
        gateways: list[str], mock: MockProvider, redis_server: RedisServer,
        tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(router_yaml(mock.base_url, redis_server.url, total_s=1))  # type: ignore[attr-defined]
    process, doomed = start_gateway(config, tmp_path / "doomed.log")
    mock.script("gpt-pricey", Step(hang=True))
    def call() -> None:
        with contextlib.suppress(httpx.TransportError):  # the gateway dies under it
            httpx.post(f"{doomed}/v1/chat/completions", timeout=10,
                       headers={"authorization": f"Bearer {key_of('crash')}"},
                       json={"model": "metered", "max_tokens": 20,
                             "messages": [{"role": "user", "content": "hang"}]})

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    deadline = time.monotonic() + 5
    while budget_of(gateways[0], "crash")["reserved_usd"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)  # no chance to release what it holds
    process.wait(10)
    assert budget_of(gateways[0], "crash")["reserved_usd"] > 0
    deadline = time.monotonic() + 15  # total_s 1 + the 5 s margin, and some slack
    while budget_of(gateways[0], "crash")["reserved_usd"] > 0:
        assert time.monotonic() < deadline, "the reservation did not expire"
        time.sleep(0.2)
    assert budget_of(gateways[0], "crash")["spent_usd"] == 0


def test_admin_spend_lists_every_keys_spend_for_a_day(gateways: list[str]) -> None:
    with client_for(gateways[0], "open") as client:
        charged = micro(ask(client, max_tokens=5).headers["x-gateway-cost-usd"])
    response = httpx.get(f"{gateways[1]}/admin/spend",
                         headers={"authorization": f"Bearer {MASTER_KEY}"})
    assert response.status_code == 200
    rows = {row["key"]: row for row in response.json()["keys"]}
    assert set(BUDGETS) | set(UNBUDGETED) <= set(rows)
    assert micro(rows["open"]["spent_usd"]) >= charged  # a key without a budget is tracked
    assert rows["open"]["budget_usd"] is None
    day = response.json()["date"]
    other_day = httpx.get(f"{gateways[1]}/admin/spend?date=2001-01-01",
                          headers={"authorization": f"Bearer {MASTER_KEY}"}).json()
    assert other_day["total_usd"] == 0 and other_day["date"] != day


@pytest.mark.parametrize("headers, status", [
    ({}, 401), ({"authorization": f"Bearer {key_of('open')}"}, 401)])
def test_admin_needs_the_master_key(gateways: list[str], headers: dict[str, str],
                                    status: int) -> None:
    response = httpx.get(f"{gateways[0]}/admin/spend", headers=headers)
    assert response.status_code == status
    assert "master key" in response.json()["error"]["message"]


def test_admin_spend_rejects_a_bad_date(gateways: list[str]) -> None:
    response = httpx.get(f"{gateways[0]}/admin/spend?date=yesterday",
                         headers={"authorization": f"Bearer {MASTER_KEY}"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "date"


@pytest.mark.parametrize("on_store_error", ["refuse", "allow"])
def test_with_the_store_down_budgeted_keys_follow_on_store_error(
        mock: MockProvider, tmp_path: Path, on_store_error: str) -> None:
    server = RedisServer(tmp_path).start()
    config = tmp_path / "router.yaml"
    config.write_text(router_yaml(mock.base_url, server.url,  # type: ignore[attr-defined]
                                  on_store_error=on_store_error))
    process, base_url = start_gateway(config, tmp_path / "gateway.log")
    try:
        server.kill()
        with client_for(base_url, "exact") as budgeted, client_for(base_url, "open") as free:
            ask(free, max_tokens=5)  # a key without a budget is always served
            if on_store_error == "refuse":
                with pytest.raises(openai.InternalServerError) as caught:
                    ask(budgeted, max_tokens=5)
                assert caught.value.status_code == 503
                assert "on_store_error: refuse" in caught.value.message
            else:
                ask(budgeted, max_tokens=5)
        server.start()  # empty: this Redis keeps nothing across restarts
        deadline = time.monotonic() + 10
        while True:  # the settlement queued during the outage lands
            response = httpx.get(f"{base_url}/v1/budget",
                                 headers={"authorization": f"Bearer {key_of('open')}"})
            if response.status_code == 200 and response.json()["spent_usd"]:
                break
            assert time.monotonic() < deadline, "the spend of the outage was lost"
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(10)
        server.kill()
