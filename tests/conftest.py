"""Fixtures: the mock provider on loopback, and a real `gateway serve` process routed to it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.demo.mockprovider import MockProvider
from tests import openai_conformance

KEY_A = "sk-test-team-a"
KEY_B = "sk-test-team-b"

ROUTER_YAML = """\
providers:
  openai:    {{api_key: "${{TEST_OPENAI_KEY}}", api_base: "{mock}/v1"}}
  anthropic: {{api_key: sk-ant-test, api_base: "{mock}"}}
  groq:      {{api_key: gsk-test, api_base: "{mock}/openai/v1"}}
  ollama:    {{api_base: "{mock}"}}
  deepseek:  {{api_key: deepseek-test, api_base: "{mock}/v1"}}
  mistral:   {{api_key: mistral-test, api_base: "{mock}/v1"}}
  nosecret:  {{type: openai, api_key: "${{TEST_UNSET_SECRET}}"}}

models:
  gpt:         {{provider: openai, model: gpt-4o-mini}}
  gpt-backup:  {{provider: openai, model: gpt-backup,
                price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
  claude:      {{provider: anthropic, model: claude-sonnet-4-5}}
  claude-slow: {{provider: anthropic, model: claude-slow,
                price: {{input_per_mtok: 3, output_per_mtok: 15}}, max_output_tokens: 1000}}
  llama-groq:  {{provider: groq, model: llama-3.3-70b-versatile,
                price: {{input_per_mtok: 0.59, output_per_mtok: 0.79}}}}
  llama-local: {{provider: ollama, model: llama3.2,
                price: {{input_per_mtok: 0, output_per_mtok: 0}}}}
  deepseek:    {{provider: deepseek, model: deepseek-chat,
                price: {{input_per_mtok: 0.27, output_per_mtok: 1.1}}}}
  ghost:       {{provider: nosecret, model: gpt-4o}}
  embed:        {{provider: openai, model: text-embedding-3-small}}
  embed-backup: {{provider: openai, model: text-embedding-3-large}}
  mistral-embed: {{provider: mistral, model: mistral-embed}}

tiers:
  fast:     [gpt, llama-groq, llama-local]
  smart:    [claude, gpt-backup]
  resilient: [ghost, claude-slow, gpt-backup]
  vectors:   [embed, embed-backup]

keys:
  - {{name: team-a, key_sha256: {digest_a}}}
  - {{name: team-b, key_sha256: {digest_b}, allow: [fast, gpt]}}

settings:
  max_body_mb: 1
  timeouts: {{connect_s: 2, first_token_s: 2, total_s: 20, read_body_s: 1}}
  retry: {{max_retries: 0}}               # retries and cooldowns: tests/test_resilience.py
  cooldown: {{after_failures: 1000, for_s: 0}}
  cache: {{enabled: false}}               # the cache: tests/test_cache.py
  data_dir: {tmp}/data
  usage_log: {tmp}/usage.jsonl
  redis_url: "{redis_url}"
"""


REDIS_SERVER = os.environ.get("REDIS_SERVER", "/usr/bin/redis-server")


class RedisServer:
    """A real redis-server on a loopback port, that a test may kill and start again."""

    def __init__(self, directory: Path, durable: bool = False, debug: bool = False):
        if not os.access(REDIS_SERVER, os.X_OK):
            pytest.fail(f"these tests need a real redis-server at {REDIS_SERVER}: run "
                        "`apt-get update && apt-get install -y redis-server` (or set "
                        "REDIS_SERVER to a redis-server binary)", pytrace=False)
        self.directory = directory
        # durable: every write on disk before it is acknowledged, so a kill loses nothing
        self.persistence = (["--appendonly", "yes", "--appendfsync", "always"] if durable
                            else ["--appendonly", "no"])
        if debug:  # DEBUG SLEEP: a test may stall it (Redis 7 turns DEBUG off by default)
            self.persistence += ["--enable-debug-command", "local"]
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             *self.persistence, "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        """Like a crash: no shutdown, no save."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


@contextlib.contextmanager
def demo_running(command: list[str], cwd: Path | None = None) -> Iterator[list[str]]:
    """`gateway demo` started by `command`; yields what it printed up to its examples' end."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    printed = []
    try:
        for line in process.stdout:
            printed.append(line)
            if line.startswith("Press Ctrl+C"):
                break
        else:
            pytest.fail("gateway demo stopped before serving:\n" + "".join(printed),
                        pytrace=False)
        yield printed
    finally:
        process.terminate()
        process.wait(10)
        process.stdout.close()


def wait_for(condition: Callable[[], bool], within_s: float) -> float:
    """Seconds until `condition` held; fails the test past `within_s`."""
    started = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - started
        assert elapsed < within_s, f"not within {within_s} s"
        time.sleep(0.05)
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def keys_yaml(budgets: dict[str, float], unbudgeted: tuple[str, ...],
              key_of: Callable[[str], str]) -> list[str]:
    """router.yaml's `keys:` entries: one key per name, with its daily budget or none."""
    return ([f"  - {{name: {n}, key_sha256: {sha(key_of(n))}, daily_budget_usd: {b}}}"
             for n, b in budgets.items()]
            + [f"  - {{name: {n}, key_sha256: {sha(key_of(n))}}}" for n in unbudgeted])


@pytest.fixture(scope="session")
def _conformance() -> Iterator[openai_conformance.Findings]:
    findings = openai_conformance.Findings()
    with pytest.MonkeyPatch.context() as patch:
        openai_conformance.watch(patch, findings)
        yield findings


@pytest.fixture(autouse=True)
def _conforms_to_openai(_conformance: openai_conformance.Findings) -> Iterator[None]:
    """Every answer a test received on an OpenAI path fits OpenAI's published schema."""
    _conformance.take()
    yield
    if found := _conformance.take():
        pytest.fail("answers that do not fit OpenAI's schema (tests/schema/openai_chat.json):"
                    "\n" + "\n".join(found[:20]), pytrace=False)


@pytest.fixture(scope="session")
def mock() -> MockProvider:
    provider = MockProvider()
    provider.base_url = provider.start_in_thread()  # type: ignore[attr-defined]
    return provider


@pytest.fixture(autouse=True)
def _fresh_mock(mock: MockProvider) -> None:
    mock.reset()


def wait_healthy(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"gateway did not become healthy:\n{log.read_text()}")


def start_gateway(config: Path, log: Path, env: dict[str, str] | None = None,
                  workers: int = 1) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port",
             str(port), "--workers", str(workers)], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})})
    base_url = f"http://127.0.0.1:{port}"
    wait_healthy(base_url, process, log)
    return process, base_url


