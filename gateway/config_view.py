"""The effective configuration as `GET /admin/config` shows it: every secret redacted.

Secrets are API keys, the master key, header values (they usually carry
credentials) and the credentials a URL may hold; keys are shown by name only.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from gateway.config import Config, Step

REDACTED = "<redacted>"
SECRET_QUERY_WORDS = ("pass", "secret", "token", "key", "auth")


def effective(config: Config) -> dict[str, Any]:
    settings = config.settings.model_dump()
    settings["redis_url"] = redact_url(settings["redis_url"])
    settings["master_key"] = REDACTED if settings["master_key"] else ""
    alerts = settings["alerts"]  # a webhook's URL is often its own token
    alerts["webhook_url"] = REDACTED if alerts["webhook_url"] else ""
    return {
        "providers": {
            p.name: {"type": p.type, "api_base": redact_url(p.api_base),
                     "api_version": p.api_version,
                     "api_key": REDACTED if p.api_key else None,
                     "headers": dict.fromkeys(p.headers, REDACTED), "unusable": p.unusable}
            for p in config.providers.values()
        },
        "models": {
            m.name: {"provider": m.provider.name, "model": m.provider_model,
                     "price": dataclasses.asdict(m.price),
                     "max_output_tokens": m.max_output_tokens, "reasoning": m.reasoning,
                     "limits": dataclasses.asdict(m.limits)}
            for m in config.models.values()
        },
        "tiers": {name: [shown_step(s) for s in config.groups.get(name, chain)]
                  for name, chain in config.tiers.items()},
        "keys": [{"name": k.name, "daily_budget_usd": k.daily_budget_usd,
                  "allow": sorted(k.allow) if k.allow is not None else None,
                  "cache_scope": k.cache_scope, "limits": dataclasses.asdict(k.limits),
                  "alert_at_percent": list(k.alert_at_percent),
                  "downgrade": [dataclasses.asdict(d) for d in k.downgrade]}
                 for k in config.keys],
        "settings": settings,
    }


def shown_step(step: Step) -> Any:
    """A tier's step as router.yaml writes it: a model's name, or its group."""
    if isinstance(step, str):
        return step
    shown: dict[str, Any] = {"group": list(step.members), "balance": step.balance}
    if step.weights:
        shown["weights"] = dict(step.weights)
    return shown


def redact_url(url: str | None) -> str | None:
    """`redis://:pw@host:6379/0?password=x` -> `redis://<redacted>@host:6379/0?password=<redacted>`."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED  # unparseable: it could be anything, credentials included
    netloc = parts.netloc
    if "@" in url and "@" not in netloc:
        return REDACTED  # credentials with an unescaped '/', '?' or '#': hide it all
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    secret = [any(word in name.lower() for word in SECRET_QUERY_WORDS) for name, _ in pairs]
    if netloc == parts.netloc and not any(secret):
        return url
    query = "&".join(f"{name}={REDACTED if hidden else value}"
                     for (name, value), hidden in zip(pairs, secret, strict=True))
    return (f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
            + (f"#{parts.fragment}" if parts.fragment else ""))
