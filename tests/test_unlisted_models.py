"""Claude ids that litellm's price map does not list (it drops older ones as it moves on).

A router.yaml that prices such a model must start, reload and serve: the gateway sends the
documented default output limit, and `gateway check` warns that it does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from gateway.demo.mockprovider import MockProvider
from gateway.providers.litellm_data import lookup
from tests.conftest import RedisServer, sha, start_gateway

KEY = "sk-test-unlisted"
PRICE = "price: {input_per_mtok: 0.25, output_per_mtok: 1.25}"
# Ids litellm 1.110 dropped from its map; Anthropic still documents their output limits.
UNLISTED = {"haiku-3": "claude-3-haiku-20240307", "haiku-3-5": "claude-3-5-haiku-20241022",
            "sonnet-4": "claude-sonnet-4-20250514"}


def router_yaml(mock_url: str, redis_url: str, models: dict[str, str]) -> str:
    lines = ["providers:", f"  anthropic: {{api_key: sk-ant-test, api_base: '{mock_url}'}}",
             "models:", "  current: {provider: anthropic, model: claude-sonnet-4-5}"]
    lines += [f"  {name}: {{provider: anthropic, model: {provider_model}, {PRICE}}}"
              for name, provider_model in models.items()]
    lines += ["tiers:", f"  old: [{', '.join([*models, 'current'])}]",
              "keys:", f"  - {{name: team-a, key_sha256: {sha(KEY)}, daily_budget_usd: 5}}",
              "settings:", f"  redis_url: '{redis_url}'", "  cache: {enabled: false}",
              "  retry: {max_retries: 0}"]
    return "\n".join(lines) + "\n"


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "check", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)


def test_the_ids_are_really_missing_from_the_installed_map() -> None:
    # Otherwise this file would test nothing: with a listed limit there is no default to take.
    assert [lookup("anthropic", m) for m in UNLISTED.values()] == [None, None, None]


def test_a_priced_claude_id_the_map_does_not_know_starts_and_is_sent_the_default_limit(
        tmp_path: Path, mock: MockProvider, redis_server: RedisServer) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(router_yaml(mock.base_url, redis_server.url, UNLISTED))  # type: ignore[attr-defined]
    process, base_url = start_gateway(config, tmp_path / "gateway.log")
    try:
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0)
        hello = [{"role": "user", "content": "Hi"}]
        for name, provider_model in UNLISTED.items():
            reply = client.chat.completions.create(model=name, messages=hello)
            assert reply.model == name
            assert reply.choices[0].message.content == f"mock answer from {provider_model} to: Hi"
            streamed = "".join(chunk.choices[0].delta.content or "" for chunk in
                               client.chat.completions.create(model=name, messages=hello,
                                                              stream=True) if chunk.choices)
            assert streamed == f"mock answer from {provider_model} to: Hi"
        client.close()
    finally:
        process.terminate()
        process.wait(10)
    sent = [call.body["max_tokens"] for call in mock.calls() if call.path == "/v1/messages"]
    # 4096: every Claude model accepts it (the mock refuses more on Claude 3 Haiku, as
    # Anthropic does), so the default never turns a request into a 400.
    assert sent == [4096] * 6
    log = (tmp_path / "gateway.log").read_text()
    assert "models.haiku-3.max_output_tokens" in log  # the start-up log warns too


def test_gateway_check_warns_and_passes(tmp_path: Path, mock: MockProvider,
                                        redis_server: RedisServer) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(router_yaml(mock.base_url, redis_server.url, UNLISTED))  # type: ignore[attr-defined]
    result = check(config)
    assert result.returncode == 0, result.stderr
    assert f"{config}: valid" in result.stdout
    warnings = result.stdout[result.stdout.index("warnings:"):]
    for name, provider_model in UNLISTED.items():
        assert (f"models.{name}.max_output_tokens: litellm's price map does not know the "
                f"output limit of anthropic/{provider_model}; sent max_tokens 4096 when a "
                "client sets none") in warnings
    assert "current" not in warnings  # a listed model has its own limit: nothing to say


def test_a_reload_that_adds_such_a_model_is_taken(tmp_path: Path, mock: MockProvider,
                                                 redis_server: RedisServer) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(router_yaml(mock.base_url, redis_server.url, {}))  # type: ignore[attr-defined]
    process, base_url = start_gateway(config, tmp_path / "gateway.log")
    headers = {"authorization": f"Bearer {KEY}"}
    try:
        fresh = config.with_suffix(".tmp")
        fresh.write_text(router_yaml(mock.base_url, redis_server.url, UNLISTED))  # type: ignore[attr-defined]
        os.replace(fresh, config)
        deadline = time.monotonic() + 10
        names: set[str] = set()
        while time.monotonic() < deadline and "haiku-3" not in names:
            time.sleep(0.2)
            listed = httpx.get(f"{base_url}/v1/models", headers=headers, timeout=5).json()
            names = {m["id"] for m in listed["data"]}
        assert "haiku-3" in names, (tmp_path / "gateway.log").read_text()
        reply = httpx.post(f"{base_url}/v1/chat/completions", headers=headers, timeout=10,
                           json={"model": "haiku-3",
                                 "messages": [{"role": "user", "content": "Hi"}]})
        assert reply.status_code == 200, reply.text
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize("asked", [4096, 4097])
def test_the_mock_holds_claude_3_haiku_to_its_real_limit(mock: MockProvider, asked: int) -> None:
    """What makes the default's test mean something: the double refuses what Anthropic does."""
    reply = httpx.post(f"{mock.base_url}/v1/messages", timeout=5,  # type: ignore[attr-defined]
                       headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
                       json={"model": "claude-3-haiku-20240307", "max_tokens": asked,
                             "messages": [{"role": "user", "content": "Hi"}]})
    assert reply.status_code == (200 if asked == 4096 else 400)
