"""Limits that hold across replicas: two gateway processes, one real Redis, the OpenAI SDK.

Per-key requests and tokens per minute and requests in flight, a model's own quota,
cooldowns one replica's failures start for the other, and budget alerts sent once per
key, threshold and day to a webhook on loopback.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import RedisServer, gateway_running, replicas_running, sha

PRICE = "price: {input_per_mtok: 1000, output_per_mtok: 2000}"  # $0.001 / $0.002 a token
ALERT_BUDGET_USD = 1.0


def key_of(name: str) -> str:
    return f"sk-test-limits-{name}"


# Key name -> its extra fields. Every test uses keys of its own: the session's Redis is shared.
KEYS = {
    "rpm": "limits: {rpm: 10}",
    "retried": "limits: {max_in_flight: 1}",
    "tpm": "limits: {tpm: 100}",
    "open": "",
    "alerted": f"daily_budget_usd: {ALERT_BUDGET_USD}, alert_at_percent: [10, 30, 50]",
    "budgeted": "daily_budget_usd: 0.000001",
    "single": "limits: {rpm: 1}",
}


class Webhook(ThreadingHTTPServer):
    """A loopback webhook: records each JSON body; answers 500 to the first `failures`."""

    def __init__(self, failures: int = 0) -> None:
        self.received: list[dict[str, Any]] = []
        self.delivered: list[dict[str, Any]] = []
        self.failures = failures
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with hook.lock:
                    hook.received.append(body)
                    failing = hook.failures > 0
                    hook.failures -= 1
                    if not failing:
                        hook.delivered.append(body)
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/alerts?token=hook-secret"


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    server = Webhook(failures=1)  # the first delivery fails: it is retried
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def router_yaml(mock_url: str, redis_url: str, webhook_url: str, tmp: Path) -> str:
    keys = [f"  - {{name: limits-{name}, key_sha256: {sha(key_of(name))}"
            + (f", {extra}" if extra else "") + "}" for name, extra in KEYS.items()]
    return "\n".join([
        "providers:",
        f"  openai: {{api_key: sk-o, api_base: '{mock_url}/v1'}}",
        "models:",
        f"  plain: {{provider: openai, model: gpt-plain, {PRICE}, max_output_tokens: 50}}",
        f"  quota-a: {{provider: openai, model: gpt-quota-a, {PRICE}, limits: {{rpm: 3}}}}",
        f"  quota-b: {{provider: openai, model: gpt-quota-b, {PRICE}}}",
        f"  quota-c: {{provider: openai, model: gpt-quota-c, {PRICE}, limits: {{rpm: 1}}}}",
        f"  quota-d: {{provider: openai, model: gpt-quota-d, {PRICE}, limits: {{rpm: 2}}}}",
        f"  flaky: {{provider: openai, model: gpt-flaky, {PRICE}}}",
        f"  steady: {{provider: openai, model: gpt-steady, {PRICE}}}",
        "tiers:",
        "  basic: [plain]",
        "  quota: [quota-a, quota-b]",
        "  scarce: [quota-c]",
        "  ahead: [quota-d]",
        "  cooling: [flaky, steady]",
        "keys:", *keys,
        "settings:",
        f"  redis_url: '{redis_url}'",
        "  cache: {enabled: false}",
        "  retry: {max_retries: 0}",
        "  cooldown: {after_failures: 2, window_s: 60, for_s: 60}",
        "  timeouts: {connect_s: 2, first_token_s: 5, total_s: 10}",
        f"  alerts: {{webhook_url: '{webhook_url}', attempts: 3}}",
        f"  usage_log: {tmp}/usage.jsonl",
    ]) + "\n"


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("limits")


@pytest.fixture(scope="module")
def replicas(mock: MockProvider, webhook: Webhook, tmp: Path) -> Iterator[list[str]]:
    """Two gateway processes, one configuration, one Redis: as two replicas would run. The
    Redis is theirs alone: every gateway on a Redis takes its queued alerts, and the other
    tests' gateways (another configuration, no webhook) would take these."""
    server = RedisServer(tmp).start()
    config = tmp / "router.yaml"
    config.write_text(router_yaml(mock.base_url, server.url,  # type: ignore[attr-defined]
                                  webhook.url, tmp))
    try:
        with replicas_running(config, tmp) as urls:
            yield urls
    finally:
        server.kill()


