"""SIGHUP right after `gateway serve` starts (a deploy that reloads at once) neither kills it
nor is lost: the gateway comes up, keeps serving, and serves the file last signalled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.demo.mockprovider import MockProvider
from tests.conftest import KEY_A, free_port, sha, wait_healthy

SIGNALLED_FOR_S = 1.0  # SIGHUPs are sent through the first second
EVERY_S = 0.04


def router_yaml(mock: MockProvider, tmp_path: Path, tier: str) -> str:
    return (f"providers:\n  openai: {{api_key: sk-o, api_base: '{mock.base_url}/v1'}}\n"  # type: ignore[attr-defined]
            "models:\n  gpt: {provider: openai, model: gpt-4o-mini}\n"
            f"tiers:\n  {tier}: [gpt]\n"
            f"keys:\n  - {{name: team-a, key_sha256: {sha(KEY_A)}}}\n"
            f"settings:\n  data_dir: {tmp_path}/data\n  usage_log: ''\n"
            "  watch_config: false\n")  # only SIGHUP reloads: a lost one shows


def interpreter_start_s() -> float:
    """From spawning this interpreter to its first line of code, the slowest of three.

    Before that line no Python program can take charge of a signal: the default action of
    SIGHUP (exit) applies. The test starts signalling past twice this.
    """
    slowest = 0.0
    for _ in range(3):
        started = time.monotonic()
        child = subprocess.Popen([sys.executable, "-c", "print(flush=True)"],
                                 stdout=subprocess.PIPE)
        assert child.stdout is not None
        child.stdout.readline()
        slowest = max(slowest, time.monotonic() - started)
        child.wait(10)
        child.stdout.close()
    return slowest


def answers(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/health", timeout=0.2).status_code == 200
    except httpx.TransportError:
        return False


def tiers(base_url: str) -> set[str]:
    with httpx.Client(timeout=5) as client:  # a new connection: any worker may answer
        answer = client.get(f"{base_url}/v1/models", headers={"Authorization": f"Bearer {KEY_A}"})
    assert answer.status_code == 200, answer.text
    return {model["id"] for model in answer.json()["data"]}


@pytest.mark.parametrize("workers", [1, 2])
def test_sighups_from_the_first_moments_neither_kill_the_gateway_nor_are_lost(
        mock: MockProvider, tmp_path: Path, workers: int) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(router_yaml(mock, tmp_path, "t0"))
    log = tmp_path / "gateway.log"
    first_at = 2 * interpreter_start_s()
    assert first_at < 0.4, "the interpreter alone starts too slowly here for this test"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        spawned = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port",
             str(port), "--workers", str(workers)], stdout=out, stderr=subprocess.STDOUT)
    try:
        time.sleep(first_at)
        sent = 0
        after_up = 0  # signals sent once it answers: every phase of its start gets some
        while ((time.monotonic() - spawned < SIGNALLED_FOR_S or after_up < 5)
               and process.poll() is None and time.monotonic() - spawned < 30):
            sent += 1  # as a deploy does: write the file whole, then signal
            staged = tmp_path / "router.yaml.new"
            staged.write_text(router_yaml(mock, tmp_path, f"t{sent}"))
            os.replace(staged, config)
            process.send_signal(signal.SIGHUP)
            time.sleep(EVERY_S)
            after_up += after_up > 0 or answers(base_url)
        assert process.poll() is None, (f"gateway serve died of SIGHUP {sent} "
                                        f"(exit {process.returncode}):\n{log.read_text()}")
        wait_healthy(base_url, process, log)
        last = f"t{sent}"
        deadline = time.monotonic() + 5
        while not all(last in tiers(base_url) for _ in range(6)):
            assert time.monotonic() < deadline, f"{last} never served: {tiers(base_url)}"
            time.sleep(0.1)
        answer = httpx.post(f"{base_url}/v1/chat/completions", timeout=10,
                            headers={"Authorization": f"Bearer {KEY_A}"},
                            json={"model": last, "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200, answer.text
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(15)
    assert sent >= 10
    logged = log.read_text()
    assert "reloaded (SIGHUP)" in logged  # the late ones were reloads, not just a first read
    assert "died" not in logged  # no worker was lost and replaced on the way
