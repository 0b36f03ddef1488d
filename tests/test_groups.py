"""Balanced groups and budget downgrades end to end: two gateway processes sharing one real
Redis, the scripted mock, the OpenAI SDK. Every test has tiers and models of its own."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import RedisServer, gateway_running, sha, usage_lines_of

MASTER_KEY = "sk-master-groups"
ADMIN = {"authorization": f"Bearer {MASTER_KEY}"}
KEY = "sk-test-groups"
DOWNGRADED_KEY = "sk-test-groups-downgraded"
PRICE = "price: {input_per_mtok: 1, output_per_mtok: 1}"
# $0.01 a token: a request of about 25 tokens spends about a quarter of a $1 budget.
DEAR = "price: {input_per_mtok: 10000, output_per_mtok: 10000}, max_output_tokens: 20"
MODELS = ["w-a", "w-b", "f-a", "f-b", "f-c", "l-slow", "l-fast", "t-slow", "t-fast", "c-a",
          "c-b", "r-a", "r-b", "dg-fast"]


def router_yaml(mock_url: str, redis_url: str, tmp: Path, reload_weights: str) -> str:
    return "\n".join([
        "providers:",
        f"  openai: {{api_key: sk-o, api_base: '{mock_url}/v1'}}",
        "models:",
        *[f"  {m}: {{provider: openai, model: {m}, {PRICE}}}" for m in MODELS],
        f"  dg-smart: {{provider: openai, model: dg-smart, {DEAR}}}",
        "tiers:",
        "  spread: [{group: [w-a, w-b], weights: {w-a: 3}}]",
        "  failover: [{group: [f-a, f-b]}, f-c]",
        "  busy: [{group: [l-slow, l-fast], balance: least-busy}]",
        "  quick: [{group: [t-slow, t-fast], balance: latency}]",
        "  cached: [{group: [c-a, c-b], balance: least-busy}]",
        f"  reloaded: [{{group: [r-a, r-b], weights: {reload_weights}}}]",
        "  smart-dg: [dg-smart]",
        "  fast-dg: [dg-fast]",
        "keys:",
        f"  - {{name: groups, key_sha256: {sha(KEY)}}}",
        f"  - {{name: groups-downgraded-{uuid.uuid4().hex[:8]}, key_sha256: "
        f"{sha(DOWNGRADED_KEY)}, daily_budget_usd: 1, allow: [smart-dg],",
        "      downgrade: [{tier: smart-dg, to: fast-dg, after_percent: 50}]}",
        "settings:",
        f"  redis_url: '{redis_url}'",
        f"  master_key: {MASTER_KEY}",
        "  watch_config: false",
        "  retry: {max_retries: 0}",
        "  cooldown: {after_failures: 1000}",
        "  timeouts: {connect_s: 2, first_token_s: 5, total_s: 10}",
        f"  usage_log: {tmp}/usage.jsonl",
    ]) + "\n"


class Replicas:
    def __init__(self, urls: list[str], config: Path, text: str, tmp: Path):
        self.urls, self.config, self.text, self.tmp = urls, config, text, tmp

    def client(self, i: int = 0, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.urls[i]}/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def replicas(mock: MockProvider, redis_server: RedisServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    tmp = tmp_path_factory.mktemp("groups")
    config = tmp / "router.yaml"
    text = router_yaml(mock.base_url, redis_server.url, tmp,  # type: ignore[attr-defined]
                       "{r-a: 3}")
    config.write_text(text)
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(gateway_running(config, tmp / f"gateway-{i}.log"))
                for i in range(2)]
        yield Replicas(urls, config, text, tmp)


def ask(client: openai.OpenAI, tier: str, text: str | None = None, **options: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=tier, messages=[{"role": "user", "content": text or uuid.uuid4().hex}],
        **options)


def served_by(replicas: Replicas, tier: str, n: int, workers: int = 16) -> Counter[str]:
    """`n` requests for `tier`, spread over both replicas; which model served each."""
    clients = [replicas.client(0), replicas.client(1)]

    def one(i: int) -> str:
        return str(ask(clients[i % 2], tier).headers["x-gateway-model"])

    with ThreadPoolExecutor(workers) as pool:
        return Counter(pool.map(one, range(n)))


def test_a_weighted_group_spreads_three_to_one_over_two_replicas(replicas: Replicas) -> None:
    counts = served_by(replicas, "spread", 400)
    assert sum(counts.values()) == 400
    share = counts["w-a"] / 400
    assert 0.67 <= share <= 0.83, counts  # 75% +- 8 points (about 3.7 standard deviations)


def test_the_other_member_answers_when_the_drawn_one_fails_before_the_next_step(
        replicas: Replicas, mock: MockProvider) -> None:
    mock.always["f-a"] = Step(status=503, error_message="down")
    attempts = []
    for i in range(12):
        raw = ask(replicas.client(i % 2), "failover")
        assert raw.headers["x-gateway-model"] == "f-b"
        attempts.append(int(raw.headers["x-gateway-attempts"]))
    assert 2 in attempts and 1 in attempts  # f-a was drawn first some times, not always
    assert mock.calls("f-c") == []


def test_least_busy_sends_concurrent_requests_to_the_member_that_is_not_slow(
        replicas: Replicas, mock: MockProvider) -> None:
    mock.always["l-slow"] = Step(delay_s=1.0)  # listed first: a tie goes to it
    client = replicas.client(0)
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    until = time.monotonic() + 2.5

    def worker() -> None:
        while time.monotonic() < until:
            model = str(ask(client, "busy").headers["x-gateway-model"])
            with lock:
                counts[model] += 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts["l-slow"] >= 1, counts  # it was chosen while it was idle
    assert counts["l-fast"] >= 4 * counts["l-slow"], counts


def test_latency_sends_the_traffic_to_the_faster_member_after_warm_up(
        replicas: Replicas, mock: MockProvider) -> None:
    mock.always["t-slow"] = Step(delay_s=0.3)
    client = replicas.client(1)
    warm = [ask(client, "quick").headers["x-gateway-model"] for _ in range(2)]
    assert sorted(warm) == ["t-fast", "t-slow"]  # each untried member goes first once
    after = Counter(ask(client, "quick").headers["x-gateway-model"] for _ in range(10))
    assert after == {"t-fast": 10}


def test_an_answer_cached_from_one_member_is_a_hit_whichever_member_is_drawn(
        replicas: Replicas, mock: MockProvider) -> None:
    mock.script("c-a", Step(status=503))  # c-a goes first when both are idle: it fails once
    first = ask(replicas.client(0), "cached", "the same question")
    assert (first.headers["x-gateway-model"], first.headers["x-gateway-cache"]) == ("c-b",
                                                                                   "miss")
    again = ask(replicas.client(1), "cached", "the same question")  # drawn: c-a first
    assert (again.headers["x-gateway-model"], again.headers["x-gateway-cache"]) == ("c-b",
                                                                                   "hit")
    assert len(mock.calls("c-a")) == 1


def test_admin_config_shows_the_group_and_a_reload_of_its_weights_changes_the_spread(
        replicas: Replicas) -> None:
    shown = httpx.get(f"{replicas.urls[0]}/admin/config", headers=ADMIN).json()
    assert shown["config"]["tiers"]["reloaded"] == [
        {"group": ["r-a", "r-b"], "balance": "weighted", "weights": {"r-a": 3.0}}]
    assert served_by(replicas, "reloaded", 200)["r-a"] > 120
    new = replicas.text.replace("weights: {r-a: 3}", "weights: {r-b: 3}")
    (replicas.tmp / "next.yaml").write_text(new)
    (replicas.tmp / "next.yaml").replace(replicas.config)
    try:
        for url in replicas.urls:
            answer = httpx.post(f"{url}/admin/reload", headers=ADMIN).json()
            assert answer["status"] == "reloaded", answer
            assert "tiers changed: reloaded" in answer["changes"], answer
        shown = httpx.get(f"{replicas.urls[1]}/admin/config", headers=ADMIN).json()
        assert shown["config"]["tiers"]["reloaded"][0]["weights"] == {"r-b": 3.0}
        assert served_by(replicas, "reloaded", 200)["r-b"] > 120
    finally:
        replicas.config.write_text(replicas.text)
        for url in replicas.urls:
            httpx.post(f"{url}/admin/reload", headers=ADMIN).raise_for_status()


def test_past_its_share_of_the_budget_a_key_is_served_by_the_cheaper_tier(
        replicas: Replicas) -> None:
    client = replicas.client(0, DOWNGRADED_KEY)
    remaining = 1.0
    for _ in range(6):
        raw = ask(client, "smart-dg", max_tokens=20)
        if remaining > 0.5:  # what this replica saw spent is below the threshold
            assert "x-gateway-downgraded" not in raw.headers
            assert raw.headers["x-gateway-model"] == "dg-smart"
            remaining = float(raw.headers["x-gateway-budget-remaining-usd"])
            continue
        assert raw.headers["x-gateway-downgraded"] == "smart-dg -> fast-dg"
        assert raw.headers["x-gateway-model"] == "dg-fast"
        line, = usage_lines_of(replicas.tmp / "usage.jsonl", raw.headers["x-request-id"])
        assert (line["requested"], line["model"], line["downgraded"]) == (
            "smart-dg", "dg-fast", "smart-dg -> fast-dg")
        break
    else:
        pytest.fail("the key was never downgraded")
    with client.chat.completions.with_streaming_response.create(
            model="smart-dg", messages=[{"role": "user", "content": "stream"}],
            stream=True) as stream:
        assert stream.headers["x-gateway-downgraded"] == "smart-dg -> fast-dg"
        assert "".join(stream.iter_lines())
