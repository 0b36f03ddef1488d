"""The caller's key: from `Authorization: Bearer` or `x-api-key`, matched by SHA-256 digest;
and who may use the operator's endpoints."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Mapping

from gateway.config import ApiKey, Config
from gateway.errors import Forbidden, Unauthorized

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


# Headers a reverse proxy adds: a request carrying one was relayed from somewhere else,
# though its connection comes from the proxy (on loopback, when it runs on this machine).
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def is_local(client_host: str | None, headers: Mapping[str, str]) -> bool:
    """Whether the caller is on this machine: a loopback peer, and no proxy relayed it."""
    if client_host is None or any(name in headers for name in FORWARDING_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(client_host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1, on a dual-stack socket
    return address.is_loopback


def authenticate_operator(headers: Mapping[str, str], config: Config,
                          client_host: str | None) -> None:
    """/admin/* and /metrics (every key's spend): the master key when one is set, else 401;
    with none set, callers on this machine only (as Envoy's admin port), else 403."""
    master = config.settings.master_key
    if not master:
        if not is_local(client_host, headers):
            raise Forbidden("/metrics and /admin answer only callers on the gateway's own "
                            "machine while no master key is set: set GATEWAY_MASTER_KEY "
                            "(settings.master_key) and send it as 'Authorization: Bearer "
                            "<key>'", code="master_key_required")
        return
    presented = presented_key(headers) or ""
    if not hmac.compare_digest(hashlib.sha256(presented.encode()).digest(),
                               hashlib.sha256(master.encode()).digest()):
        raise Unauthorized("the /admin endpoints and /metrics need the master key "
                           "(settings.master_key), sent as 'Authorization: Bearer <key>'")
