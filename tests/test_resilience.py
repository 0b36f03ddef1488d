"""Retries, fallbacks, cooldowns and deadlines, each rule against the scripted mock.

This module runs its own gateway with retries and cooldowns on. Every test uses
its own tier (`<name>: [<name>-a, <name>-b]`) so that one test's cooldowns
cannot touch another's models.
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
TIERS = ["badretryafter", "retry529", "retryafter", "longretryafter", "badrequest", "auth",
         "overflow", "ollamaoverflow", "hang", "deadline", "streamfirst", "streamafter", "cooldown",
         "allcooling", "ratelimited", "timedout", "attempts", "streamretry"]
FIRST_TOKEN_S = 1.0
TOTAL_S = 4.0
COOL_FOR_S = 1.5


def router_yaml(mock_url: str, tmp: Path) -> str:
    lines = ["providers:",
             f"  openai: {{api_key: sk-o, api_base: '{mock_url}/v1'}}",
             f"  anthropic: {{api_key: sk-a, api_base: '{mock_url}'}}",
             f"  ollama: {{api_base: '{mock_url}'}}",
             "models:"]
    price = "price: {input_per_mtok: 1, output_per_mtok: 2}"
    for tier in TIERS:
        first = "ollama" if tier == "ollamaoverflow" else "anthropic"
        lines.append(f"  {tier}-a: {{provider: {first}, model: {tier}-a, {price}, "
                     "max_output_tokens: 1000}")
        lines.append(f"  {tier}-b: {{provider: openai, model: {tier}-b, {price}}}")
    lines.append("tiers:")
    lines += [f"  {tier}: [{tier}-a, {tier}-b]" for tier in TIERS]
    lines += ["keys:", f"  - {{name: team-a, key_sha256: {sha(KEY_A)}}}", "settings:",
              "  retry: {max_retries: 2, initial_backoff_s: 0.05, max_backoff_s: 2}",
              f"  timeouts: {{connect_s: 1, first_token_s: {FIRST_TOKEN_S}, total_s: {TOTAL_S}}}",
              f"  cooldown: {{after_failures: 3, window_s: 60, for_s: {COOL_FOR_S}}}",
              "  cache: {enabled: false}",
              f"  data_dir: {tmp}/data", f"  usage_log: {tmp}/usage.jsonl"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def resilience_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("resilience")


@pytest.fixture(scope="module")
def resilient_gateway(mock: MockProvider, resilience_dir: Path) -> Iterator[str]:
    tmp = resilience_dir
    config = tmp / "router.yaml"
    config.write_text(router_yaml(mock.base_url, tmp))  # type: ignore[attr-defined]
    with gateway_running(config, tmp / "gateway.log") as base_url:
        yield base_url


@pytest.fixture
def client(connect: Callable[..., openai.OpenAI], resilient_gateway: str) -> openai.OpenAI:
    return connect(base_url=f"{resilient_gateway}/v1")


def calls(mock: MockProvider, model: str) -> int:
    return len(mock.calls(model))


def ask(client: openai.OpenAI, tier: str) -> tuple[str, int]:
    raw = client.chat.completions.with_raw_response.create(model=tier, messages=HELLO)
    return raw.parse().model, int(raw.headers["x-gateway-attempts"])


def test_529_is_retried_then_falls_back(client: openai.OpenAI, mock: MockProvider) -> None:
    mock.always["retry529-a"] = Step(status=529, error_message="Overloaded")
    served, attempts = ask(client, "retry529")
    assert served == "retry529-b"
    assert calls(mock, "retry529-a") == 3  # max_retries: 2 means three calls
    assert attempts == 4


def test_a_transient_failure_that_clears_is_answered_by_the_same_model(
        client: openai.OpenAI, mock: MockProvider) -> None:
    mock.script("streamretry-a", Step(status=503))
    served, attempts = ask(client, "streamretry")
    assert (served, attempts) == ("streamretry-a", 2)


def test_retry_after_is_waited_for(client: openai.OpenAI, mock: MockProvider) -> None:
    mock.script("retryafter-a", Step(status=429, retry_after="1", error_message="slow down"))
    started = time.monotonic()
    served, attempts = ask(client, "retryafter")
    assert served == "retryafter-a" and attempts == 2
    assert time.monotonic() - started >= 1.0


def test_an_unreadable_retry_after_is_ignored_not_an_internal_error(
        client: openai.OpenAI, mock: MockProvider) -> None:
    mock.script("badretryafter-a", Step(status=429, retry_after="soon"))
    assert ask(client, "badretryafter") == ("badretryafter-a", 2)


def test_retry_after_longer_than_max_backoff_falls_back_at_once(
        client: openai.OpenAI, mock: MockProvider) -> None:
    mock.script("longretryafter-a", Step(status=429, retry_after="30"))
    started = time.monotonic()
    served, attempts = ask(client, "longretryafter")
    assert served == "longretryafter-b" and attempts == 2
    assert calls(mock, "longretryafter-a") == 1
    assert time.monotonic() - started < 1.0


def test_a_400_is_neither_retried_nor_fallen_back(client: openai.OpenAI,
                                                  mock: MockProvider) -> None:
    mock.script("badrequest-a", Step(status=400, error_message="max_tokens: too large"))
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="badrequest", messages=HELLO)
    assert "max_tokens: too large" in caught.value.message
    assert calls(mock, "badrequest-a") == 1 and calls(mock, "badrequest-b") == 0
    served, _ = ask(client, "badrequest")  # a client error never cools the model
    assert served == "badrequest-a"


def test_a_401_falls_back_without_retry_and_cools_the_model(client: openai.OpenAI,
                                                            mock: MockProvider) -> None:
    mock.script("auth-a", Step(status=401, error_message="invalid x-api-key"))
    assert ask(client, "auth") == ("auth-b", 2)
    assert calls(mock, "auth-a") == 1
    assert ask(client, "auth") == ("auth-b", 1)  # cooling: not even tried
    assert calls(mock, "auth-a") == 1


def test_anthropic_context_overflow_falls_back_without_retry(client: openai.OpenAI,
                                                             mock: MockProvider) -> None:
    mock.script("overflow-a", Step(status=400, error_message="prompt is too long: 210000 "
                                                             "tokens > 200000 maximum"))
    assert ask(client, "overflow") == ("overflow-b", 2)


def test_ollama_context_overflow_falls_back(client: openai.OpenAI, mock: MockProvider) -> None:
    mock.script("ollamaoverflow-a", Step(status=400, error_message="the input length exceeds "
                                                                   "the context length"))
    assert ask(client, "ollamaoverflow") == ("ollamaoverflow-b", 2)


def test_a_hang_times_out_at_first_token_s_and_falls_back(client: openai.OpenAI,
                                                          mock: MockProvider) -> None:
    mock.script("hang-a", Step(hang=True))  # a model that hung is not retried: b is next
    started = time.monotonic()
    assert ask(client, "hang") == ("hang-b", 2)
    assert FIRST_TOKEN_S <= time.monotonic() - started < FIRST_TOKEN_S + 1


def test_the_deadline_holds_across_retries_and_fallbacks(client: openai.OpenAI,
                                                         mock: MockProvider) -> None:
    mock.always["deadline-a"] = Step(hang=True)
    mock.always["deadline-b"] = Step(hang=True)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="deadline", messages=HELLO)
    elapsed = time.monotonic() - started
    assert caught.value.status_code == 504
    assert elapsed < TOTAL_S + 0.5
    assert "deadline-a: 504" in caught.value.message
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_stream_falls_back_before_its_first_token(client: openai.OpenAI,
                                                  mock: MockProvider) -> None:
    mock.always["streamfirst-a"] = Step(status=500)
    chunks = list(client.chat.completions.create(model="streamfirst", messages=HELLO,
                                                 stream=True))
    assert {c.model for c in chunks} == {"streamfirst-b"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        mock.last_answer().text


def test_stream_failing_after_its_first_token_ends_with_an_error_event(
        client: openai.OpenAI, mock: MockProvider) -> None:
    # message_start, content_block_start, ping, "mock", " answer", then the line dies
    mock.script("streamafter-a", Step(drop_after=5))
    text = []
    with pytest.raises(openai.APIError, match="closed the connection"):
        for chunk in client.chat.completions.create(model="streamafter", messages=HELLO,
                                                    stream=True):
            text.append(chunk.choices[0].delta.content or "")
    assert "".join(text) == "mock answer"
    assert calls(mock, "streamafter-a") == 1 and calls(mock, "streamafter-b") == 0


def test_cooldown_skips_a_failing_model_then_tries_it_again(client: openai.OpenAI,
                                                            mock: MockProvider) -> None:
    mock.script("cooldown-a", *[Step(status=500)] * 3)
    assert ask(client, "cooldown") == ("cooldown-b", 4)  # three failed calls: cooling now
    assert ask(client, "cooldown") == ("cooldown-b", 1)
    assert calls(mock, "cooldown-a") == 3
    time.sleep(COOL_FOR_S + 0.1)
    assert ask(client, "cooldown") == ("cooldown-a", 1)


def test_when_every_model_is_cooling_they_are_tried_anyway(client: openai.OpenAI,
                                                           mock: MockProvider) -> None:
    mock.script("allcooling-a", Step(status=401))
    mock.script("allcooling-b", Step(status=401))
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="allcooling", messages=HELLO)
    assert ask(client, "allcooling") == ("allcooling-a", 1)


def test_every_call_rate_limited_answers_429_with_retry_after(client: openai.OpenAI,
                                                              mock: MockProvider) -> None:
    mock.always["ratelimited-a"] = Step(status=429, retry_after="5")
    mock.always["ratelimited-b"] = Step(status=429, retry_after="7")
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="ratelimited", messages=HELLO)
    headers = caught.value.response.headers
    assert headers["retry-after"] == "5"
    assert headers["x-should-retry"] == "false"
    assert "ratelimited-a: 429" in caught.value.message
    assert "ratelimited-b: 429" in caught.value.message


def test_openai_sdk_does_not_retry_an_exhausted_chain(connect: Callable[..., openai.OpenAI],
                                                      resilient_gateway: str,
                                                      mock: MockProvider) -> None:
    mock.always["timedout-a"] = Step(status=502)
    mock.always["timedout-b"] = Step(status=502)
    retrying = connect(base_url=f"{resilient_gateway}/v1", max_retries=2)
    with pytest.raises(openai.APIStatusError) as caught:
        retrying.chat.completions.create(model="timedout", messages=HELLO)
    assert caught.value.status_code == 502
    assert calls(mock, "timedout-a") + calls(mock, "timedout-b") == 6  # not 18


def test_attempts_header_equals_the_calls_the_mock_counted(client: openai.OpenAI,
                                                           mock: MockProvider) -> None:
    mock.script("attempts-a", Step(status=503), Step(status=529), Step(status=500))
    mock.script("attempts-b", Step(status=502))
    served, attempts = ask(client, "attempts")
    assert served == "attempts-b"
    assert attempts == len(mock.calls()) == 5


def test_gateway_log_names_the_cooldown_and_no_secret(resilient_gateway: str,
                                                      resilience_dir: Path) -> None:
    logs = (resilience_dir / "gateway.log").read_text()
    assert "model cooldown-a cools down for 1.5s after: 500" in logs
    for secret in ("sk-o,", "sk-a,", KEY_A):
        assert secret not in logs