def client_for(base_url: str, name: str, **options: Any) -> openai.OpenAI:
    options.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key_of(name), **options)


def post(base_url: str, name: str, tier: str = "basic", text: str = "hello") -> httpx.Response:
    return httpx.post(f"{base_url}/v1/chat/completions", timeout=15,
                      headers={"authorization": f"Bearer {key_of(name)}"},
                      json={"model": tier, "messages": [{"role": "user", "content": text}]})


def test_a_key_limited_to_n_requests_a_minute_gets_exactly_n_across_two_replicas(
        replicas: list[str]) -> None:
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: post(replicas[i % 2], "rpm"), range(32)))
    ok = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(ok) == 10 and len(refused) == 22, [a.status_code for a in answers]
    assert {a.headers["x-ratelimit-limit-requests"] for a in ok} == {"10"}
    assert sorted(int(a.headers["x-ratelimit-remaining-requests"]) for a in ok) == list(range(10))
    error = refused[0].json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert "limits-rpm" in error["message"] and "requests per minute" in error["message"]
    assert 1 <= int(refused[0].headers["retry-after"]) <= 60
    assert refused[0].headers["x-ratelimit-remaining-requests"] == "0"
    assert refused[0].headers["x-should-retry"] == "true"  # unlike a budget's refusal
    # A budget refusal stays one the SDKs do not retry.
    budget_refusal = post(replicas[0], "budgeted")
    assert budget_refusal.status_code == 429
    assert budget_refusal.headers["x-should-retry"] == "false"


def test_the_sdk_retries_a_rate_limit_refusal_and_is_served(replicas: list[str],
                                                           mock: MockProvider,
                                                           tmp: Path) -> None:
    """max_in_flight 1: while one request is answered (slowly) on one replica, the other's
    request is refused with Retry-After, and the SDK's own retry is served."""
    mock.script("gpt-plain", Step(delay_s=1.5))
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(post, replicas[0], "retried")
        time.sleep(0.5)
        with client_for(replicas[1], "retried", max_retries=3) as client:
            started = time.monotonic()
            raw = client.chat.completions.with_raw_response.create(
                model="basic", messages=[{"role": "user", "content": "me too"}])
            waited = time.monotonic() - started
        assert slow.result().status_code == 200
    assert raw.parse().choices[0].message.content
    assert waited >= 0.9  # it waited for the slow request's place, as Retry-After said
    # The refusals the SDK retried are in the usage log, and no provider was called for them.
    lines = [json.loads(line) for line in (tmp / "usage.jsonl").read_text().splitlines()]
    refused = [line for line in lines if line["key"] == "limits-retried"
               and line["status"] == 429]
    assert refused and all(line["attempts"] == [] for line in refused)


