"""The gateway against a direct call to the mock upstream, and against LiteLLM Proxy, in one run.

    python bench/run.py [--seconds 10] [--litellm .litellm-venv/bin/litellm]

Starts the mock upstream (`gateway.demo.mockprovider`), then each proxy in turn pinned to
the last core (the mock and the load generators get the other cores, where the
machine has them): `gateway serve` with one worker, budgets on (the key has a
budget, so every request reserves and settles) and the cache bypassed, then the same
with rate limits on (the key's rpm, tpm and max_in_flight, the model's rpm and tpm,
none reached), and, when
it is installed in its own virtualenv, LiteLLM Proxy with one worker. Plain
requests are driven by `wrk` with bench/post.lua; streams by a small aiohttp
client that times the first token. Every scenario is bounded in time and count.
Prints a Markdown table. Not a test: CI does not run it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

HERE = Path(__file__).resolve().parent
KEY = "sk-bench"
SLOW_S = 0.05  # the slow upstream's answer time: 64 concurrent requests can do 1,280/s
MESSAGES = [{"role": "user", "content": "Say hello to the benchmark"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout_s: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error status means it is up
                return
            time.sleep(0.02)
    raise RuntimeError(f"{url} did not come up")


def proc_status(pid: int, name: str) -> int:
    """A number from /proc/PID/status (`VmRSS` in kB, `Threads`, ...); 0 if absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    return 0


def rss_mb(pid: int) -> float:
    """The process and its children (workers, an embedded store), in MB."""
    total = proc_status(pid, "VmRSS") / 1024
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        total += rss_mb(int(child))
    return total


# The streams: each scenario's model answers this many words, a stream delta each.
SHORT_WORDS, LONG_WORDS = 18, 498  # OpenAI's chat: 20 and 500 content-bearing events
# The mock's models, as a direct call names them (every row has a direct baseline).
DIRECT_MODELS = {"chat": "gpt-4o-mini", "slow": "slow-upstream", "short": "stream-20",
                 "long": "stream-500", "claude": "claude-stream-20",
                 "translated": "stream-20"}
# The proxies' names for them: router.yaml's (and LiteLLM's model_list).
PROXY_MODELS = {"chat": "bench", "slow": "bench-slow", "short": "bench-stream",
                "long": "bench-long", "claude": "claude-bench", "translated": "groq-bench"}
# What marks a stream's first token, per API.
TOKEN_MARKS = {"chat": (b'"content":"', b'"content":""'), "messages": (b"text_delta", None),
               "responses": (b"response.output_text.delta", None)}


@dataclass
class Target:
    """One thing to load: the mock itself, the bare forwarder, the gateway or LiteLLM."""

    name: str
    base: str  # http://127.0.0.1:PORT
    headers: dict[str, str]
    models: dict[str, str]  # scenario -> the model name this target is asked for
    pid: int | None = None  # whose CPU is counted (with its children); None: not counted
    caches: bool = False  # the gateway: its cache's rows too

    def body(self, model: str, **extra: object) -> bytes:
        return orjson.dumps({"model": self.models[model], "messages": MESSAGES,
                             "max_tokens": 64, **extra})

    def cpu_s(self) -> float:
        return tree_cpu_s(self.pid) if self.pid is not None else 0.0


