"""Redis killed and started again under traffic: nothing crashes, nothing is lost.

A durable Redis (append-only, fsync always, as a production Redis would be) is
killed while four clients send plain, streamed and repeated (cacheable)
requests, then started again. During the outage the cache fails open and
budgeted requests follow `on_store_error`; afterwards service resumes by
itself, and the spend in Redis equals the cost of every request the usage log
says was served, the outage's included.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from gateway.demo.mockprovider import MockProvider
from tests.conftest import RedisServer, sha, start_gateway

KEY = "sk-test-steady"
HEADERS = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}


def router_yaml(mock_url: str, redis_url: str, tmp: Path, on_store_error: str) -> str:
    return "\n".join([
        "providers:",
        f"  openai: {{api_key: sk-o, api_base: '{mock_url}/v1'}}",
        "models:",
        "  steady: {provider: openai, model: gpt-steady, "
        "price: {input_per_mtok: 1000, output_per_mtok: 2000}, max_output_tokens: 50}",
        "keys:",
        f"  - {{name: steady, key_sha256: {sha(KEY)}, daily_budget_usd: 1000}}",
        "settings:",
        f"  redis_url: '{redis_url}'",
        "  cache: {enabled: true, ttl_s: 600}",
        "  retry: {max_retries: 0}",
        "  timeouts: {connect_s: 1, first_token_s: 5, total_s: 10}",
        f"  budgets: {{on_store_error: {on_store_error}}}",
        f"  usage_log: {tmp}/usage.jsonl",
    ]) + "\n"


def traffic(base_url: str, stop: threading.Event, statuses: Counter, worker: int) -> None:
    with httpx.Client(base_url=base_url, headers=HEADERS, timeout=15) as client:
        n = 0
        while not stop.is_set() and n < 2_000:
            n += 1
            kind = n % 3
            body = {"model": "steady", "max_tokens": 20,
                    "messages": [{"role": "user", "content":
                                  "the same question" if kind == 0 else f"q {worker} {n}"}]}
            if kind == 1:
                body["stream"] = True
                with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    text = b"".join(response.iter_bytes())
                    ok = response.status_code != 200 or text.rstrip().endswith(b"[DONE]")
                    statuses[(response.status_code, ok)] += 1
            else:
                response = client.post("/v1/chat/completions", json=body)
                statuses[(response.status_code, "error" in response.json() or
                          "choices" in response.json())] += 1
            time.sleep(0.005)


@pytest.mark.parametrize("on_store_error", ["allow", "refuse"])
def test_redis_killed_and_restarted_under_traffic_loses_no_spend(
        mock: MockProvider, tmp_path: Path, on_store_error: str) -> None:
    mock.keep_history = False
    server = RedisServer(tmp_path / "redis", durable=True)
    (tmp_path / "redis").mkdir()
    server.start()
    config = tmp_path / "router.yaml"
    config.write_text(router_yaml(mock.base_url, server.url, tmp_path,  # type: ignore[attr-defined]
                                  on_store_error))
    process, base_url = start_gateway(config, tmp_path / "gateway.log")
    statuses: Counter = Counter()
    stop = threading.Event()
    workers = [threading.Thread(target=traffic, args=(base_url, stop, statuses, i))
               for i in range(4)]
    try:
        for worker in workers:
            worker.start()
        time.sleep(1.5)
        server.kill()
        time.sleep(2)
        server.start()  # same port, same files: what was written before the kill is back
        time.sleep(2)
        stop.set()
        for worker in workers:
            worker.join(30)
        during = dict(statuses)
        # Service resumed by itself: a new request is served and metered.
        answer = httpx.post(f"{base_url}/v1/chat/completions", headers=HEADERS, timeout=10,
                            json={"model": "steady", "messages": [{"role": "user",
                                                                   "content": "after"}]})
        assert answer.status_code == 200 and answer.headers["x-gateway-cache"] == "miss"
        assert process.poll() is None
        deadline = time.monotonic() + 15
        while True:  # settlements queued during the outage land within seconds
            lines = [json.loads(line)
                     for line in (tmp_path / "usage.jsonl").read_text().splitlines()]
            logged = round(sum(line["cost_usd"] for line in lines
                               if line["status"] == 200) * 1_000_000)
            budget = httpx.get(f"{base_url}/v1/budget", headers=HEADERS).json()
            spent = round(budget["spent_usd"] * 1_000_000)
            if spent == logged and budget["reserved_usd"] == 0:
                break
            assert time.monotonic() < deadline, (spent, logged, budget)
            time.sleep(0.2)
    finally:
        stop.set()
        process.terminate()
        process.wait(10)
        server.kill()
        mock.keep_history = True
    log = (tmp_path / "gateway.log").read_text()
    assert "Traceback" not in log and "internal error" not in log
    # Every answer was whole; refusals (503) only with on_store_error: refuse.
    assert all(ok for (_, ok) in during), during
    codes = {status for (status, _) in during}
    assert codes <= ({200, 503} if on_store_error == "refuse" else {200}), during
    assert during.get((200, True), 0) > 100
    assert len(lines) == sum(during.values()) + 1  # every request in the usage log
    assert any(line["cache"] == "hit" for line in lines)
