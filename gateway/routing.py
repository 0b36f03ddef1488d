"""A requested tier or model name -> the chain of models to try; pure, before any I/O."""

from __future__ import annotations

from gateway import untrusted
from gateway.config import ApiKey, Config, Model
from gateway.errors import Forbidden, NotFound


def allowed_names(config: Config, key: ApiKey) -> list[str]:
    return [name for name in config.names() if key.may_use(name)]


def downgraded(key: ApiKey, requested: str, spent_microusd: int | None) -> str | None:
    """The tier or model `requested` is served as, past the key's downgrade threshold for it
    (on `spent_microusd`, the key's spend today as this process last saw it); None: itself."""
    if key.daily_budget_usd is None or spent_microusd is None:
        return None
    for rule in key.downgrade:
        if rule.tier == requested and spent_microusd >= (
                key.daily_budget_usd * 1_000_000 * rule.after_percent / 100):
            return rule.to
    return None


def plan(config: Config, key: ApiKey, requested: str) -> tuple[Model, ...]:
    chain = config.chain(requested)
    if chain is None:
        names = ", ".join(allowed_names(config, key)) or "none"
        raise NotFound(f"unknown model or tier '{untrusted.bounded(requested)}'; this key may "
                       f"use: {names}", param="model")
    if not key.may_use(requested):
        names = ", ".join(allowed_names(config, key)) or "none"
        raise Forbidden(f"key '{key.name}' may not use '{requested}'; it may use: {names}",
                        param="model")
    return chain
