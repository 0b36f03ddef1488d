"""A bounded soak: steady mixed traffic through one gateway, watching for leaks and lost records.

    python bench/soak.py [--minutes 10] [--rate 40]
    python bench/soak.py --overload --rate 300 [--phase-s 30] [--client-timeout-s 5]

Starts the mock upstream and `gateway serve` (one worker, embedded store, budgets
on, cache on) and sends `--rate` requests a second for `--minutes`, then stops by
itself. The mix: plain answers, streams, repeated questions (cache hits) and a
tier whose first model's provider refuses connections (a fallback on every
call). Every `--sample-s` seconds it samples the gateway's memory, open file
descriptors and threads. At the end it checks that every answer was whole, that
the usage log has one line per request, and that the gateway's memory and
descriptors stayed flat over the second half of the run; it prints a Markdown
table and exits 1 if a check failed. Not a test: CI does not run it.

With --overload it runs three phases instead, `--phase-s` each: `--rate`, three
times `--rate`, then `--rate` again, with the gateway pinned to one core and the
mock and this load generator on the other, and clients that give up after
`--client-timeout-s` (as impatient callers do). Per phase it prints goodput
(whole answers a second), p50/p99 of those, refusals (503) and client
timeouts, and the gateway's RSS at the phase's end; then how long service took
to recover after the overload (from its end until every later half-second had
only whole answers, their median no more than twice the first phase's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import free_port, proc_status, rss_mb, stop, wait_for  # bench/run.py's helpers

KEY = "sk-soak"
# One in ten requests asks the cached question; streams and fallbacks share the rest.
MIX = ("plain", "stream", "plain", "fallback", "cached", "stream", "plain", "fallback",
       "plain", "stream")


def config(tmp: Path, mock_url: str, dead_url: str, overload: str = "") -> Path:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    path = tmp / "router.yaml"
    path.write_text(
        "providers:\n"
        f"  openai: {{api_key: x, api_base: '{mock_url}/v1'}}\n"
        f"  down: {{type: openai, api_key: x, api_base: '{dead_url}/v1'}}\n"
        "models:\n"
        "  soak: {provider: openai, model: gpt-4o-mini}\n"
        "  gone: {provider: down, model: gpt-4o-mini}\n"
        "tiers:\n  fallback: [gone, soak]\n"
        f"keys:\n  - {{name: soak, key_sha256: {digest}, daily_budget_usd: 1000000}}\n"
        "settings:\n"
        "  retry: {max_retries: 0}\n"
        # The dead provider must be called every time, not cooled down and skipped.
        "  cooldown: {after_failures: 1000000, window_s: 1, for_s: 1}\n"
        f"  data_dir: {tmp}/data\n  usage_log: {tmp}/usage.jsonl\n"
        + (f"  overload: {overload}\n" if overload else ""))
    return path


@dataclass
class Tally:
    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    broken: int = 0  # a 200 whose body was not a whole answer
    latencies_ms: list[float] = field(default_factory=list)
    # (sent at, monotonic; "ok", a status, or an exception's name; latency ms)
    events: list[tuple[float, str, float]] = field(default_factory=list)


async def one(session: aiohttp.ClientSession, url: str, kind: str, n: int,
              tally: Tally) -> None:
    model = "fallback" if kind == "fallback" else "soak"
    question = "the usual question" if kind == "cached" else f"question number {n}"
    body = {"model": model, "max_tokens": 32, "stream": kind == "stream",
            "messages": [{"role": "user", "content": question}]}
    sent_at = time.monotonic()
    started = time.perf_counter()
    try:
        async with session.post(url, data=orjson.dumps(body)) as response:
            raw = await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.statuses[type(exc).__name__] += 1
        tally.events.append((sent_at, type(exc).__name__, 0.0))
        return
    latency_ms = (time.perf_counter() - started) * 1000
    tally.latencies_ms.append(latency_ms)
    tally.statuses[f"{kind} {status}"] += 1
    whole = raw.rstrip().endswith(b"data: [DONE]") if kind == "stream" else b'"choices"' in raw
    if status == 200 and not whole:
        tally.broken += 1
    tally.events.append((sent_at, "ok" if status == 200 and whole else str(status), latency_ms))


async def load(url: str, rate: float, seconds: float, tally: Tally,
               timeout_s: float = 30) -> None:
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    connector = aiohttp.TCPConnector(limit=0)  # an open loop: as many connections as it takes
    async with aiohttp.ClientSession(headers=headers, timeout=timeout,
                                     connector=connector) as session:
        tasks: set[asyncio.Task[None]] = set()
        started, first = time.monotonic(), tally.sent
        limit = int(rate * seconds)
        while tally.sent - first < limit and time.monotonic() - started < seconds:
            task = asyncio.create_task(one(session, url, MIX[tally.sent % len(MIX)],
                                           tally.sent, tally))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            tally.sent += 1
            # A steady rate: the next request leaves on schedule, not after the last answer.
            await asyncio.sleep(max(0.0, started + (tally.sent - first) / rate
                                    - time.monotonic()))
        await asyncio.gather(*tasks)


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# elapsed s, gateway RSS MB, gateway + store RSS MB, open descriptors, threads
Sample = tuple[float, float, float, int, int]


def measure(pid: int, elapsed: float) -> Sample:
    # The gateway alone, then with its store: the store grows with cached answers, by design.
    return (elapsed, proc_status(pid, "VmRSS") / 1024, rss_mb(pid), descriptors(pid),
            proc_status(pid, "Threads"))


async def sample(pid: int, every_s: float, samples: list[Sample],
                 done: asyncio.Event) -> None:
    started = time.monotonic()
    while not done.is_set():
        samples.append(measure(pid, time.monotonic() - started))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), every_s)


async def soak(url: str, pid: int, rate: float, seconds: float, every_s: float,
               ) -> tuple[Tally, list[Sample]]:
    tally, samples, done = Tally(), [], asyncio.Event()
    sampler = asyncio.create_task(sample(pid, every_s, samples, done))
    await load(url, rate, seconds, tally)
    done.set()
    await sampler
    samples.append(measure(pid, seconds))
    return tally, samples


@dataclass
class Phase:
    name: str
    rate: float
    began: float = 0.0  # monotonic
    ended: float = 0.0
    rss_mb: float = 0.0


async def overload(url: str, pid: int, base_rate: float, phase_s: float,
                   timeout_s: float) -> tuple[Tally, list[Phase]]:
    tally = Tally()
    phases = [Phase("1x", base_rate), Phase("3x", 3 * base_rate), Phase("1x again", base_rate)]
    for phase in phases:
        phase.began = time.monotonic()
        sending = asyncio.create_task(load(url, phase.rate, phase_s, tally, timeout_s))
        await asyncio.sleep(phase_s)
        phase.ended = time.monotonic()
        phase.rss_mb = proc_status(pid, "VmRSS") / 1024
        await sending  # the phase's last answers, before the next phase begins
    return tally, phases


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else 0.0


def report_overload(args: argparse.Namespace, tally: Tally, phases: list[Phase]) -> None:
    print(f"\noverload: {args.phase_s:g} s at {args.rate:g}, {3 * args.rate:g}, then "
          f"{args.rate:g} req/s; clients give up after {args.client_timeout_s:g} s\n")
    print("| phase | sent/s | whole answers/s | p50 | p99 | 503 | client timeouts | other "
          "| RSS at end |\n|---|---|---|---|---|---|---|---|---|")
    for phase in phases:
        events = [e for e in tally.events if phase.began <= e[0] < phase.ended]
        ok = [latency for _, what, latency in events if what == "ok"]
        seconds = phase.ended - phase.began
        shed = sum(1 for e in events if e[1] == "503")
        timeouts = sum(1 for e in events if e[1] in ("TimeoutError", "ServerTimeoutError"))
        other = len(events) - len(ok) - shed - timeouts
        print(f"| {phase.name} | {len(events) / seconds:.0f} | {len(ok) / seconds:.0f} | "
              f"{percentile(ok, 0.5):.1f} ms | {percentile(ok, 0.99):.1f} ms | {shed} | "
              f"{timeouts} | {other} | {phase.rss_mb:.1f} MB |")
    baseline = percentile([e[2] for e in tally.events
                           if phases[0].began <= e[0] < phases[0].ended and e[1] == "ok"], 0.5)
    after = phases[2]
    bins: dict[int, list[tuple[float, str, float]]] = {}
    for event in tally.events:
        if after.began <= event[0] < after.ended:
            bins.setdefault(int((event[0] - after.began) / 0.5), []).append(event)
    healthy = [all(what == "ok" for _, what, _ in events)
               and percentile([e[2] for e in events], 0.5) <= 2 * baseline
               for _, events in sorted(bins.items())]
    unhealthy = [i for i, good in enumerate(healthy) if not good]
    recovered_s = 0.5 * (unhealthy[-1] + 1) if unhealthy else 0.0
    print(f"\nrecovered {recovered_s:.1f} s after the overload ended (every later half-second: "
          f"whole answers only, their median within 2x the first phase's {baseline:.1f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=40, help="requests per second")
    parser.add_argument("--sample-s", type=float, default=30)
    parser.add_argument("--overload", action="store_true",
                        help="phases of --rate, 3x --rate, --rate instead of the steady soak")
    parser.add_argument("--phase-s", type=float, default=30)
    parser.add_argument("--client-timeout-s", type=float, default=5)
    parser.add_argument("--overload-settings", default="",
                        help="settings.overload for the gateway, e.g. '{max_delay_ms: 100}'")
    args = parser.parse_args()
    if args.overload:  # the gateway on core 0; the mock and this load generator on core 1
        os.sched_setaffinity(0, {1})
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="gateway-soak-") as name:
        tmp = Path(name)
        mock_port, gateway_port, dead_port = free_port(), free_port(), free_port()
        mock = subprocess.Popen([sys.executable, "-m", "gateway.demo.mockprovider", "--port",
                                 str(mock_port)], stdout=subprocess.DEVNULL)
        gateway = None
        try:
            wait_for(f"http://127.0.0.1:{mock_port}/health")
            path = config(tmp, f"http://127.0.0.1:{mock_port}", f"http://127.0.0.1:{dead_port}",
                          args.overload_settings)
            pinned = (lambda: os.sched_setaffinity(0, {0})) if args.overload else None
            gateway = subprocess.Popen(["gateway", "serve", "--config", str(path), "--port",
                                        str(gateway_port)], stdout=subprocess.DEVNULL,
                                       stderr=(tmp / "gateway.log").open("wb"),
                                       preexec_fn=pinned)
            wait_for(f"http://127.0.0.1:{gateway_port}/ready")
            url = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
            if args.overload:
                tally, phases = asyncio.run(overload(url, gateway.pid, args.rate, args.phase_s,
                                                     args.client_timeout_s))
                report_overload(args, tally, phases)
                return
            tally, samples = asyncio.run(soak(url, gateway.pid, args.rate, seconds,
                                              args.sample_s))
            time.sleep(1)  # the usage log's writer thread catches up
            lines = (tmp / "usage.jsonl").read_bytes().count(b"\n")
            log = (tmp / "gateway.log").read_text()
        finally:
            if gateway is not None:
                stop(gateway)
            stop(mock)
    report(args, tally, samples, lines, log)


def report(args: argparse.Namespace, tally: Tally,
           samples: list[Sample], lines: int, log: str) -> None:
    # A leak grows for as long as traffic runs; pools and caches fill once, early on.
    warm = [s for s in samples if s[0] >= samples[-1][0] / 2] or samples
    rss = [s[1] for s in warm]
    fds = [s[3] for s in warm]
    ok = sum(n for status, n in tally.statuses.items() if status.endswith(" 200"))
    latencies = sorted(tally.latencies_ms)
    checks = {
        "every request answered 200": ok == tally.sent,
        "every answer whole": tally.broken == 0,
        "one usage-log line per request": lines == tally.sent,
        "gateway memory flat over the second half (within 10 MB)": max(rss) - min(rss) <= 10,
        "file descriptors flat over the second half (within 5)": max(fds) - min(fds) <= 5,
        "no traceback in the gateway's log": "Traceback" not in log,
    }
    print(f"\n{args.minutes:g} min at {args.rate:g} req/s: {tally.sent} requests, "
          f"{dict(tally.statuses)}")
    print(f"latency p50 {latencies[len(latencies) // 2]:.1f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99)]:.1f} ms\n")
    print("| elapsed | gateway RSS | with its store | open fds | threads |\n|---|---|---|---|---|")
    for elapsed, own, total, fd, thread_count in samples:
        print(f"| {elapsed:.0f} s | {own:.1f} MB | {total:.1f} MB | {fd} | {thread_count} |")
    print()
    for name, passed in checks.items():
        print(f"- {'PASS' if passed else 'FAIL'}: {name}")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
