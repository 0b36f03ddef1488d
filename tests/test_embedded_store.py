"""The embedded store: no install, no service, data kept in data_dir, gone with its gateway."""

from __future__ import annotations

import contextlib
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

from gateway.demo.mockprovider import MockProvider
from gateway.embedded_store import _answers
from tests.conftest import KEY_A, sha, start_gateway, wait_for

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


BUDGETED_YAML = """\
providers:
  openai: {{api_key: sk-openai-test, api_base: "{mock}/v1"}}
models:
  gpt: {{provider: openai, model: gpt-4o-mini, price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
keys:
  - {{name: team-a, key_sha256: {digest}, daily_budget_usd: 10}}
settings:
  data_dir: ./state
  usage_log: ./usage.jsonl
  cache: {{enabled: false}}
"""


def children(pid: int) -> set[int]:
    """The process ids whose parent is `pid` (any of its threads)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            found.update(int(child) for child in (task / "children").read_text().split())
    return found


def embedded_store_pid(gateway_pid: int) -> int:
    stores = [pid for pid in children(gateway_pid)
              if Path(f"/proc/{pid}/comm").read_text().strip() == "redis-server"]
    assert len(stores) == 1, stores
    return stores[0]


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def spent_usd(base_url: str) -> float:
    answer = httpx.get(f"{base_url}/v1/budget", headers={"Authorization": f"Bearer {KEY_A}"},
                       timeout=5)
    assert answer.status_code == 200, answer.text
    return float(answer.json()["spent_usd"])


def budget_answers(base_url: str, times: int = 6) -> bool:
    """Whether the budget reads back `times` running (on every worker, by the odds)."""
    return all(httpx.get(f"{base_url}/v1/budget", timeout=5,
                         headers={"Authorization": f"Bearer {KEY_A}"}).status_code == 200
               for _ in range(times))


def chat_status(base_url: str) -> int:
    answer = httpx.post(f"{base_url}/v1/chat/completions", timeout=10,
                        headers={"Authorization": f"Bearer {KEY_A}"},
                        json={"model": "gpt", "messages": [{"role": "user", "content": "hi"}]})
    return answer.status_code



def ready(base_url: str) -> bool:
    return httpx.get(f"{base_url}/ready", timeout=5).status_code == 200


@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_embedded_store_is_restarted_on_its_data_and_budgets_serve_again(
        mock: MockProvider, tmp_path: Path, workers: int) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(BUDGETED_YAML.format(mock=mock.base_url, digest=sha(KEY_A)))  # type: ignore[attr-defined]
    log = tmp_path / "gateway.log"
    process, base_url = start_gateway(config, log, workers=workers)
    try:
        assert chat_status(base_url) == 200
        wait_for(lambda: spent_usd(base_url) > 0, 5)  # settled after the answer
        spent = spent_usd(base_url)
        killed = embedded_store_pid(process.pid)
        os.kill(killed, signal.SIGKILL)
        back_in = wait_for(lambda: ready(base_url), 10)
        assert embedded_store_pid(process.pid) != killed
        # /ready answered from one worker; each worker finds the store back on its own, so
        # the budget is read until every one has (a bounded wait, not a retry forever).
        wait_for(lambda: budget_answers(base_url), 5)
        assert spent_usd(base_url) == spent  # its data dir kept the day's spend
        assert chat_status(base_url) == 200  # a budgeted key is served again
        wait_for(lambda: spent_usd(base_url) > spent, 5)
        restarted = embedded_store_pid(process.pid)
        if workers == 1:  # the store started again goes with its gateway too, even killed
            os.kill(process.pid, signal.SIGKILL)
            process.wait(15)
    finally:
        stop(process)
    wait_for(lambda: gone(restarted), 5)
    assert back_in < 5
    assert "embedded store exited" in log.read_text()