def tree_cpu_s(pid: int) -> float:
    """User and system CPU of a process and its children (workers, an embedded store)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        total += tree_cpu_s(int(child))
    return total


@dataclass
class Load:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float | None = None  # the proxy's CPU per request (its children included)


def wrk(target: Target, model: str, connections: int, seconds: float, cores: set[int],
        headers: dict[str, str] | None = None) -> Load:
    env = {**os.environ, "BENCH_BODY": target.body(model).decode(),
           "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in (headers or target.headers).items())}
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
               "-s", str(HERE / "post.lua"), f"{target.base}/v1/chat/completions"]
    cpu = target.cpu_s()
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60,
                         preexec_fn=lambda: os.sched_setaffinity(0, cores)).stdout
    cpu = target.cpu_s() - cpu
    fields = dict(re.findall(r"(\w+)=([\d.]+)", out[out.index("BENCH "):]))
    if float(fields["errors"]):
        raise RuntimeError(f"{target.name}: {fields['errors']} failed requests:\n{out}")
    requests = int(fields["requests"])
    return Load(requests, requests / (float(fields["duration_us"]) / 1e6),
                float(fields["p50_us"]) / 1000, float(fields["p99_us"]) / 1000,
                cpu / requests * 1e6 if target.pid else None)


@dataclass
class Streams:
    streams: int
    per_s: float
    first_token_ms: float  # p50
    events: int  # data lines of one stream
    cpu_us: float | None  # the proxy's CPU per stream


def stream_request(target: Target, api: str, model: str) -> tuple[str, bytes]:
    """The path and body of a streamed request of `api` for the scenario `model`."""
    max_tokens = LONG_WORDS + 20 if model == "long" else 64
    name = target.models[model]
    if api == "messages":
        return "/v1/messages", orjson.dumps({"model": name, "max_tokens": max_tokens,
                                             "messages": MESSAGES, "stream": True})
    if api == "responses":
        return "/v1/responses", orjson.dumps({"model": name, "input": MESSAGES[0]["content"],
                                              "max_output_tokens": max_tokens, "stream": True,
                                              "store": False})
    return "/v1/chat/completions", target.body(model, stream=True, max_tokens=max_tokens)


async def streams(target: Target, api: str, model: str, concurrency: int,
                  seconds: float, headers: dict[str, str] | None = None) -> Streams:
    """`concurrency` streams at a time for `seconds`: the first token of each, timed."""
    path, body = stream_request(target, api, model)
    url, headers = target.base + path, headers or target.headers
    mark, empty = TOKEN_MARKS[api]
    times: list[float] = []
    events: list[int] = []
    deadline = time.perf_counter() + seconds

    async def one(session: aiohttp.ClientSession) -> float:
        started = time.perf_counter()
        first, count = None, 0
        async with session.post(url, data=body, headers=headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{target.name}: {path} answered {resp.status}: "
                                   f"{(await resp.read())[:300]!r}")
            async for line in resp.content:
                if line.startswith(b"data:"):
                    count += 1
                if first is None and mark in line and (empty is None or empty not in line):
                    first = (time.perf_counter() - started) * 1000
        if first is None:
            raise RuntimeError(f"{target.name}: a {path} stream had no text")
        events.append(count)
        return first

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for _ in range(10):  # warm up
            await one(session)
        events.clear()

        async def worker() -> None:
            while len(times) < 20000 and time.perf_counter() < deadline:
                times.append(await one(session))

        cpu, started = target.cpu_s(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - started, target.cpu_s() - cpu
    return Streams(len(times), len(times) / elapsed, statistics.median(times),
                   round(statistics.median(events)),
                   cpu / len(times) * 1e6 if target.pid else None)


# The stream rows: label -> the API and the scenario's model. 8 streams at a time each.
STREAM_ROWS = {
    "chat, 20 events": ("chat", "short"),
    "chat, 500 events": ("chat", "long"),
    "messages, native": ("messages", "claude"),
    "messages, translated": ("messages", "short"),
    "responses, native": ("responses", "short"),
    "responses, translated": ("responses", "translated"),
}


def scenarios(target: Target, seconds: float, cores: set[int]) -> dict[str, Any]:
    results: dict[str, Any] = {
        "c1": wrk(target, "chat", 1, seconds, cores),
        "c32": wrk(target, "chat", 32, seconds, cores),
        "slow64": wrk(target, "slow", 64, seconds, cores),
    }
    for label, (api, model) in STREAM_ROWS.items():
        try:
            results[label] = asyncio.run(streams(target, api, model, 8, seconds))
        except (RuntimeError, aiohttp.ClientError) as exc:  # a proxy that cannot serve it
            print(f"{target.name}: {label}: {exc}", file=sys.stderr)
            results[label] = None
    if target.caches:  # the cache's own figures: the same request, all hits but one
        cached = {k: v for k, v in target.headers.items() if k != "cache-control"}
        results["hit"] = wrk(target, "chat", 1, seconds, cores, headers=cached)
        results["long hit"] = asyncio.run(streams(target, "chat", "long", 8, seconds,
                                                  headers=cached))
    return results


def start(name: str, command: list[str], health: str, core: int, env: dict[str, str] | None = None,
          ) -> tuple[subprocess.Popen[bytes], float, float]:
    """Starts a proxy pinned to `core`; returns it, its start-to-healthy seconds, its idle RSS."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, **(env or {})},
                               preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    try:
        wait_for(health)
    except RuntimeError:
        process.kill()
        raise RuntimeError(f"{name} did not start: {' '.join(command)}") from None
    start_s = time.perf_counter() - started
    time.sleep(1)  # idle, after start-up's garbage
    return process, start_s, rss_mb(process.pid)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


# The "limits on" run: every request is admitted under the key's three limits and the
# model's two, none of which it reaches (what admitting costs, not refusals).
KEY_LIMITS = ", limits: {rpm: 100000000, tpm: 1000000000000, max_in_flight: 100000}"
MODEL_LIMITS = ", limits: {rpm: 100000000, tpm: 1000000000000}"


PRICE = "price: {input_per_mtok: 0.15, output_per_mtok: 0.6}"


