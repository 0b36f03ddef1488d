"""A hung model never starves the healthy ones: the request's deadline is shared along the chain.

The gateway of this module has the issue's settings: `first_token_s: 1`,
`total_s: 3`, `max_retries: 2`. Every test has its own tier, so that one test's
cooldowns cannot touch another's models.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import KEY_A, gateway_running, sha

HELLO = [{"role": "user", "content": "hello"}]
FIRST_TOKEN_S = 1.0
TOTAL_S = 3.0
TIERS = {"pair": 2, "four": 4, "alone": 1, "streamed": 2}


def router_yaml(mock_url: str, tmp: Path) -> str:
    lines = ["providers:", f"  openai: {{api_key: sk-o, api_base: '{mock_url}/v1'}}", "models:"]
    price = "price: {input_per_mtok: 1, output_per_mtok: 2}"
    for tier, size in TIERS.items():
        lines += [f"  {tier}-{i}: {{provider: openai, model: {tier}-{i}, {price}}}"
                  for i in range(size)]
    lines.append("tiers:")
    lines += [f"  {tier}: [{', '.join(f'{tier}-{i}' for i in range(size))}]"
              for tier, size in TIERS.items()]
    lines += ["keys:", f"  - {{name: team-a, key_sha256: {sha(KEY_A)}}}", "settings:",
              "  retry: {max_retries: 2, initial_backoff_s: 0.05, max_backoff_s: 2}",
              f"  timeouts: {{connect_s: 1, first_token_s: {FIRST_TOKEN_S}, total_s: {TOTAL_S}}}",
              "  cooldown: {after_failures: 100, window_s: 60, for_s: 1}",
              "  cache: {enabled: false}",
              f"  data_dir: {tmp}/data", f"  usage_log: {tmp}/usage.jsonl"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def sharing_gateway(mock: MockProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("deadline")
    config = tmp / "router.yaml"
    config.write_text(router_yaml(mock.base_url, tmp))  # type: ignore[attr-defined]
    with gateway_running(config, tmp / "gateway.log") as base_url:
        yield base_url


@pytest.fixture
def client(connect: Callable[..., openai.OpenAI], sharing_gateway: str) -> openai.OpenAI:
    return connect(base_url=f"{sharing_gateway}/v1")


def test_a_hung_primary_falls_back_at_its_first_timeout_not_after_its_retries(
        client: openai.OpenAI, mock: MockProvider) -> None:
    mock.always["pair-0"] = Step(hang=True)
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(model="pair", messages=HELLO)
    elapsed = time.monotonic() - started
    assert raw.parse().model == "pair-1"
    assert raw.headers["x-gateway-attempts"] == "2"
    assert len(mock.calls("pair-0")) == 1  # a hung model is not asked again while others wait
    assert FIRST_TOKEN_S <= elapsed < FIRST_TOKEN_S + 0.8


def test_each_model_before_the_last_gets_only_its_share_of_the_time_left(
        client: openai.OpenAI, mock: MockProvider) -> None:
    # 3 s for four models: 0.75 s each, although first_token_s (1 s) would allow more.
    for i in range(3):
        mock.always[f"four-{i}"] = Step(hang=True)
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(model="four", messages=HELLO)
    elapsed = time.monotonic() - started
    assert raw.parse().model == "four-3"
    assert raw.headers["x-gateway-attempts"] == "4"
    assert 3 * 0.75 - 0.1 <= elapsed < TOTAL_S


def test_the_last_model_is_still_retried_after_a_timeout(client: openai.OpenAI,
                                                         mock: MockProvider) -> None:
    mock.script("alone-0", Step(hang=True))  # hangs once; its retry is answered
    raw = client.chat.completions.with_raw_response.create(model="alone", messages=HELLO)
    assert raw.parse().model == "alone-0"
    assert raw.headers["x-gateway-attempts"] == "2"


def test_a_stream_whose_primary_hangs_is_served_by_the_next_model(
        client: openai.OpenAI, mock: MockProvider) -> None:
    mock.always["streamed-0"] = Step(hang=True)
    started = time.monotonic()
    chunks = list(client.chat.completions.create(model="streamed", messages=HELLO, stream=True))
    assert {c.model for c in chunks} == {"streamed-1"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert time.monotonic() - started < FIRST_TOKEN_S + 0.8


def test_the_error_says_how_the_time_was_shared(client: openai.OpenAI,
                                                mock: MockProvider) -> None:
    for i in range(2):
        mock.always[f"pair-{i}"] = Step(hang=True)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="pair", messages=HELLO)
    assert caught.value.status_code == 504
    assert "pair-0: 504 no answer within first_token_s (1s)" in caught.value.message
    assert "pair-1: 504" in caught.value.message
