"""widenings(trusted, new): what a router.yaml gives that a trusted one did not. Pure.

A file rewritten in place may be read half-written, and a prefix of a valid
file is often valid: cut before a key's `daily_budget_usd:` line, it gives the
key unlimited money; cut before its `allow:` list, every model. No settle time
tells a paused writer from a finished one, so such a file is applied by itself
only when this list is empty, and only an explicit signal (SIGHUP, POST
/admin/reload, a file replaced whole) makes a widening one serve.

The test errs toward "widens": a setting it has not classified, or a model
whose upstream changed, counts, so a field added to router.yaml later is safe
until someone says what its changes do. Each entry names what widened, never a
value (values may be secrets).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple
from typing import Any

from gateway.auth import ANONYMOUS
from gateway.config import ApiKey, Config, Model
from gateway.money import cost

# Settings no change of which gives a tenant more access or money: how hard the gateway
# tries, how long it waits, where it writes. (The store's two are restart-only anyway.)
NEUTRAL_SETTINGS = frozenset({
    "redis_url", "data_dir", "max_body_mb", "usage_log", "usage_log_max_mb", "usage_log_keep",
    "log_content", "watch_config", "cache.ttl_s", "budgets.output_slice_tokens",
    "budgets.wait_s", "max_response_mb",
})
NEUTRAL_SECTIONS = ("retry.", "timeouts.", "cooldown.", "overload.", "alerts.")
# Settings that widen one way only: (trusted value, new value) -> widens.
ONE_WAY: dict[str, Callable[[Any, Any], bool]] = {
    # replaced, a new secret opens /admin; removed, /metrics (every key's spend) opens
    "master_key": lambda old, new: bool(old) and new != old,
    "allow_anonymous": lambda old, new: bool(new) and not old,
    "budgets.on_store_error": lambda old, new: new == "allow" and old != "allow",
    "cache.enabled": lambda old, new: bool(new) and not old,
    # shared entries: a key may read what another asked
    "cache.scope": lambda old, new: new == "shared" and old != "shared",
}


def widenings(trusted: Config, new: Config) -> list[str]:
    return [*_keys(trusted, new), *_models(trusted, new), *_settings(trusted, new)]


def reach(config: Config, key: ApiKey) -> tuple[frozenset[str], frozenset[str]]:
    """The tier and model names `key` may ask for, and the models that may then serve it."""
    names = frozenset(name for name in config.names() if key.may_use(name))
    # a downgrade's target serves the key, allowed or not
    served = names | {rule.to for rule in key.downgrade if rule.tier in names}
    return names, frozenset(model.name for name in served for model in config.chain(name) or ())


def _keys(trusted: Config, new: Config) -> list[str]:
    before = {key.name: key for key in trusted.keys}
    pairs = [(before.get(key.name), key) for key in new.keys]
    if trusted.settings.allow_anonymous and new.settings.allow_anonymous:
        pairs.append((ANONYMOUS, ANONYMOUS))  # turning it on is a setting's widening
    out: list[str] = []
    for old, key in pairs:
        if old is None:
            out.append(f"key {key.name} added")
            continue
        if old.digest != key.digest:
            out.append(f"key {key.name}: a new secret")
        if key.cache_scope is not None and key.cache_scope != old.cache_scope:
            out.append(f"key {key.name}: shares cache entries with cache_scope {key.cache_scope}")
        if old.daily_budget_usd is not None and key.daily_budget_usd is None:
            out.append(f"key {key.name}: daily budget removed")
        elif old.daily_budget_usd is not None and key.daily_budget_usd is not None \
                and key.daily_budget_usd > old.daily_budget_usd:
            out.append(f"key {key.name}: daily budget raised")
        for limit in ("rpm", "tpm", "max_in_flight"):
            then, now = getattr(old.limits, limit), getattr(key.limits, limit)
            if then is not None and (now is None or now > then):
                out.append(f"key {key.name}: limits.{limit} raised or removed")
        (names, models), (names_before, models_before) = reach(new, key), reach(trusted, old)
        if gained := (names - names_before) | (models - models_before):
            out.append(f"key {key.name} may use more tiers or models: "
                       f"{', '.join(sorted(gained))}")
    return out


def _models(trusted: Config, new: Config) -> list[str]:
    """Models in both whose calls may cost more than they are charged (new models: `reach`)."""
    out: list[str] = []
    for name in sorted(trusted.models.keys() & new.models.keys()):
        old, model = trusted.models[name], new.models[name]
        if _upstream(old) != _upstream(model):
            out.append(f"model {name}: another upstream")
        before, after = astuple(cost.rates(old.price)), astuple(cost.rates(model.price))
        if any(now < then for now, then in zip(after, before, strict=True)):
            out.append(f"model {name}: a lower price")
        # the output reserved for a request that sets no limit
        if old.max_output_tokens is not None and (model.max_output_tokens is None
                                                  or model.max_output_tokens
                                                  < old.max_output_tokens):
            out.append(f"model {name}: a lower max_output_tokens")
    return out


def _upstream(model: Model) -> tuple[str | None, ...]:
    p = model.provider
    return (p.name, p.type, p.api_base, p.api_version, model.provider_model)


def _settings(trusted: Config, new: Config) -> list[str]:
    before, after = flat(trusted.settings.model_dump()), flat(new.settings.model_dump())
    out: list[str] = []
    for name in sorted(before.keys() | after.keys()):
        old, value = before.get(name), after.get(name)
        if old == value or name in NEUTRAL_SETTINGS or name.startswith(NEUTRAL_SECTIONS):
            continue
        if name not in ONE_WAY or ONE_WAY[name](old, value):
            out.append(f"settings.{name} changed")
    return out


def flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"cache": {"enabled": True}} -> {"cache.enabled": True}."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out