def test_tokens_per_minute_count_the_real_usage(replicas: list[str]) -> None:
    used, served = 0, 0
    for i in range(20):
        answer = post(replicas[i % 2], "tpm", text="count my tokens please")
        if answer.status_code == 429:
            refusal = answer.json()["error"]
            assert refusal["type"] == "tokens" and "tokens per minute" in refusal["message"]
            assert answer.headers["x-ratelimit-remaining-tokens"] == "0"
            break
        assert answer.status_code == 200
        served += 1
        used += answer.json()["usage"]["total_tokens"]
        time.sleep(0.1)  # the usage is written once the answer is sent
    else:
        pytest.fail("the tokens-per-minute limit never refused")
    per_request = used // served
    # Admitted while the minute's real usage was under 100 tokens: exactly that many.
    assert served == -(-100 // per_request), (served, used)


def test_a_model_past_its_own_quota_is_skipped_without_calling_it(replicas: list[str],
                                                                  mock: MockProvider) -> None:
    answers = [post(replicas[i % 2], "open", tier="quota") for i in range(6)]
    assert [a.status_code for a in answers] == [200] * 6
    assert len(mock.calls("gpt-quota-a")) == 3  # rpm 3: the chain moved on after three
    assert len(mock.calls("gpt-quota-b")) == 3
    assert [a.headers["x-gateway-model"] for a in answers[3:]] == ["quota-b"] * 3
    # Every model of the chain used up: a 429 worth retrying later, and no call.
    first, second = post(replicas[0], "open", tier="scarce"), post(replicas[1], "open",
                                                                    tier="scarce")
    assert first.status_code == 200 and second.status_code == 429
    assert len(mock.calls("gpt-quota-c")) == 1
    assert "quota is used up" in second.json()["error"]["message"]
    assert int(second.headers["retry-after"]) >= 1
    assert second.headers["x-should-retry"] == "true"


def test_a_models_place_asked_with_a_refused_reservation_or_admission_is_given_back(
        replicas: list[str], mock: MockProvider) -> None:
    """The first model's place is asked with the key's admission and the budget's
    reservation, in one command; when either refuses, no call takes it, and it must not
    count against the model's rpm (2 here)."""
    for i in range(3):  # the budget refuses
        assert post(replicas[i % 2], "budgeted", tier="ahead").status_code == 429
    assert post(replicas[0], "single", tier="ahead").status_code == 200
    for i in range(2):  # the key's own rpm (1) refuses
        refused = post(replicas[i % 2], "single", tier="ahead")
        assert refused.status_code == 429 and "limits-single" in refused.json()["error"]["message"]
    time.sleep(0.2)  # the places given back are written off the request's path
    assert post(replicas[1], "open", tier="ahead").status_code == 200  # the model's 2nd place
    used_up = post(replicas[0], "open", tier="ahead")
    assert used_up.status_code == 429 and "quota is used up" in used_up.json()["error"]["message"]
    assert len(mock.calls("gpt-quota-d")) == 2


def test_failures_on_two_replicas_add_up_to_one_cooldown_for_both(replicas: list[str],
                                                                  mock: MockProvider) -> None:
    """after_failures 2: one failure on each replica cools the model on both (counted
    apart, neither would)."""
    mock.script("gpt-flaky", Step(status=500), Step(status=500))
    for base_url in replicas:
        answer = post(base_url, "open", tier="cooling")
        assert answer.status_code == 200 and answer.headers["x-gateway-model"] == "steady"
    assert len(mock.calls("gpt-flaky")) == 2
    time.sleep(1.2)  # each replica syncs twice a second
    for i in range(6):
        answer = post(replicas[i % 2], "open", tier="cooling")
        assert answer.status_code == 200 and answer.headers["x-gateway-model"] == "steady"
        assert answer.headers["x-gateway-attempts"] == "1"  # the cooling model was skipped
    assert len(mock.calls("gpt-flaky")) == 2


def _spent(base_url: str, name: str) -> float:
    response = httpx.get(f"{base_url}/v1/budget",
                         headers={"authorization": f"Bearer {key_of(name)}"})
    return float(response.json()["spent_usd"])


def test_each_alert_threshold_fires_once_with_both_replicas_crossing_it(
        replicas: list[str], webhook: Webhook, tmp: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        while _spent(replicas[0], "alerted") < 0.55 * ALERT_BUDGET_USD:
            answers = list(pool.map(lambda i: post(replicas[i % 2], "alerted",
                                                   text="spend " * 40), range(8)))
            assert {a.status_code for a in answers} == {200}
    deadline = time.monotonic() + 10
    while len(webhook.delivered) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)  # a duplicate would come within the queue's next poll
    assert sorted(a["threshold_percent"] for a in webhook.delivered) == [10, 30, 50]
    assert len(webhook.received) == 4  # the first delivery failed and was retried once
    today = datetime.now(UTC).date().isoformat()
    for alert in webhook.delivered:
        assert alert["type"] == "budget_alert" and alert["key"] == "limits-alerted"
        assert alert["date"] == today and alert["budget_usd"] == ALERT_BUDGET_USD
        assert alert["spent_usd"] >= ALERT_BUDGET_USD * alert["threshold_percent"] / 100
        text = json.dumps(alert)
        assert "sk-" not in text and "spend" not in text  # no key, no prompt
    # One log line per alert, from whichever replica took it; the webhook's token in none.
    logs = "".join((tmp / f"gateway-{i}.log").read_text() for i in range(2))
    assert logs.count("budget alert: key limits-alerted reached") == 3
    assert "hook-secret" not in logs
    counted = 0.0
    for base_url in replicas:
        for line in httpx.get(f"{base_url}/metrics").text.splitlines():
            if line.startswith('gateway_budget_alerts_total{key="limits-alerted"'):
                counted += float(line.split()[-1])
    assert counted == 3


def test_with_the_store_down_limits_give_way_and_cooldowns_go_by_each_process(
        mock: MockProvider, webhook: Webhook, tmp_path: Path) -> None:
    """A dead Redis is neither an outage nor a free-for-all of failing calls: a limited key is
    served, and a failing model still cools on the process that saw it fail."""
    server = RedisServer(tmp_path).start()
    config = tmp_path / "router.yaml"
    config.write_text(router_yaml(mock.base_url, server.url, webhook.url,  # type: ignore[attr-defined]
                                  tmp_path))
    try:
        with gateway_running(config, tmp_path / "gateway.log") as base_url:
            assert [post(base_url, "rpm").status_code for _ in range(11)] == [200] * 10 + [429]
            server.kill()
            for _ in range(3):  # past rpm's count nobody can read: served, not refused
                answer = post(base_url, "rpm")
                assert answer.status_code == 200, answer.text
                assert "x-ratelimit-limit-requests" not in answer.headers
            mock.script("gpt-flaky", Step(status=500), Step(status=500))
            for _ in range(2):
                assert post(base_url, "open", tier="cooling").headers["x-gateway-model"] == \
                    "steady"
            calls = len(mock.calls("gpt-flaky"))
            assert calls == 2
            for _ in range(3):  # its own two failures cooled it: skipped without the store
                answer = post(base_url, "open", tier="cooling")
                assert answer.headers["x-gateway-attempts"] == "1"
            assert len(mock.calls("gpt-flaky")) == calls
            assert httpx.get(f"{base_url}/health").status_code == 200
    finally:
        server.kill()


def _script_calls(url: str) -> int:
    import redis

    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
               for name in ("evalsha", "eval"))


