"""Rate limits that hold across replicas: requests and tokens per minute, requests in flight.

A key's limits (`keys[].limits`) are checked when its request arrives: a
refusal is a 429 with `Retry-After` and OpenAI's `x-ratelimit-*` headers, which
the SDKs retry (unlike a budget refusal). A model's limits (`models.X.limits`,
a provider account's quota) are checked before each call of it: a model whose
quota is used up is skipped, and the chain moves on without calling it.

Every check is one atomic operation in the store (quota_scripts.py), sent with
the ledger's batch of its turn of the event loop. Tokens are counted with the
real usage, after the answer; a request is admitted while the minute's tokens
are under the limit, so one request may take a key past it, and the next waits.
The store down, limits are not enforced (the store logs the outage): a limit
must not become an outage; budgets keep their own rule (on_store_error).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from gateway.config import Limits
from gateway.money.ledger import Ask, Ledger, Write

REFUSED_BY = {1: "requests per minute (rpm)", 2: "tokens per minute (tpm)",
              3: "requests in flight (max_in_flight)"}


def new_id() -> str:
    return f"{random.getrandbits(128):032x}"


def key_owner(name: str) -> str:
    """Whose counters a key's limits (keys[].limits) keep."""
    return f"key:{name}"


def model_owner(name: str) -> str:
    """Whose counters a model's own limits (models.X.limits) keep."""
    return f"model:{name}"


def _keys(owner: str) -> tuple[str, str, str]:
    """`owner`: key_owner(name) or model_owner(name)."""
    prefix = f"gw:limit:v1:{owner}:"
    return prefix + "requests", prefix + "tokens", prefix + "flight"


def _reset(ms: int) -> str:
    """A reset time as OpenAI writes it: 1s, 6m0s, 20ms."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    seconds = math.ceil(ms / 1000)
    return f"{seconds // 60}m{seconds % 60}s" if seconds >= 60 else f"{seconds}s"


@dataclass(frozen=True)
class Admission:
    owner: str
    id: str
    limits: Limits
    admitted: bool
    refused_by: int  # 0: admitted; see REFUSED_BY
    retry_after_ms: int
    requests_left: int  # -1: no such limit
    requests_reset_ms: int
    tokens_left: int
    tokens_reset_ms: int

    def headers(self) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers for the limits the owner has."""
        out: dict[str, str] = {}
        if self.limits.rpm is not None:
            out |= {"x-ratelimit-limit-requests": str(self.limits.rpm),
                    "x-ratelimit-remaining-requests": str(max(self.requests_left, 0)),
                    "x-ratelimit-reset-requests": _reset(self.requests_reset_ms)}
        if self.limits.tpm is not None:
            out |= {"x-ratelimit-limit-tokens": str(self.limits.tpm),
                    "x-ratelimit-remaining-tokens": str(max(self.tokens_left, 0)),
                    "x-ratelimit-reset-tokens": _reset(self.tokens_reset_ms)}
        return out

    @property
    def retry_after_s(self) -> float:
        return self.retry_after_ms / 1000


@dataclass
class Quotas:
    ledger: Ledger

    async def admit(self, owner: str, limits: Limits, lease_s: float) -> Admission:
        """A place under each of `owner`'s limits, or the refusal. Raises StoreDown."""
        rid = new_id()

        def undo(answer: list[int] | None) -> Write | None:
            if answer is not None and not answer[0]:
                return None  # refused: it took no place
            return _release(owner, rid)

        args = (rid, _limit(limits.rpm), _limit(limits.tpm), _limit(limits.max_in_flight),
                math.ceil(lease_s * 1000))
        answer = await self.ledger.ask(Ask("admit", _keys(owner), args, 7, undo))
        return Admission(owner, rid, limits, bool(answer[0]), *answer[1:])

    def release(self, admission: Admission) -> None:
        """A place never used: its admission is forgotten (and its place in flight freed)."""
        self.ledger.write(_release(admission.owner, admission.id))

    def ended(self, admission: Admission | None, counted: list[str], tokens: int,
              marker: str) -> None:
        """A request is over, in one write: the place in flight its `admission` holds, if
        any, is freed, and its `tokens` (input and output) count against the tokens per
        minute of each owner in `counted`, once (by `marker`, the request's id)."""
        flights = (_keys(admission.owner)[2],) if (
            admission is not None and admission.limits.max_in_flight is not None) else ()
        tokens_keys = tuple(_keys(owner)[1] for owner in counted) if tokens > 0 else ()
        if flights or tokens_keys:
            self.ledger.write(Write("ended", flights + tokens_keys, (
                admission.id if admission is not None else "", len(flights), tokens, marker)))


def _release(owner: str, rid: str) -> Write:
    """Forget admission `rid` (never used) and free its place in flight."""
    return Write("release", _keys(owner)[::2], (rid,))


def _limit(value: int | None) -> int | str:
    return "" if value is None else value
