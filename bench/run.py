"""The gateway against a direct call to the mock upstream, in one run: added latency and throughput.

    python bench/run.py [--seconds 10]

Starts the mock provider and `gateway serve` as separate processes (the gateway
pinned to the last core, the mock and this load generator to the others, where
the machine allows), then runs each scenario for a bounded count and time
against both, and prints a Markdown table. Not a test: CI does not run it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson

KEY = "sk-bench"
BODY = {"model": "bench", "messages": [{"role": "user", "content": "Say hello to the benchmark"}],
        "max_tokens": 64}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cores: set[int]) -> dict[str, object]:
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        return {"preexec_fn": lambda: os.sched_setaffinity(0, cores)}
    return {}


def wait_for(url: str, timeout_s: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error status means it is up
                return
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def one(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
              body: bytes) -> float:
    started = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url}: {resp.status}")
    return (time.perf_counter() - started) * 1000


async def first_token(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                      body: bytes) -> float:
    started = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as resp:
        async for line in resp.content:
            if b'"content":"' in line and b'"content":""' not in line:
                elapsed = (time.perf_counter() - started) * 1000
                async for _ in resp.content:
                    pass
                return elapsed
    raise RuntimeError("stream had no content")


async def run_load(url: str, headers: dict[str, str], body: bytes | Callable[[], bytes],
                   concurrency: int, max_requests: int, seconds: float, stream: bool = False,
                   ) -> tuple[list[float], float]:
    """`body` may be a function, for a new body on every request."""
    next_body = body if callable(body) else lambda: body
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    call = first_token if stream else one
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(min(50, max_requests)):  # warm up pools and caches
            await call(session, url, headers, next_body())
        started = time.perf_counter()

        async def worker() -> None:
            while len(latencies) < max_requests and time.perf_counter() < deadline:
                latencies.append(await call(session, url, headers, next_body()))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, len(latencies) / elapsed


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def scenarios(mock: str, gateway: str, seconds: float) -> list[tuple[str, str, str]]:
    direct_url, gw_url = f"{mock}/v1/chat/completions", f"{gateway}/v1/chat/completions"
    direct_h = {"content-type": "application/json", "authorization": "Bearer x"}
    # Cache off for every scenario but the cache's own: no-store skips the store entirely.
    gw_h = {"content-type": "application/json", "authorization": f"Bearer {KEY}",
            "cache-control": "no-store"}
    body = orjson.dumps({**BODY, "model": "gpt-4o-mini"})
    gw_body = orjson.dumps(BODY)
    rows = []
    d, _ = await run_load(direct_url, direct_h, body, 1, 3000, seconds)
    g, _ = await run_load(gw_url, gw_h, gw_body, 1, 3000, seconds)
    rows.append(("added latency, concurrency 1, p50 / p99",
                 f"{statistics.median(d):.2f} / {pct(d, .99):.2f} ms (direct)",
                 f"+{statistics.median(g) - statistics.median(d):.2f} / "
                 f"+{pct(g, .99) - pct(d, .99):.2f} ms"))
    cached_h = {k: v for k, v in gw_h.items() if k != "cache-control"}
    c, _ = await run_load(gw_url, cached_h, gw_body, 1, 3000, seconds)  # all hits but one
    rows.append(("cache hit, concurrency 1, p50 / p99, against the direct call",
                 "", f"{statistics.median(c) - statistics.median(d):+.2f} / "
                     f"{pct(c, .99) - pct(d, .99):+.2f} ms"))
    seeds = itertools.count()

    def unique() -> bytes:  # a new cache key each time: all misses
        return orjson.dumps({**BODY, "seed": next(seeds)})

    m, _ = await run_load(gw_url, cached_h, unique, 1, 3000, seconds)
    rows.append(("cache miss (lookup + store), concurrency 1, p50 / p99",
                 "", f"+{statistics.median(m) - statistics.median(d):.2f} / "
                     f"+{pct(m, .99) - pct(d, .99):.2f} ms"))
    _, d_rps = await run_load(direct_url, direct_h, body, 32, 50_000, seconds)
    _, g_rps = await run_load(gw_url, gw_h, gw_body, 32, 50_000, seconds)
    rows.append(("requests/s, concurrency 32", f"{d_rps:.0f} (direct)", f"{g_rps:.0f}"))
    stream_body = orjson.dumps({**BODY, "model": "gpt-4o-mini", "stream": True})
    gw_stream = orjson.dumps({**BODY, "stream": True})
    d, _ = await run_load(direct_url, direct_h, stream_body, 1, 2000, seconds, stream=True)
    g, _ = await run_load(gw_url, gw_h, gw_stream, 1, 2000, seconds, stream=True)
    rows.append(("time to first token, 1 stream, p50",
                 f"{statistics.median(d):.2f} ms (direct)",
                 f"+{statistics.median(g) - statistics.median(d):.2f} ms"))
    d, _ = await run_load(direct_url, direct_h, stream_body, 8, 2000, seconds, stream=True)
    g, _ = await run_load(gw_url, gw_h, gw_stream, 8, 2000, seconds, stream=True)
    rows.append(("time to first token, 8 streams, p50",
                 f"{statistics.median(d):.2f} ms (direct)",
                 f"+{statistics.median(g) - statistics.median(d):.2f} ms"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="bound per scenario and side")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    gateway_cores, other_cores = {cores[-1]}, set(cores[:-1]) or {cores[-1]}
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, other_cores)
    mock_port, gw_port = free_port(), free_port()
    processes = []
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        config = Path(tmp) / "router.yaml"
        config.write_text(
            f"providers:\n  openai: {{api_key: x, api_base: 'http://127.0.0.1:{mock_port}/v1'}}\n"
            "models:\n  bench: {provider: openai, model: gpt-4o-mini}\n"
            f"keys:\n  - {{name: bench, key_sha256: {hashlib.sha256(KEY.encode()).hexdigest()}, "
            "daily_budget_usd: 1000000}\n")  # budgets on: every request reserves and settles
        try:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "gateway.mockprovider", "--port", str(mock_port)],
                **pinned(other_cores)))
            started = time.perf_counter()
            gateway = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port",
                 str(gw_port)], stderr=subprocess.DEVNULL, **pinned(gateway_cores))
            processes.append(gateway)
            wait_for(f"http://127.0.0.1:{gw_port}/health")
            start_s = time.perf_counter() - started
            wait_for(f"http://127.0.0.1:{mock_port}/health")
            idle_mb = rss_mb(gateway.pid)
            store_mb = sum(rss_mb(child) for child in children(gateway.pid))  # embedded store
            rows = asyncio.run(scenarios(f"http://127.0.0.1:{mock_port}",
                                         f"http://127.0.0.1:{gw_port}", args.seconds))
        finally:
            for process in processes:
                process.terminate()
                process.wait(10)
    rows += [("idle memory (RSS)", "", f"{idle_mb:.0f} MB, and {store_mb:.0f} MB for the "
                                        "embedded store"),
             ("start to healthy", "", f"{start_s:.2f} s")]
    print(f"\n{datetime.now(UTC):%Y-%m-%d}, {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, `python bench/run.py --seconds {args.seconds:g}`\n")
    print("| figure | upstream alone | gateway |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {' | '.join(row)} |")


if __name__ == "__main__":
    main()
