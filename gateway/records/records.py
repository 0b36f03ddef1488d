"""One record per request, refusals and failures included: a usage-log line and metrics.

A Record is opened when a request arrives and filled as it goes (key, what was
asked, cache result, the model that served, tokens and cost). It is closed
exactly once: when the answer is sent, when the request is refused or fails,
or, for a stream, when the stream ends. The line never holds key material, and
holds prompt or answer text only with `settings.log_content: true`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gateway import errors, untrusted
from gateway.config import Config
from gateway.money import cost
from gateway.records.metrics import Metrics
from gateway.records.usage_log import UsageLog
from gateway.request import Trace


@dataclass
class Record:
    request_id: str
    config: Config  # the request's configuration: label values must come from it
    ts: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    started: float = field(default_factory=time.perf_counter)
    key: str | None = None
    surface: str = "none"  # the inbound API: chat.completions, embeddings, messages...
    requested: str | None = None
    stream: bool = False
    cache: str = "off"
    model: str | None = None
    usage: cost.Usage | None = None
    cost_microusd: int | None = None
    budget_limited: str | None = None  # "clamped" or "cut": the budget shortened the answer
    first_token_at: float | None = None  # perf_counter when the first token was sent
    downgraded: str | None = None  # "smart -> fast": the key's budget share routed it
    trace: Trace | None = None
    error_code: str | None = None
    prompt: Any = None  # kept only with settings.log_content
    answer: Any = None
    closed: bool = False

    def charged(self, usage: cost.Usage, cost_microusd: int) -> None:
        self.usage, self.cost_microusd = usage, cost_microusd


class Records:
    def __init__(self, metrics: Metrics, usage_log: UsageLog | None):
        self.metrics = metrics
        self.usage_log = usage_log

    def close(self, record: Record, status: int) -> None:
        """The request is over: write its line and count it (once; later calls do nothing)."""
        if record.closed:
            return
        record.closed = True
        ended = time.perf_counter()
        if self.usage_log is not None:
            self.usage_log.write(orjson.dumps(_line(record, status, ended)) + b"\n")
        self._count(record, status, ended)

    def _count(self, record: Record, status: int, ended: float) -> None:
        m, config = self.metrics, record.config
        name = record.requested
        requested = name if name in config.tiers or name in config.models else "unknown"
        m.of(m.requests, requested, record.model or "none", str(status), record.cache,
             record.surface).inc()
        m.of(m.latency, requested).observe(ended - record.started)
        if record.first_token_at is not None:
            m.of(m.ttft, requested).observe(record.first_token_at - record.started)
        key = record.key or "none"
        if record.model is not None and record.usage is not None:
            m.of(m.tokens, key, record.model, "input").inc(record.usage.input_tokens)
            m.of(m.tokens, key, record.model, "output").inc(record.usage.output_tokens)
            m.of(m.cost, key, record.model).inc(cost.dollars(record.cost_microusd) or 0)
        if record.error_code == "budget_exceeded":
            m.of(m.budget_refusals, key).inc()
        if record.trace is not None:
            previous = None
            for attempt in record.trace.attempts:
                m.of(m.provider_calls, attempt.model, str(attempt.status or 0)).inc()
                if attempt.model == previous:
                    m.of(m.retries, attempt.model).inc()
                elif previous is not None:
                    m.of(m.fallbacks, requested).inc()
                previous = attempt.model
            for model in record.trace.cooled:
                m.of(m.cooldowns, model).inc()

    async def reconfigure(self, old: Config, new: Config) -> None:
        """A usage log moved or resized is reopened; the old one writes what it has queued."""
        if usage_log_args(old) == usage_log_args(new):
            return
        retired, self.usage_log = self.usage_log, open_usage_log(new)
        if retired is not None:
            await asyncio.to_thread(retired.close)

    def shutdown(self) -> None:
        """Blocking: call it off the event loop."""
        if self.usage_log is not None:
            self.usage_log.close()


def usage_log_args(config: Config) -> tuple[Path, float, int] | None:
    """What the usage log is opened with (None: no usage log); a reload compares them."""
    settings = config.settings
    if not settings.usage_log:
        return None
    return (config.resolve_path(settings.usage_log), settings.usage_log_max_mb,
            settings.usage_log_keep)


def open_usage_log(config: Config) -> UsageLog | None:
    args = usage_log_args(config)
    return None if args is None else UsageLog(*args)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _requested(record: Record) -> str | None:
    """The name asked for: a router.yaml name as it is, anything else as the client can't
    abuse it (a 9 MB name would rotate the log's earlier lines away)."""
    name, config = record.requested, record.config
    if name is None or name in config.tiers or name in config.models:
        return name
    return untrusted.bounded(name)


def _line(record: Record, status: int, ended: float) -> dict[str, Any]:
    attempts = record.trace.attempts if record.trace is not None else []
    usage = record.usage
    line: dict[str, Any] = {
        "ts": record.ts,
        "request_id": record.request_id,
        "key": record.key,
        "surface": record.surface,
        "requested": _requested(record),
        "model": record.model,
        "attempts": [{"model": a.model, "status": a.status,
                      "error": a.error if record.config.settings.log_content
                      else errors.without_provider_text(a.error),
                      "latency_ms": a.latency_ms} for a in attempts],
        "stream": record.stream,
        "cache": record.cache,
        "input_tokens": usage.input_tokens if usage else None,
        "output_tokens": usage.output_tokens if usage else None,
        # parts of input_tokens, priced apart: prompt-cache reads, and writes (5 min, 1 h)
        "cache_read_tokens": usage.cached_tokens if usage else None,
        "cache_write_tokens": usage.cache_write_tokens if usage else None,
        "cache_write_1h_tokens": usage.cache_write_1h_tokens if usage else None,
        "cost_usd": cost.dollars(record.cost_microusd),
        "budget_limited": record.budget_limited,
        "downgraded": record.downgraded,
        "latency_ms": _ms(ended - record.started),
        "ttft_ms": (None if record.first_token_at is None
                    else _ms(record.first_token_at - record.started)),
        "status": status,
    }
    if record.config.settings.log_content:
        line["prompt"] = record.prompt
        line["answer"] = record.answer
    return line
