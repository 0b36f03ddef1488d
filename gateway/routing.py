"""A requested tier or model name -> the chain of models to try; pure, before any I/O."""

from __future__ import annotations

from gateway import untrusted
from gateway.config import ApiKey, Config, Model
from gateway.errors import Forbidden, NotFound


def allowed_names(config: Config, key: ApiKey) -> list[str]:
    return [name for name in config.names() if key.may_use(name)]


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
