"""Overload and clients that leave: a fast 503 past what a worker can serve, recovery as soon as
the load drops, and no provider called for a client that has gone."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import KEY_A, gateway_running, sha, wait_for

HELLO = [{"role": "user", "content": "hello"}]
AUTH = {"authorization": f"Bearer {KEY_A}"}
MAX_IN_FLIGHT = 3


def router_yaml(mock_url: str, tmp: Path, overload: str, first_token_s: float) -> str:
    price = "price: {input_per_mtok: 1, output_per_mtok: 2}"
    models = ["slow", "fast", "gone-a", "gone-b", "gone-r"]
    return "\n".join([
        "providers:", f"  openai: {{api_key: sk-o, api_base: '{mock_url}/v1'}}", "models:",
        *[f"  {m}: {{provider: openai, model: {m}, {price}}}" for m in models],
        "tiers:", "  gone: [gone-a, gone-b]",
        "keys:", f"  - {{name: team-a, key_sha256: {sha(KEY_A)}}}",
        "settings:",
        f"  overload: {overload}",
        "  retry: {max_retries: 2, initial_backoff_s: 0.05, max_backoff_s: 2}",
        f"  timeouts: {{connect_s: 1, first_token_s: {first_token_s}, total_s: 30}}",
        "  cooldown: {after_failures: 1000, window_s: 60, for_s: 1}",
        "  cache: {enabled: false}",
        f"  data_dir: {tmp}/data", f"  usage_log: {tmp}/usage.jsonl",
    ]) + "\n"


def started_gateway(mock: MockProvider, tmp: Path, overload: str,
                    first_token_s: float) -> Iterator[str]:
    config = tmp / "router.yaml"
    config.write_text(router_yaml(mock.base_url, tmp, overload,  # type: ignore[attr-defined]
                                  first_token_s))
    with gateway_running(config, tmp / "gateway.log") as base_url:
        yield base_url


@pytest.fixture(scope="module")
def small_gateway(mock: MockProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from started_gateway(mock, tmp_path_factory.mktemp("overload"),
                               f"{{max_in_flight: {MAX_IN_FLIGHT}, max_delay_ms: 0}}",
                               first_token_s=1)


@pytest.fixture(scope="module")
def delay_gateway(mock: MockProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # A loop that busy may take a while over a small answer too: no timeout must fire.
    yield from started_gateway(mock, tmp_path_factory.mktemp("delay"), "{max_delay_ms: 5}",
                               first_token_s=20)


def chat(base_url: str, model: str, timeout_s: float = 10, **body: object) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/chat/completions", headers=AUTH, timeout=timeout_s,
                      json={"model": model, "messages": HELLO, **body})


def usage_lines(base_url: str, tmp_dir: Path) -> list[dict[str, object]]:
    path = tmp_dir / "usage.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def test_past_max_in_flight_a_request_gets_a_fast_503_with_retry_after(
        small_gateway: str, mock: MockProvider) -> None:
    mock.always["slow"] = Step(delay_s=0.8)
    answers: list[int] = []
    holders = [threading.Thread(target=lambda: answers.append(chat(small_gateway, "slow")
                                                              .status_code))
               for _ in range(MAX_IN_FLIGHT)]
    for holder in holders:
        holder.start()
    wait_for(lambda: len(mock.calls("slow")) >= MAX_IN_FLIGHT, within_s=5)
    started = time.monotonic()
    refused = chat(small_gateway, "fast")
    assert time.monotonic() - started < 0.5
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    error = refused.json()["error"]
    assert error["code"] == "overloaded" and "max_in_flight (3" in error["message"]
    assert "x-should-retry" not in refused.headers  # an SDK retries it
    assert mock.calls("fast") == []
    # Health, readiness and metrics are never shed.
    assert httpx.get(f"{small_gateway}/health").status_code == 200
    assert httpx.get(f"{small_gateway}/ready").status_code == 200
    metrics = httpx.get(f"{small_gateway}/metrics").text
    assert 'gateway_requests_shed_total{reason="in_flight"} 1.0' in metrics
    for holder in holders:
        holder.join(10)
    assert answers == [200] * MAX_IN_FLIGHT
    assert chat(small_gateway, "fast").status_code == 200  # recovered with the load


def test_requests_arriving_while_the_loop_is_behind_are_shed_and_service_recovers_at_once(
        delay_gateway: str) -> None:
    # 8 MB bodies: parsing one holds this gateway's loop past its max_delay_ms (5 ms).
    big = {"model": "fast", "messages": [{"role": "user", "content": "lorem ipsum " * 700_000}]}
    heavy_done = threading.Event()
    small: list[httpx.Response] = []

    def heavy() -> None:
        with httpx.Client(headers=AUTH, timeout=30) as client:
            for _ in range(3):
                client.post(f"{delay_gateway}/v1/chat/completions", json=big)

    def light() -> None:
        deadline = time.monotonic() + 20
        with httpx.Client(headers=AUTH, timeout=30) as client:
            while not heavy_done.is_set() and time.monotonic() < deadline:
                small.append(client.post(f"{delay_gateway}/v1/chat/completions",
                                         json={"model": "fast", "messages": HELLO}))
                time.sleep(0.002)

    heavies = [threading.Thread(target=heavy) for _ in range(3)]
    prober = threading.Thread(target=light)
    for thread in [*heavies, prober]:
        thread.start()
    for thread in heavies:
        thread.join(60)
    heavy_done.set()
    prober.join(30)
    shed = [a for a in small if a.status_code == 503]
    assert {a.status_code for a in small} <= {200, 503}, [a.text for a in small]
    assert shed, f"{len(small)} requests, none arrived while the loop was behind"
    for refusal in shed:
        assert refusal.json()["error"]["code"] == "overloaded"
        assert "max_delay_ms" in refusal.json()["error"]["message"]
        assert refusal.headers["retry-after"] == "1"
    time.sleep(0.1)  # a few ticks of the loop's clock
    assert chat(delay_gateway, "fast").status_code == 200


def test_no_model_is_called_after_the_client_has_left(
        small_gateway: str, mock: MockProvider, tmp_path_factory: pytest.TempPathFactory) -> None:
    mock.always["gone-a"] = Step(hang=True)  # times out after first_token_s (1 s)
    with pytest.raises(httpx.ReadTimeout):
        chat(small_gateway, "gone", timeout_s=0.3)
    time.sleep(1.5)
    assert len(mock.calls("gone-a")) == 1
    assert mock.calls("gone-b") == []  # nobody would read its answer
    tmp = tmp_path_factory.getbasetemp() / "overload0"
    last = usage_lines(small_gateway, tmp)[-1]
    assert last["status"] == 499 and last["requested"] == "gone"


def test_no_retry_is_made_for_a_client_that_has_left(small_gateway: str,
                                                     mock: MockProvider) -> None:
    mock.script("gone-r", Step(status=503, retry_after="1"))  # then it would answer
    with pytest.raises(httpx.ReadTimeout):
        chat(small_gateway, "gone-r", timeout_s=0.4)
    time.sleep(1.5)
    assert len(mock.calls("gone-r")) == 1
