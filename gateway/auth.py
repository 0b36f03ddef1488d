"""The caller's key: from `Authorization: Bearer` or `x-api-key`, matched by SHA-256 digest."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from gateway.config import ApiKey, Config
from gateway.errors import NotFound, Unauthorized

ANONYMOUS = ApiKey(name="anonymous", digest=b"", daily_budget_usd=None, allow=None)


def presented_key(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return headers.get("x-api-key") or None


def authenticate(headers: Mapping[str, str], config: Config) -> ApiKey:
    key = presented_key(headers)
    if key is None:
        if config.settings.allow_anonymous:
            return ANONYMOUS
        raise Unauthorized("missing API key: send it as 'Authorization: Bearer <key>' or "
                           "'x-api-key: <key>'")
    digest = hashlib.sha256(key.encode()).digest()
    found = None
    for candidate in config.keys:  # no early exit: the time taken says nothing of a match
        if hmac.compare_digest(candidate.digest, digest):
            found = candidate
    if found is None:
        if config.settings.allow_anonymous and not config.keys:
            return ANONYMOUS
        raise Unauthorized("invalid API key: check the key you were given by your gateway "
                           "operator")
    return found


def authenticate_admin(headers: Mapping[str, str], config: Config) -> None:
    """The master key, or 401; with no master key configured, /admin does not exist."""
    master = config.settings.master_key
    if not master:
        raise NotFound("no such endpoint: /admin is off until settings.master_key is set",
                       code="not_found")
    presented = presented_key(headers) or ""
    if not hmac.compare_digest(hashlib.sha256(presented.encode()).digest(),
                               hashlib.sha256(master.encode()).digest()):
        raise Unauthorized("the /admin endpoints need the master key (settings.master_key), "
                           "sent as 'Authorization: Bearer <key>'")
