"""Prometheus metrics, counted per request from its record; `GET /metrics` renders them.

With `gateway serve --workers N` (N > 1) every worker writes its values to
files in $PROMETHEUS_MULTIPROC_DIR and a scrape of any worker adds them all up
(prometheus-client's multiprocess mode); with one worker they stay in memory.
Label values are names from router.yaml only (tiers, models, key names), never
what a client typed, so a scan of made-up model names cannot grow the series.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_requests", "Requests answered, by what was asked, the model that served, "
            "the HTTP status, the cache result and the inbound API (surface)",
            ["requested", "model", "status", "cache", "surface"], registry=r)
        self.latency = Histogram(
            "gateway_request_duration_seconds", "From the request's arrival to its last byte",
            ["requested"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.ttft = Histogram(
            "gateway_time_to_first_token_seconds", "Streams: from arrival to the first token "
            "sent", ["requested"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.tokens = Counter("gateway_tokens", "Tokens charged, by key, model and direction "
                              "(input or output)", ["key", "model", "direction"], registry=r)
        self.cost = Counter("gateway_cost_usd", "USD charged, by key and model",
                            ["key", "model"], registry=r)
        self.provider_calls = Counter("gateway_provider_calls", "Calls to providers, by model "
                                      "and status (0: no HTTP status)", ["model", "status"],
                                      registry=r)
        self.retries = Counter("gateway_retries", "Provider calls that repeated a failed call "
                               "to the same model", ["model"], registry=r)
        self.fallbacks = Counter("gateway_fallbacks", "Moves from a failed model to the next of "
                                 "its chain", ["requested"], registry=r)
        self.cooldowns = Counter("gateway_cooldowns", "Cooldowns started", ["model"], registry=r)
        self.budget_refusals = Counter("gateway_budget_refusals", "Requests refused by a daily "
                                       "budget", ["key"], registry=r)
        self.budget_alerts = Counter("gateway_budget_alerts", "Budget alerts sent, by key and "
                                     "threshold (percent of the daily budget)",
                                     ["key", "threshold"], registry=r)
        self.rate_limited = Counter("gateway_rate_limited", "Requests refused by a key's rate "
                                    "limit, by key and limit (rpm, tpm, max_in_flight)",
                                    ["key", "limit"], registry=r)
        self.shed = Counter("gateway_requests_shed", "Requests not served because the worker "
                            "was overloaded (in_flight, delay: a 503) or their client had "
                            "left before they started (gone)", ["reason"], registry=r)
        self.store_errors = Counter("gateway_store_errors", "Store operations that failed or "
                                    "were skipped during an outage", registry=r)

        # The labelled series already made: prometheus-client's labels() checks and locks on
        # every call, a tenth of a request's records. Bounded as the label values are.
        self._series: dict[tuple[object, tuple[str, ...]], Any] = {}

    def of(self, metric: Counter | Histogram, *values: str) -> Any:
        """`metric.labels(*values)`, made once."""
        try:
            return self._series[metric, values]
        except KeyError:
            series = self._series[metric, values] = metric.labels(*values)
            return series

    def render(self) -> bytes:
        if os.environ.get(MULTIPROCESS_ENV):
            every_worker = CollectorRegistry()
            # prometheus_client leaves this __init__ unannotated (it is typed otherwise)
            multiprocess.MultiProcessCollector(every_worker)  # type: ignore[no-untyped-call]
            return generate_latest(every_worker)
        return generate_latest(self.registry)
