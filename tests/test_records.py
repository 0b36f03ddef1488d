"""Records: one usage-log line per request, Prometheus metrics, clean logs, `gateway spend`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.demo.mockprovider import MockProvider, Step
from gateway.records.usage_log import UsageLog
from tests.conftest import RedisServer, sha, start_gateway, wait_for

PRICE = "price: {input_per_mtok: 1000, output_per_mtok: 2000}"  # micro-USD a token: 1000, 2000
FIELDS = {"ts", "request_id", "key", "surface", "requested", "model", "attempts", "stream", "cache",
          "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
          "cache_write_1h_tokens", "cost_usd", "budget_limited", "downgraded", "latency_ms",
          "ttft_ms", "status"}
MASTER_KEY = "sk-master-records"
ADMIN = {"authorization": f"Bearer {MASTER_KEY}"}


def key_of(name: str) -> str:
    return f"sk-test-records-{name}-0123456789"


def router_yaml(mock_url: str, redis_url: str, tmp: Path, log_content: bool = False) -> str:
    return "\n".join([
        "providers:",
        f"  openai: {{api_key: sk-o, api_base: '{mock_url}/v1'}}",
        "models:",
        f"  pricey: {{provider: openai, model: gpt-records, {PRICE}, max_output_tokens: 100}}",
        f"  broken: {{provider: openai, model: gpt-records-broken, {PRICE}, "
        "max_output_tokens: 100}",
        f"  embed: {{provider: openai, model: text-embedding-records, {PRICE}}}",
        "tiers:",
        "  main: [pricey]",
        "  shaky: [broken, pricey]",
        "  dead: [broken]",
        "keys:",
        f"  - {{name: team-a, key_sha256: {sha(key_of('team-a'))}, daily_budget_usd: 100}}",
        f"  - {{name: tiny, key_sha256: {sha(key_of('tiny'))}, daily_budget_usd: 0.000001}}",
        "settings:",
        f"  redis_url: '{redis_url}'",
        f"  master_key: {MASTER_KEY}",
        f"  usage_log: {tmp}/logs/usage.jsonl",
        f"  log_content: {'true' if log_content else 'false'}",
        "  cache: {enabled: true}",
        "  retry: {max_retries: 0}",
        "  cooldown: {after_failures: 1000}",
        "  timeouts: {connect_s: 2, first_token_s: 5, total_s: 20}",
    ]) + "\n"


class Running:
    def __init__(self, tmp: Path, mock: MockProvider, redis_server: RedisServer,
                 workers: int = 1, log_content: bool = False):
        self.tmp = tmp
        self.config = tmp / "router.yaml"
        self.config.write_text(router_yaml(mock.base_url, redis_server.url, tmp,  # type: ignore[attr-defined]
                                           log_content))
        self.log = tmp / "gateway.log"
        self.usage = tmp / "logs" / "usage.jsonl"
        self.process, self.url = start_gateway(self.config, self.log, workers=workers)

    def client(self, name: str = "team-a", **options: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key_of(name), max_retries=0,
                             **options)

    def lines(self, request_id: str, within_s: float = 3) -> list[dict[str, Any]]:
        """The usage-log lines of one request (written by a thread: wait for them)."""
        deadline = time.monotonic() + within_s
        while True:
            found = [json.loads(line) for line in self._text().splitlines()
                     if request_id in line]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def _text(self) -> str:
        return self.usage.read_text() if self.usage.exists() else ""

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{self.url}/metrics", headers=ADMIN).text
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, mock: MockProvider,
       redis_server: RedisServer) -> Iterator[Running]:
    running = Running(tmp_path_factory.mktemp("records"), mock, redis_server)
    yield running
    running.stop()


def chat(client: openai.OpenAI, model: str, text: str, **options: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **options)


def sample(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def test_one_line_per_request_with_the_mocks_tokens_and_the_price(
        gw: Running, mock: MockProvider) -> None:
    with gw.client() as client:
        raw = chat(client, "main", "How many tokens is this?", max_tokens=50,
                   extra_headers={"cache-control": "no-store"})
    sent = mock.last_answer()
    [line] = gw.lines(raw.headers["x-request-id"])
    assert set(line) == FIELDS
    assert line["key"] == "team-a" and line["requested"] == "main" and line["model"] == "pricey"
    assert line["surface"] == "chat.completions"
    assert (line["input_tokens"], line["output_tokens"]) == (sent.input_tokens,
                                                             sent.output_tokens)
    expected_microusd = sent.input_tokens * 1000 + sent.output_tokens * 2000
    assert round(line["cost_usd"] * 1_000_000) == expected_microusd
    assert line["cost_usd"] == float(raw.headers["x-gateway-cost-usd"])
    assert line["status"] == 200 and line["stream"] is False and line["cache"] == "bypass"
    [attempt] = line["attempts"]
    assert attempt["model"] == "pricey" and attempt["status"] == 200 and attempt["error"] is None
    assert 0 < attempt["latency_ms"] <= line["latency_ms"]
    assert line["ttft_ms"] is None
    assert line["ts"].endswith("+00:00")


def test_a_stream_is_logged_when_it_ends_with_its_time_to_first_token(
        gw: Running, mock: MockProvider) -> None:
    mock.script("gpt-records", Step(text="one two three four", chunk_delay_s=0.05))
    with gw.client() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="main", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Stream it"}])
        chunks = list(raw.parse())
    usage = chunks[-1].usage
    [line] = gw.lines(raw.headers["x-request-id"])
    assert line["stream"] is True and line["status"] == 200 and line["cache"] == "miss"
    assert (line["input_tokens"], line["output_tokens"]) == (usage.prompt_tokens,
                                                             usage.completion_tokens)
    assert 0 < line["ttft_ms"] < line["latency_ms"]
    assert line["latency_ms"] >= 150  # three chunk delays after the first token


def test_a_cache_hit_is_logged_free(gw: Running) -> None:
    with gw.client() as client:
        chat(client, "main", "Remember me")
        raw = chat(client, "main", "Remember me")
    [line] = gw.lines(raw.headers["x-request-id"])
    assert line["cache"] == "hit" and line["cost_usd"] == 0 and line["attempts"] == []
    assert line["model"] == "pricey" and line["status"] == 200


def test_refusals_and_failures_are_logged_too(gw: Running, mock: MockProvider) -> None:
    mock.always["gpt-records-broken"] = Step(status=500)
    ids = {}
    with gw.client("tiny") as client, pytest.raises(openai.RateLimitError) as refused:
        chat(client, "main", "Too dear")
    ids[429] = refused.value.response.headers["x-request-id"]
    with gw.client() as client, pytest.raises(openai.InternalServerError) as failed:
        chat(client, "dead", "Nobody answers", extra_headers={"cache-control": "no-store"})
    ids[502] = failed.value.response.headers["x-request-id"]
    with gw.client("nobody") as client, pytest.raises(openai.AuthenticationError) as denied:
        chat(client, "main", "Who am I")
    ids[401] = denied.value.response.headers["x-request-id"]
    bad = httpx.post(f"{gw.url}/v1/chat/completions", content=b"{not json",
                     headers={"authorization": f"Bearer {key_of('team-a')}"})
    ids[400] = bad.headers["x-request-id"]

    lines = {status: gw.lines(request_id) for status, request_id in ids.items()}
    assert {status: [line["status"] for line in found] for status, found in lines.items()} == {
        429: [429], 502: [502], 401: [401], 400: [400]}
    assert lines[429][0]["key"] == "tiny" and lines[429][0]["attempts"] == []
    failed_line = lines[502][0]
    assert failed_line["model"] is None and failed_line["cost_usd"] is None
    assert [(a["model"], a["status"]) for a in failed_line["attempts"]] == [("broken", 500)]
    assert failed_line["attempts"][0]["error"]
    assert lines[401][0]["key"] is None
    assert lines[400][0]["key"] == "team-a" and lines[400][0]["requested"] is None


def test_a_client_that_leaves_a_stream_is_logged_and_charged(
        gw: Running, mock: MockProvider) -> None:
    mock.script("gpt-records", Step(text=" ".join(["word"] * 40), chunk_delay_s=0.05))
    headers = {"authorization": f"Bearer {key_of('team-a')}"}
    body = {"model": "main", "stream": True, "messages": [{"role": "user", "content": "Go"}]}
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body,
                      headers=headers) as response:
        request_id = response.headers["x-request-id"]  # and leave before reading a byte
    [line] = gw.lines(request_id)
    assert line["status"] == 499
    assert line["model"] == "pricey" and line["output_tokens"] >= 1 and line["cost_usd"] > 0


def test_metrics_parse_and_move_as_requests_pass(gw: Running, mock: MockProvider) -> None:
    mock.script("gpt-records-broken", Step(status=503))
    before = gw.metrics()
    with gw.client() as client:
        raws = [chat(client, "main", f"Count me {i}",
                     extra_headers={"cache-control": "no-store"}) for i in range(3)]
        fell_back = chat(client, "shaky", "Fall back please",
                         extra_headers={"cache-control": "no-store"})
    with gw.client("tiny") as client, pytest.raises(openai.RateLimitError):
        chat(client, "main", "Refuse me")
    lines = [gw.lines(raw.headers["x-request-id"])[0] for raw in [*raws, fell_back]]
    after = gw.metrics()

    def moved(name: str, **labels: str) -> float:
        key = sample(name, **labels)
        return after.get(key, 0) - before.get(key, 0)

    assert moved("gateway_requests_total", requested="main", model="pricey", status="200",
                 cache="bypass", surface="chat.completions") == 3
    assert moved("gateway_requests_total", requested="shaky", model="pricey", status="200",
                 cache="bypass", surface="chat.completions") == 1
    assert moved("gateway_fallbacks_total", requested="shaky") == 1
    assert moved("gateway_provider_calls_total", model="broken", status="503") == 1
    assert moved("gateway_budget_refusals_total", key="tiny") == 1
    assert moved("gateway_request_duration_seconds_count", requested="main") >= 3
    output = sum(line["output_tokens"] for line in lines)
    assert moved("gateway_tokens_total", key="team-a", model="pricey",
                 direction="output") == output
    cost = moved("gateway_cost_usd_total", key="team-a", model="pricey")
    assert cost == pytest.approx(sum(line["cost_usd"] for line in lines))


def test_a_made_up_model_name_never_becomes_a_label(gw: Running) -> None:
    with gw.client() as client, pytest.raises(openai.NotFoundError):
        chat(client, "gpt-made-up-by-a-scanner", "hello")
    text = httpx.get(f"{gw.url}/metrics", headers=ADMIN).text
    assert "gpt-made-up-by-a-scanner" not in text
    assert 'requested="unknown"' in text


def test_no_key_or_prompt_reaches_any_log_or_metric(gw: Running, mock: MockProvider) -> None:
    prompt = "my-secret-prompt-words-4242"
    mock.script("gpt-records-broken", Step(status=503))
    with gw.client() as client:
        chat(client, "shaky", prompt)
        raw = client.chat.completions.with_raw_response.create(
            model="main", stream=True, messages=[{"role": "user", "content": prompt}])
        list(raw.parse())
    for name in ("tiny", "never-issued"):
        with gw.client(name) as client, pytest.raises(openai.APIStatusError):
            chat(client, "main", prompt, extra_headers={"cache-control": "no-store"})
    gw.lines(raw.headers["x-request-id"])
    for text in (gw.log.read_text(), gw.usage.read_text(),
                 httpx.get(f"{gw.url}/metrics", headers=ADMIN).text):
        assert prompt not in text
        for name in ("team-a", "tiny", "never-issued"):
            assert key_of(name) not in text
            assert sha(key_of(name)) not in text


def test_log_content_true_keeps_the_prompt_and_the_answer(
        tmp_path: Path, mock: MockProvider, redis_server: RedisServer) -> None:
    running = Running(tmp_path, mock, redis_server, log_content=True)
    try:
        with running.client() as client:
            raw = chat(client, "main", "Keep these words")
        [line] = running.lines(raw.headers["x-request-id"])
    finally:
        running.stop()
    assert line["prompt"] == [{"role": "user", "content": "Keep these words"}]
    assert "mock answer from gpt-records" in line["answer"][0]["message"]["content"]


def test_counters_add_up_across_two_workers(tmp_path: Path, mock: MockProvider,
                                            redis_server: RedisServer) -> None:
    running = Running(tmp_path, mock, redis_server, workers=2)
    try:
        def fresh(path: str) -> httpx.Response:  # a new connection: any worker may answer
            return httpx.get(f"{running.url}{path}", headers={
                "authorization": f"Bearer {MASTER_KEY}", "connection": "close"})

        deadline = time.monotonic() + 20  # until both workers have answered something
        pids: set[int] = set()
        while len(pids) < 2 and time.monotonic() < deadline:
            pids.add(fresh("/admin/config").json()["pid"])
        assert len(pids) == 2

        def ask(i: int) -> None:
            with running.client(http_client=httpx.Client(headers={"connection": "close"})) as c:
                chat(c, "main", f"Worker spread {i}", extra_headers={"cache-control": "no-store"})

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        counts = set()
        for _ in range(6):  # every scrape, whichever worker answers, sees all 20
            families = text_string_to_metric_families(fresh("/metrics").text)
            counts.add(sum(s.value for f in families for s in f.samples
                           if s.name == "gateway_requests_total"
                           and s.labels.get("requested") == "main"))
        assert counts == {20}
        lines = running.usage.read_text().splitlines()
        assert len(lines) == 20  # both workers append whole lines to one file
        assert all(json.loads(line)["status"] == 200 for line in lines)
    finally:
        running.stop()


def test_metrics_need_the_master_key_when_one_is_set(gw: Running, gateway: str) -> None:
    assert httpx.get(f"{gw.url}/metrics").status_code == 401
    assert httpx.get(f"{gw.url}/metrics", headers={
        "authorization": f"Bearer {key_of('team-a')}"}).status_code == 401
    open_metrics = httpx.get(f"{gateway}/metrics")  # the session gateway has no master key
    assert open_metrics.status_code == 200
    assert open_metrics.headers["content-type"].startswith("text/plain")


def test_gateway_spend_prints_each_keys_spend(gw: Running) -> None:
    with gw.client() as client:
        chat(client, "main", "Spend a little", extra_headers={"cache-control": "no-store"})
    spent = httpx.get(f"{gw.url}/v1/budget",
                      headers={"authorization": f"Bearer {key_of('team-a')}"}).json()
    result = subprocess.run([sys.executable, "-m", "gateway", "spend", "--config",
                             str(gw.config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[2:]}
    assert rows["key"] == ["spent", "USD", "budget", "USD", "left", "USD"]
    assert float(rows["team-a"][0]) == spent["spent_usd"]
    assert rows["team-a"][1] == "100.000000"
    assert rows["tiny"][0] == "0.000000"
    other_day = subprocess.run([sys.executable, "-m", "gateway", "spend", "--config",
                                str(gw.config), "--date", "2001-01-01"],
                               capture_output=True, text=True, timeout=30)
    assert "Spend on 2001-01-01" in other_day.stdout and "total" in other_day.stdout
    bad = subprocess.run([sys.executable, "-m", "gateway", "spend", "--config", str(gw.config),
                          "--date", "yesterday"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr


def write_slowly(writer: UsageLog, numbers: range) -> None:
    """As requests arrive: a few lines at a time, so the writer thread makes many writes."""
    for n in numbers:
        writer.write(json.dumps({"n": n, "pad": "x" * 40}).encode() + b"\n")
        if n % 10 == 0:
            time.sleep(0.001)


def test_the_usage_log_rotates_and_two_writers_lose_no_line(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    writers = [UsageLog(path, max_mb=0.01, keep=500) for _ in range(2)]  # rotate every ~10 kB
    threads = [threading.Thread(target=write_slowly, args=(w, range(i * 1000, i * 1000 + 1000)))
               for i, w in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for writer in writers:
        writer.close()
    files = [p for p in tmp_path.glob("usage.jsonl*") if not p.name.endswith(".lock")]
    assert len(files) > 5
    numbers = [json.loads(line)["n"] for f in files for line in f.read_text().splitlines()]
    assert sorted(numbers) == list(range(2000))  # every line, whole, exactly once


def test_the_usage_log_keeps_only_keep_files(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    writer = UsageLog(path, max_mb=0.001, keep=2)  # rotate every ~1 kB
    write_slowly(writer, range(1000))
    writer.close()
    names = {p.name for p in tmp_path.glob("usage.jsonl*") if not p.name.endswith(".lock")}
    assert {"usage.jsonl.1", "usage.jsonl.2"} <= names <= {"usage.jsonl", "usage.jsonl.1",
                                                           "usage.jsonl.2"}
    assert all((tmp_path / name).stat().st_size < 8 * 1024 for name in names)


def test_a_client_that_leaves_while_sending_its_body_is_logged_499_not_500(
        gw: Running) -> None:
    before = len(gw._text().splitlines())
    errors_before = gw.log.read_text().count("internal error")
    host, port = gw.url.removeprefix("http://").split(":")
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\n"
            f"authorization: Bearer {key_of('team-a')}\r\n"
            "content-type: application/json\r\ncontent-length: 5000\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(head.encode() + b'{"model": "main", "messages": [')  # then leaves
        time.sleep(0.2)  # the gateway is reading the body when the client goes
    wait_for(lambda: len(gw._text().splitlines()) > before, within_s=5)
    [line] = [json.loads(text) for text in gw._text().splitlines()[before:]]
    assert (line["key"], line["status"]) == ("team-a", 499)
    # A client hanging up is not the gateway's error: no "internal error" line, no 500.
    assert gw.log.read_text().count("internal error") == errors_before