@contextlib.contextmanager
def gateway_running(config: Path, log: Path, env: dict[str, str] | None = None,
                    workers: int = 1) -> Iterator[str]:
    """`gateway serve` on `config`, healthy; yields its base URL and stops it afterwards."""
    process, base_url = start_gateway(config, log, env, workers)
    try:
        yield base_url
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def replicas_running(config: Path, tmp: Path, count: int = 2) -> Iterator[list[str]]:
    """`count` gateway processes on one configuration (so one Redis): as replicas would run.
    Yields their base URLs; each logs to gateway-N.log in `tmp`."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(gateway_running(config, tmp / f"gateway-{i}.log"))
               for i in range(count)]


@contextlib.contextmanager
def serving(tmp: Path, router_yaml: str) -> Iterator[str]:
    """`gateway serve` on `router_yaml`, written into `tmp` (its log beside it); yields its
    base URL and stops it afterwards."""
    (tmp / "router.yaml").write_text(router_yaml)
    with gateway_running(tmp / "router.yaml", tmp / "gateway.log") as url:
        yield url


def usage_lines_of(log: Path, request_id: str, within_s: float = 5) -> list[dict[str, Any]]:
    """One request's usage-log lines, once the writer thread has written them (none past
    `within_s`); whole lines only, never one the writer is half-way through."""
    deadline = time.monotonic() + within_s
    while True:
        text = log.read_text() if log.exists() else ""
        found = [line for line in map(json.loads, text.split("\n")[:-1])
                 if line.get("request_id") == request_id]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.fixture(scope="session")
def gateway_files(mock: MockProvider, redis_server: RedisServer,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("gateway")
    config = tmp / "router.yaml"
    config.write_text(ROUTER_YAML.format(mock=mock.base_url, digest_a=sha(KEY_A),  # type: ignore[attr-defined]
                                         digest_b=sha(KEY_B), tmp=tmp,
                                         redis_url=redis_server.url))
    return tmp


@pytest.fixture(scope="session")
def gateway(gateway_files: Path) -> Iterator[str]:
    with gateway_running(gateway_files / "router.yaml", gateway_files / "gateway.log",
                         env={"TEST_OPENAI_KEY": "sk-openai-test"}) as base_url:
        yield base_url


@pytest.fixture
def connect(gateway: str) -> Iterator[Callable[..., openai.OpenAI]]:
    """OpenAI SDK clients for the gateway, closed after the test."""
    made: list[openai.OpenAI] = []

    def make(api_key: str = KEY_A, base_url: str | None = None, **options: Any) -> openai.OpenAI:
        options.setdefault("max_retries", 0)
        client = openai.OpenAI(base_url=base_url or f"{gateway}/v1", api_key=api_key,
                               **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(connect: Callable[..., openai.OpenAI]) -> openai.OpenAI:
    return connect()
