"""Budget alerts: sent once per key, threshold and day, whichever replica crosses it.

A settlement that takes a key's spend to one of its thresholds
(`keys[].alert_at_percent`) queues the alert in the store, once: the book's
settle operation sets the threshold's marker and pushes the alert in the same
atomic step (money/budget_scripts.py). Every process takes alerts off that
queue; the one that takes an alert logs it, counts it
(`gateway_budget_alerts`) and, with `settings.alerts.webhook_url`, POSTs it
as JSON, retried with backoff. The payload holds the key's name and its money,
never its secret or a prompt. The webhook's URL is a secret (it often holds a
token): it is never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from gateway.money import cost
from gateway.money.budget_scripts import ALERTS_KEY
from gateway.records.metrics import Metrics
from gateway.schema import AlertSettings
from gateway.store import Store, StoreDown

log = logging.getLogger("gateway")
POLL_S = 1.0
TAKEN_AT_ONCE = 20


class Undelivered(Exception):
    """The webhook did not take the alert (an HTTP status past 299, or no answer)."""


def payload(alert: dict[str, Any]) -> dict[str, Any]:
    """What the webhook receives."""
    spent, budget = int(alert["spent_microusd"]), int(alert["budget_microusd"])
    return {"type": "budget_alert", "key": alert["key"], "date": alert["date"],
            "threshold_percent": int(alert["threshold_percent"]),
            "spent_usd": float(cost.usd(spent)), "budget_usd": float(cost.usd(budget)),
            "spent_microusd": spent, "budget_microusd": budget}


@dataclass
class Alerts:
    store: Store
    metrics: Metrics
    settings: Callable[[], AlertSettings]  # the configuration's, now
    spawn: Callable[[Any], object]  # runs a coroutine apart (Services.spawn)

    async def run(self) -> None:
        """Take queued alerts once a second until cancelled."""
        async with aiohttp.ClientSession() as session:
            while True:
                for alert in await self._taken():
                    self.spawn(self._send(session, alert))
                await asyncio.sleep(POLL_S)

    async def _taken(self) -> list[dict[str, Any]]:
        try:
            raw = await self.store.run(lambda redis: redis.lpop(ALERTS_KEY, TAKEN_AT_ONCE))
        except StoreDown:
            return []
        return [orjson.loads(item) for item in raw or [] if isinstance(item, bytes | str)]

    async def _send(self, session: aiohttp.ClientSession, alert: dict[str, Any]) -> None:
        body = payload(alert)
        log.warning("budget alert: key %s reached %d%% of its daily budget on %s: spent $%s "
                    "of $%s", body["key"], body["threshold_percent"], body["date"],
                    cost.usd(body["spent_microusd"]), cost.usd(body["budget_microusd"]))
        self.metrics.budget_alerts.labels(body["key"], str(body["threshold_percent"])).inc()
        settings = self.settings()
        if not settings.webhook_url:
            return
        try:
            async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(settings.attempts),
                    wait=wait_exponential(multiplier=1, max=30),
                    retry=retry_if_exception_type(Undelivered), reraise=True):
                with attempt:
                    await _post(session, settings, body)
        except Undelivered as exc:
            log.error("budget alert for key %s at %d%% was not delivered after %d attempts: "
                      "%s", body["key"], body["threshold_percent"], settings.attempts, exc)


async def _post(session: aiohttp.ClientSession, settings: AlertSettings,
                body: dict[str, Any]) -> None:
    try:
        async with session.post(settings.webhook_url, data=orjson.dumps(body),
                                headers={"content-type": "application/json"},
                                timeout=aiohttp.ClientTimeout(total=settings.timeout_s)) as sent:
            if sent.status >= 300:
                raise Undelivered(f"the webhook answered {sent.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Undelivered(f"the webhook did not answer ({type(exc).__name__})") from exc
    except RuntimeError as exc:  # the session closed under it: the gateway is stopping
        raise Undelivered("the gateway stopped before it was delivered") from exc
