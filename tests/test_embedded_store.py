"""The embedded store: no install, no service, data kept in data_dir, gone with its gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from gateway.embedded_store import _answers
from gateway.mockprovider import MockProvider
from tests.conftest import KEY_A, sha, start_gateway

ROUTER_YAML = """\
providers:
  openai: {{api_key: sk-openai-test, api_base: "{mock}/v1"}}
models:
  gpt: {{provider: openai, model: gpt-4o-mini}}
keys:
  - {{name: team-a, key_sha256: {digest}}}
settings:
  data_dir: ./state
  usage_log: ./usage.jsonl
"""


@pytest.fixture
def config(mock: MockProvider, tmp_path: Path) -> Path:
    path = tmp_path / "router.yaml"
    path.write_text(ROUTER_YAML.format(mock=mock.base_url, digest=sha(KEY_A)))  # type: ignore[attr-defined]
    return path


def cache_state(base_url: str, prompt: str) -> str:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY_A, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt", messages=[{"role": "user", "content": prompt}])
    return raw.headers["x-gateway-cache"]


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(15)


def test_cached_answers_survive_a_restart_in_data_dir(config: Path, tmp_path: Path) -> None:
    prompt = f"remember {uuid.uuid4().hex}"
    process, base_url = start_gateway(config, tmp_path / "first.log")
    try:
        assert cache_state(base_url, prompt) == "miss"
        ready = httpx.get(f"{base_url}/ready").json()
        assert ready["store"] == "embedded"
    finally:
        stop(process)
    assert (tmp_path / "state").is_dir()  # relative to router.yaml's directory
    process, base_url = start_gateway(config, tmp_path / "second.log")
    try:
        assert cache_state(base_url, prompt) == "hit"
    finally:
        stop(process)


def test_a_second_gateway_on_the_same_data_dir_exits_saying_why(config: Path,
                                                                tmp_path: Path) -> None:
    process, _ = start_gateway(config, tmp_path / "first.log")
    try:
        second = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config",
                                 str(config), "--port", "1"], capture_output=True, text=True,
                                timeout=30)
    finally:
        stop(process)
    assert second.returncode == 1
    assert "in use by another gateway" in second.stderr
    assert "settings.redis_url" in second.stderr


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_the_embedded_store_stops_with_its_gateway(config: Path, tmp_path: Path,
                                                   how: signal.Signals) -> None:
    process, _ = start_gateway(config, tmp_path / "gateway.log")
    socket_path = str(tmp_path / "state" / "redis.sock")
    assert _answers(socket_path)
    os.kill(process.pid, how)
    process.wait(15)
    deadline = time.monotonic() + 5
    while _answers(socket_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _answers(socket_path)


def test_the_embedded_store_serves_several_workers(config: Path, tmp_path: Path,
                                          mock: MockProvider) -> None:
    prompt = f"shared {uuid.uuid4().hex}"
    process, base_url = start_gateway(config, tmp_path / "gateway.log", workers=2)
    try:
        states = [cache_state(base_url, prompt) for _ in range(6)]  # a new connection each
    finally:
        stop(process)
    assert states == ["miss"] + ["hit"] * 5
    assert len(mock.calls("gpt-4o-mini")) == 1
