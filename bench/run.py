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


@dataclass
class Target:
    """One thing to load: the mock itself, the gateway or LiteLLM Proxy."""

    name: str
    url: str  # .../v1/chat/completions
    headers: dict[str, str]
    model: str  # 0 ms upstream
    slow_model: str  # SLOW_S upstream

    def body(self, model: str, **extra: object) -> bytes:
        return orjson.dumps({"model": model, "messages": MESSAGES, "max_tokens": 64, **extra})


@dataclass
class Load:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float


def wrk(target: Target, model: str, connections: int, seconds: float, cores: set[int],
        headers: dict[str, str] | None = None) -> Load:
    env = {**os.environ, "BENCH_BODY": target.body(model).decode(),
           "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in (headers or target.headers).items())}
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
               "-s", str(HERE / "post.lua"), target.url]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60,
                         preexec_fn=lambda: os.sched_setaffinity(0, cores)).stdout
    fields = dict(re.findall(r"(\w+)=([\d.]+)", out[out.index("BENCH "):]))
    if float(fields["errors"]):
        raise RuntimeError(f"{target.name}: {fields['errors']} failed requests:\n{out}")
    requests = int(fields["requests"])
    return Load(requests, requests / (float(fields["duration_us"]) / 1e6),
                float(fields["p50_us"]) / 1000, float(fields["p99_us"]) / 1000)


