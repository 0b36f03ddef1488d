"""Hostile clients: nobody learns whether a key exists, reads another key's data, or steers a
request to a provider or account that router.yaml did not name."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import KEY_A, KEY_B, sha

HELLO = [{"role": "user", "content": "hi"}]
SECRETS = ("sk-openai-test", "sk-ant-test", "gsk-test", "deepseek-test", "mistral-test",
           KEY_A, KEY_B)


def chat(gateway: str, body: dict, key: str = KEY_A) -> httpx.Response:
    return httpx.post(f"{gateway}/v1/chat/completions", json=body, timeout=20,
                      headers={"authorization": f"Bearer {key}"})


@pytest.mark.parametrize("guess", [
    "sk-test-team-c", KEY_A + "x", KEY_A[:-1], KEY_A.upper(), sha(KEY_A), "sk-",
    "k" * 10_000, "sk-test-team-b-admin"])
def test_a_guessed_key_gets_the_same_answer_as_any_unknown_key(gateway: str,
                                                                guess: str) -> None:
    reference = chat(gateway, {"model": "fast", "messages": HELLO}, key="sk-nobody")
    answer = chat(gateway, {"model": "fast", "messages": HELLO}, key=guess)
    assert (answer.status_code, answer.json()) == (401, reference.json())
    by_header = httpx.post(f"{gateway}/v1/chat/completions", timeout=20,
                           json={"model": "fast", "messages": HELLO},
                           headers={"x-api-key": guess})
    assert (by_header.status_code, by_header.json()) == (401, reference.json())


@pytest.fixture
def decoy() -> Iterator[MockProvider]:
    """A second provider nobody configured: any request reaching it was smuggled there."""
    provider = MockProvider()
    provider.base_url = provider.start_in_thread()  # type: ignore[attr-defined]
    yield provider


@pytest.mark.parametrize(("model", "path", "auth_header", "secret"), [
    ("gpt", "/v1/chat/completions", "authorization", "Bearer sk-openai-test"),
    ("claude", "/v1/messages", "x-api-key", "sk-ant-test"),
    ("deepseek", "/v1/chat/completions", "authorization", "Bearer deepseek-test"),  # litellm
])
def test_nothing_in_the_body_changes_where_a_request_goes_or_with_which_key(
        gateway: str, mock: MockProvider, decoy: MockProvider, model: str, path: str,
        auth_header: str, secret: str) -> None:
    elsewhere = decoy.base_url  # type: ignore[attr-defined]
    smuggled = {"api_base": elsewhere, "base_url": elsewhere, "azure_endpoint": elsewhere,
                "api_key": "sk-smuggled", "custom_llm_provider": "openai",
                "extra_headers": {"authorization": "Bearer sk-smuggled",
                                  "x-api-key": "sk-smuggled"},
                "headers": {"authorization": "Bearer sk-smuggled"},
                "litellm_params": {"api_base": elsewhere}, "metadata": {"api_base": elsewhere}}
    answer = chat(gateway, {"model": model, "messages": HELLO, **smuggled})
    assert answer.status_code == 200, answer.text
    assert decoy.calls() == []
    received = mock.calls()[-1]
    assert received.path == path
    headers = {name.lower(): value for name, value in received.headers.items()}
    assert headers.get(auth_header) == secret


def test_a_key_reads_only_its_own_budget_and_choices(gateway: str) -> None:
    mine = httpx.get(f"{gateway}/v1/budget", headers={"authorization": f"Bearer {KEY_B}"})
    assert mine.json()["key"] == "team-b"
    refused = chat(gateway, {"model": "smart", "messages": HELLO}, key=KEY_B)
    assert refused.status_code == 403
    assert "team-a" not in refused.text and "may use: fast, gpt" in refused.text
    models = httpx.get(f"{gateway}/v1/models", headers={"authorization": f"Bearer {KEY_B}"})
    assert {m["id"] for m in models.json()["data"]} == {"fast", "gpt"}


def test_no_secret_reaches_a_response_metric_or_log(gateway: str, gateway_files) -> None:
    chat(gateway, {"model": "fast", "messages": HELLO})
    chat(gateway, {"model": "resilient", "messages": HELLO})
    chat(gateway, {"model": "fast", "messages": HELLO}, key="sk-wrong")
    seen = [httpx.get(f"{gateway}{path}").text for path in ("/metrics", "/ready", "/health")]
    seen.append((gateway_files / "gateway.log").read_text())
    seen.append((gateway_files / "usage.jsonl").read_text())
    for text in seen:
        for secret in SECRETS:
            assert secret not in text


LEAKY = ("Incorrect API key provided: sk-live-****9f2c. You can find your API key at "
         "https://platform.example/account/api-keys")


@pytest.mark.parametrize(("model", "provider_model"), [
    ("gpt", "gpt-4o-mini"), ("claude", "claude-sonnet-4-5"),
    ("deepseek", "deepseek-chat")])  # OpenAI's wire, Anthropic's, and litellm's path
@pytest.mark.parametrize("status", [401, 429, 500])
def test_a_providers_error_text_never_reaches_a_tenant_or_a_log(
        gateway: str, gateway_files, mock: MockProvider, model: str, provider_model: str,
        status: int) -> None:
    mock.always[provider_model] = Step(status=status, error_message=LEAKY)
    answer = chat(gateway, {"model": model, "messages": HELLO})
    assert answer.status_code == (429 if status == 429 else 502)
    message = answer.json()["error"]["message"]
    assert f"{model}: {status} " in message  # the status, and a reason of ours
    time.sleep(0.3)  # the usage log is written by a thread
    for text in (answer.text, (gateway_files / "gateway.log").read_text(),
                 (gateway_files / "usage.jsonl").read_text()):
        assert "sk-live" not in text and "Incorrect API key" not in text


def test_a_providers_client_error_keeps_its_reason_but_not_a_credential(
        gateway: str, mock: MockProvider) -> None:
    mock.script("gpt-4o-mini", Step(status=400, error_message=(
        "temperature: too high (project key sk-proj-Abc123def456ghi789 was used)")))
    answer = chat(gateway, {"model": "gpt", "messages": HELLO})
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert "temperature: too high" in message
    assert "Abc123def456" not in message