def gateway_config(tmp: Path, mock_url: str, limits: bool = False) -> Path:
    config = tmp / ("router-limits.yaml" if limits else "router.yaml")
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    key_limits, model_limits = (KEY_LIMITS, MODEL_LIMITS) if limits else ("", "")
    models = {"bench": ("openai", "gpt-4o-mini"), "bench-slow": ("openai", "slow-upstream"),
              "bench-stream": ("openai", "stream-20"), "bench-long": ("openai", "stream-500"),
              "claude-bench": ("anthropic", "claude-stream-20"),
              "groq-bench": ("groq", "stream-20")}
    config.write_text(
        "providers:\n"
        + "".join(f"  {name}: {{api_key: x, api_base: '{mock_url}{path}'}}\n"
                  for name, path in (("openai", "/v1"), ("anthropic", ""), ("groq", "/v1")))
        + "models:\n"
        + "".join(f"  {name}: {{provider: {provider}, model: {model}, {PRICE}{model_limits}}}\n"
                  for name, (provider, model) in models.items())
        + f"keys:\n  - {{name: bench, key_sha256: {digest}, daily_budget_usd: 1000000"
        f"{key_limits}}}\n"
        f"settings:\n  data_dir: {tmp}/data{'-limits' if limits else ''}\n"
        f"  usage_log: {tmp}/usage.jsonl\n")
    return config


def litellm_config(tmp: Path, mock_url: str) -> Path:
    config = tmp / "litellm.yaml"
    entries = [("bench", "openai/gpt-4o-mini", "/v1"),
               ("bench-slow", "openai/slow-upstream", "/v1"),
               ("bench-stream", "openai/stream-20", "/v1"),
               ("bench-long", "openai/stream-500", "/v1"),
               ("claude-bench", "anthropic/claude-stream-20", ""),
               ("groq-bench", "groq/stream-20", "/v1")]
    config.write_text("model_list:\n" + "".join(
        f"  - model_name: {name}\n    litellm_params:\n      model: {model}\n"
        f"      api_base: {mock_url}{path}\n      api_key: x\n"
        for name, model, path in entries)
        + f"general_settings:\n  master_key: {KEY}\n")
    return config