def test_limits_budgets_and_the_fleet_share_the_ledgers_commands(
        mock: MockProvider, webhook: Webhook, tmp_path: Path) -> None:
    """A limited, budgeted request makes five ledger entries (admission, reservation,
    settlement, its usage, its place in flight freed); concurrent requests' entries go
    to the store together, one command per turn of the event loop, not one each."""
    server = RedisServer(tmp_path).start()
    config = tmp_path / "router.yaml"
    text = router_yaml(mock.base_url, server.url, webhook.url, tmp_path)  # type: ignore[attr-defined]
    config.write_text(text.replace("alert_at_percent: [10, 30, 50]",
                                   "limits: {rpm: 1000, tpm: 10000000, max_in_flight: 100}"))
    mock.always["gpt-plain"] = Step(delay_s=0.2)  # so that the requests overlap
    try:
        with gateway_running(config, tmp_path / "gateway.log") as base_url:
            before = _script_calls(server.url)
            with ThreadPoolExecutor(40) as pool:
                answers = list(pool.map(lambda _: post(base_url, "alerted"), range(40)))
            assert {a.status_code for a in answers} == {200}
            assert answers[0].headers["x-ratelimit-limit-requests"] == "1000"
            time.sleep(0.5)  # the last settlements
            calls = _script_calls(server.url) - before
    finally:
        server.kill()
    entries = 40 * 5
    assert calls < entries / 3, calls  # the fleet's own syncs (twice a second) included