async def first_tokens(target: Target, streams: int, seconds: float) -> list[float]:
    """Time to the first content chunk of each stream, `streams` at a time."""
    body = target.body(target.model, stream=True)
    times: list[float] = []
    deadline = time.perf_counter() + seconds

    async def one(session: aiohttp.ClientSession) -> float:
        started = time.perf_counter()
        async with session.post(target.url, data=body, headers=target.headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{target.name}: stream answered {resp.status}")
            first = None
            async for line in resp.content:
                if first is None and b'"content":"' in line and b'"content":""' not in line:
                    first = (time.perf_counter() - started) * 1000
        if first is None:
            raise RuntimeError(f"{target.name}: a stream had no content")
        return first

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for _ in range(20):  # warm up
            await one(session)

        async def worker() -> None:
            while len(times) < 5000 and time.perf_counter() < deadline:
                times.append(await one(session))

        await asyncio.gather(*(worker() for _ in range(streams)))
    return times


def scenarios(target: Target, seconds: float, cores: set[int]) -> dict[str, Load | float]:
    results: dict[str, Load | float] = {
        "c1": wrk(target, target.model, 1, seconds, cores),
        "c32": wrk(target, target.model, 32, seconds, cores),
        "slow64": wrk(target, target.slow_model, 64, seconds, cores),
        "ttft8": statistics.median(asyncio.run(first_tokens(target, 8, seconds))),
    }
    if target.name == "gateway":  # the cache's own figure: the same request, all hits but one
        cached = {k: v for k, v in target.headers.items() if k != "cache-control"}
        results["hit"] = wrk(target, target.model, 1, seconds, cores, headers=cached)
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


def gateway_config(tmp: Path, mock_url: str, limits: bool = False) -> Path:
    config = tmp / ("router-limits.yaml" if limits else "router.yaml")
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    key_limits, model_limits = (KEY_LIMITS, MODEL_LIMITS) if limits else ("", "")
    config.write_text(
        f"providers:\n  openai: {{api_key: x, api_base: '{mock_url}/v1'}}\n"
        f"models:\n  bench: {{provider: openai, model: gpt-4o-mini{model_limits}}}\n"
        "  bench-slow: {provider: openai, model: slow-upstream,"
        f" price: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}{model_limits}}}\n"
        f"keys:\n  - {{name: bench, key_sha256: {digest}, daily_budget_usd: 1000000"
        f"{key_limits}}}\n"
        f"settings:\n  data_dir: {tmp}/data{'-limits' if limits else ''}\n"
        f"  usage_log: {tmp}/usage.jsonl\n")
    return config


def litellm_config(tmp: Path, mock_url: str) -> Path:
    config = tmp / "litellm.yaml"
    entries = [("bench", "gpt-4o-mini"), ("bench-slow", "slow-upstream")]
    config.write_text("model_list:\n" + "".join(
        f"  - model_name: {name}\n    litellm_params:\n      model: openai/{model}\n"
        f"      api_base: {mock_url}/v1\n      api_key: x\n" for name, model in entries)
        + f"general_settings:\n  master_key: {KEY}\n")
    return config


def fmt(load: Load | float | None, what: str) -> str:
    if load is None:
        return "not run"
    if isinstance(load, float):
        return f"{load:.2f} ms"
    if what == "latency":
        return f"{load.p50_ms:.2f} / {load.p99_ms:.2f} ms"
    return f"{load.rps:,.0f}"


def table(direct: dict, proxies: dict[str, dict], seconds: float) -> str:
    """Rows of the issue's targets: each proxy as added to the direct call, same run."""
    names = list(proxies)
    lines = ["| figure | direct to the mock | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]

    def row(label: str, cells: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    def added(result: dict | None, key: str, base: str | None = None) -> str:
        if result is None:
            return "not run"
        d, p = direct[base or key], result[key]
        if isinstance(d, float):
            return f"+{p - d:.2f} ms"
        return f"+{p.p50_ms - d.p50_ms:.2f} / +{p.p99_ms - d.p99_ms:.2f} ms"

    row("added latency, concurrency 1, p50 / p99",
        [fmt(direct["c1"], "latency")] + [added(proxies[n], "c1") for n in names])
    row("requests/s, concurrency 32, 0 ms upstream",
        [fmt(direct["c32"], "rps")] + [fmt(proxies[n] and proxies[n]["c32"], "rps")
                                       for n in names])
    ideal = 64 / SLOW_S
    row(f"{SLOW_S * 1000:.0f} ms upstream, 64 concurrent: share of the ideal {ideal:,.0f} req/s "
        "(and of the direct call's)",
        [f"{direct['slow64'].rps / ideal:.0%}"] +
        [f"{proxies[n]['slow64'].rps / ideal:.0%} "
         f"({proxies[n]['slow64'].rps / direct['slow64'].rps:.0%})" if proxies[n] else "not run"
         for n in names])
    row("streamed first token added, 8 streams, p50",
        [fmt(direct["ttft8"], "ms")] + [added(proxies[n], "ttft8") for n in names])
    row("cache hit, concurrency 1, p50 / p99 added",
        [""] + [added(proxies[n], "hit", "c1") if proxies[n] and "hit" in proxies[n] else ""
                for n in names])
    row("idle memory (RSS)", [""] + [f"{proxies[n]['rss']:.0f} MB" if proxies[n] else "not run"
                                     for n in names])
    row("start to healthy", [""] + [f"{proxies[n]['start']:.2f} s" if proxies[n] else "not run"
                                    for n in names])
    if all(proxies.values()) and "LiteLLM Proxy" in proxies:
        ratio = proxies["gateway"]["c32"].rps / proxies["LiteLLM Proxy"]["c32"].rps
        lines.append(f"\nThe gateway serves {ratio:.1f}x LiteLLM Proxy's requests/s at "
                     "concurrency 32.")
    return "\n".join(lines)


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
                             "--port", str(mock_port),
                             "--delay", f"slow-upstream={SLOW_S}"],
                            preexec_fn=lambda: os.sched_setaffinity(0, others))
    proxies: dict[str, dict | None] = {}
    try:
        wait_for(f"{mock_url}/health")
        direct = scenarios(Target("direct", f"{mock_url}/v1/chat/completions",
                                  {"content-type": "application/json",
                                   "authorization": "Bearer x"}, "gpt-4o-mini",
                                  "slow-upstream"), args.seconds, others)
        with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
            for name, limits in (("gateway", False), ("gateway, limits on", True)):
                port = free_port()
                process, start_s, rss = start(
                    name, [sys.executable, "-m", "gateway", "serve", "--config",
                           str(gateway_config(Path(tmp), mock_url, limits)), "--port",
                           str(port)], f"http://127.0.0.1:{port}/health", proxy_core)
                try:
                    headers = {"content-type": "application/json",
                               "authorization": f"Bearer {KEY}", "cache-control": "no-store"}
                    proxies[name] = {"start": start_s, "rss": rss, **scenarios(Target(
                        name, f"http://127.0.0.1:{port}/v1/chat/completions", headers,
                        "bench", "bench-slow"), args.seconds, others)}
                finally:
                    stop(process)
            proxies["LiteLLM Proxy"] = None
            if Path(args.litellm).exists():
                port = free_port()
                process, start_s, rss = start(
                    "LiteLLM Proxy", [args.litellm, "--config",
                                      str(litellm_config(Path(tmp), mock_url)),
                                      "--port", str(port), "--num_workers", "1"],
                    f"http://127.0.0.1:{port}/health/liveliness", proxy_core)
                try:
                    headers = {"content-type": "application/json",
                               "authorization": f"Bearer {KEY}"}
                    proxies["LiteLLM Proxy"] = {"start": start_s, "rss": rss, **scenarios(Target(
                        "LiteLLM Proxy", f"http://127.0.0.1:{port}/v1/chat/completions",
                        headers, "bench", "bench-slow"), args.seconds, others)}
                finally:
                    stop(process)
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
    print(table(direct, proxies, args.seconds))


if __name__ == "__main__":
    main()