def table(direct: dict[str, Any], proxies: dict[str, dict[str, Any] | None]) -> str:
    """Rows of the issue's targets: each proxy against the direct call, same run."""
    names = list(proxies)
    lines = ["| figure | direct to the mock | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]

    def row(label: str, direct_cell: str, cell: Any) -> None:
        cells = []
        for name in names:
            result = proxies[name]
            try:
                cells.append("not run" if result is None else cell(result))
            except KeyError:
                cells.append("")  # a scenario this proxy does not serve
        lines.append(f"| {label} | {direct_cell} | " + " | ".join(cells) + " |")

    def us(value: float | None) -> str:
        return "" if value is None else f"{value:,.0f} us"

    c1, c32 = direct["c1"], direct["c32"]
    row("added latency, concurrency 1, p50 / p99", f"{c1.p50_ms:.2f} / {c1.p99_ms:.2f} ms",
        lambda r: f"{r['c1'].p50_ms - c1.p50_ms:+.2f} / {r['c1'].p99_ms - c1.p99_ms:+.2f} ms")
    row("requests/s, concurrency 32, 0 ms upstream", f"{c32.rps:,.0f}",
        lambda r: f"{r['c32'].rps:,.0f}")
    row("CPU per request (concurrency 32)", "", lambda r: us(r["c32"].cpu_us))
    ideal = 64 / SLOW_S
    row(f"{SLOW_S * 1000:.0f} ms upstream, 64 concurrent: share of the ideal {ideal:,.0f} "
        "req/s (and of the direct call's)", f"{direct['slow64'].rps / ideal:.0%}",
        lambda r: f"{r['slow64'].rps / ideal:.0%} "
                  f"({r['slow64'].rps / direct['slow64'].rps:.0%})")
    for label in STREAM_ROWS:
        d = direct[label]
        row(f"{label} ({d.events} data lines direct), 8 at a time: streams/s, first token "
            "p50 (added), CPU per stream", f"{d.per_s:,.0f}, {d.first_token_ms:.2f} ms",
            lambda r, label=label, d=d: "does not serve it" if r[label] is None else
            f"{r[label].per_s:,.0f}, {r[label].first_token_ms - d.first_token_ms:+.2f} ms, "
            f"{us(r[label].cpu_us)}")
    short, long = "chat, 20 events", "chat, 500 events"

    def per_chunk(r: dict[str, Any]) -> str:
        if r[long] is None or r[short] is None or r[long].cpu_us is None:
            return ""
        extra = r[long].events - r[short].events
        if extra <= 0:
            return ""
        return us((r[long].cpu_us - r[short].cpu_us) / extra)

    row("CPU per relayed SSE event (500 against 20 events)", "", per_chunk)
    row("cache hit, concurrency 1, p50 / p99 added", "",
        lambda r: f"{r['hit'].p50_ms - c1.p50_ms:+.2f} / {r['hit'].p99_ms - c1.p99_ms:+.2f} ms")
    row("cache hit replayed as a 500-event stream: streams/s, CPU per stream", "",
        lambda r: f"{r['long hit'].per_s:,.0f}, {us(r['long hit'].cpu_us)}")
    row("idle memory (RSS)", "", lambda r: f"{r['rss']:.0f} MB")
    row("start to healthy", "", lambda r: f"{r['start']:.2f} s")
    gateway, litellm = proxies.get("gateway"), proxies.get("LiteLLM Proxy")
    if gateway and litellm:
        ratio = gateway["c32"].rps / litellm["c32"].rps
        lines.append(f"\nThe gateway serves {ratio:.1f}x LiteLLM Proxy's requests/s at "
                     "concurrency 32.")
    return "\n".join(lines)


def measured(name: str, command: list[str], health: str, core: int, base: str,
             headers: dict[str, str], seconds: float, others: set[int],
             caches: bool = False, models: dict[str, str] | None = None) -> dict[str, Any]:
    """Starts a proxy on `core`, runs every scenario against it, stops it."""
    process, start_s, rss = start(name, command, health, core)
    try:
        target = Target(name, base, headers, models or PROXY_MODELS, process.pid, caches)
        return {"start": start_s, "rss": rss, **scenarios(target, seconds, others)}
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="bound of each scenario")
    parser.add_argument("--litellm", default=str(HERE.parent / ".litellm-venv/bin/litellm"),
                        help="LiteLLM Proxy's `litellm` command (skipped if missing)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/run.py drives plain requests with wrk: apt-get install -y wrk")
    cores = sorted(os.sched_getaffinity(0))
    proxy_core, others = cores[-1], set(cores[:-1]) or {cores[-1]}
    os.sched_setaffinity(0, others)  # this process: the stream client
    mock_port = free_port()
    mock_url = f"http://127.0.0.1:{mock_port}"
    mock = subprocess.Popen([sys.executable, "-m", "gateway.demo.mockprovider",
                             "--port", str(mock_port), "--delay", f"slow-upstream={SLOW_S}",
                             "--words", f"stream-20={SHORT_WORDS}",
                             "--words", f"claude-stream-20={SHORT_WORDS}",
                             "--words", f"stream-500={LONG_WORDS}"],
                            preexec_fn=lambda: os.sched_setaffinity(0, others))
    proxies: dict[str, dict[str, Any] | None] = {}
    try:
        wait_for(f"{mock_url}/health")
        mock_headers = {"content-type": "application/json", "authorization": "Bearer x",
                        "x-api-key": "x", "anthropic-version": "2023-06-01"}
        direct = scenarios(Target("direct", mock_url, mock_headers, DIRECT_MODELS),
                           args.seconds, others)
        port = free_port()
        proxies["bare forwarder"] = measured(
            "bare forwarder", [sys.executable, str(HERE / "bare.py"), "--port", str(port),
                               "--upstream", mock_url], f"http://127.0.0.1:{port}/health",
            proxy_core, f"http://127.0.0.1:{port}", mock_headers, args.seconds, others,
            models=DIRECT_MODELS)
        with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
            headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}",
                       "cache-control": "no-store"}
            for name, limits in (("gateway", False), ("gateway, limits on", True)):
                port = free_port()
                proxies[name] = measured(
                    name, [sys.executable, "-m", "gateway", "serve", "--config",
                           str(gateway_config(Path(tmp), mock_url, limits)), "--port",
                           str(port)], f"http://127.0.0.1:{port}/health", proxy_core,
                    f"http://127.0.0.1:{port}", headers, args.seconds, others,
                    caches=not limits)
            proxies["LiteLLM Proxy"] = None
            if Path(args.litellm).exists():
                port = free_port()
                proxies["LiteLLM Proxy"] = measured(
                    "LiteLLM Proxy", [args.litellm, "--config",
                                      str(litellm_config(Path(tmp), mock_url)),
                                      "--port", str(port), "--num_workers", "1"],
                    f"http://127.0.0.1:{port}/health/liveliness", proxy_core,
                    f"http://127.0.0.1:{port}", {"content-type": "application/json",
                                                 "authorization": f"Bearer {KEY}"},
                    args.seconds, others)
    finally:
        stop(mock)
    litellm_version = ""
    if proxies["LiteLLM Proxy"]:
        litellm_version = subprocess.run(
            [str(Path(args.litellm).parent / "python"), "-c",
             "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True, text=True).stdout.strip()
    print(f"\n{datetime.now(UTC):%Y-%m-%d}, {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}"
          + (f", LiteLLM {litellm_version}" if litellm_version else "")
          + f": `python bench/run.py --seconds {args.seconds:g}`\n")
    print(table(direct, proxies))


if __name__ == "__main__":
    main()
