"""The loop over the chain: each usable model in order, with its retries, collecting each failure.

A transient failure is retried on the same model (retries.py), then falls back;
a provider auth error or a context overflow falls back at once; a client error
ends the request with the provider's status. A stream may fall back until its
first token (a non-empty text or tool-call delta) exists: the client has seen
nothing before that. Models in cooldown are skipped, unless every usable model
is cooling: then they are tried anyway, since a cooldown must not become an outage.
A model whose own quota (models.X.limits) is used up is skipped without a call:
the provider would only answer 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gateway import retries
from gateway.balance import Balancer
from gateway.config import Model
from gateway.cooldown import Cooldowns
from gateway.errors import ChainFailed, ClientGone, ProviderError, Unsupported
from gateway.forms import openai
from gateway.forms.base import StreamForm
from gateway.money import quotas
from gateway.money.quotas import Admission, Quotas
from gateway.providers import build
from gateway.providers.base import Adapter, Speaker
from gateway.request import Trace
from gateway.schema import Settings
from gateway.store import StoreDown

log = logging.getLogger("gateway")
T = TypeVar("T")
# The body as one model of the chain is sent it (its output limit in the field it reads).
BodyFor = Callable[[Model], dict[str, Any]]


@dataclass
class Chain:
    """The models of one request and what it needs to call them."""

    models: tuple[Model, ...]
    adapters: Mapping[str, Adapter]  # of the request's configuration, by model name
    settings: Settings
    cooldowns: Cooldowns
    trace: Trace
    gone: Callable[[], bool]  # whether the client has closed its connection
    form: StreamForm = openai.CHAT  # how the answers are read (a stream's first token)
    # The wire format models are spoken to in (providers/base.py), None: the gateway's own;
    # and the client's headers of that format's API, for a native pass-through.
    format: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    quotas: Quotas | None = None  # the models' own limits; None: not checked
    lease_s: float = 60.0  # how long an admission may hold a place (the budget's hold)
    # Who counts each model's calls in flight and times its answers (balance.py); the
    # call that answered stays counted until the request ends: `ends` gets its end.
    balancer: Balancer = field(default_factory=Balancer)
    ends: list[Callable[[], None]] = field(default_factory=list)
    # Places under a model's own limits asked ahead, with the reservation (admit_ahead): the
    # model's first call takes its place from here instead of asking the store on the
    # call's path. What is left here when the request ends was never used (context.py).
    ahead: dict[str, Admission] = field(default_factory=dict)

    def speaker(self, model: Model) -> Speaker:
        return build.speaking(self.adapters[model.name], self.format, self.headers)


@dataclass
class OpenStream:
    """A stream whose first token exists: it can no longer fall back."""

    model: Model
    head: list[dict[str, Any]]
    rest: AsyncGenerator[dict[str, Any], None]


def _callable(chain: Chain) -> tuple[list[Model], list[Model]]:
    """The chain's usable models, and those of them not cooling down, in order."""
    usable = [m for m in chain.models if not m.unusable]
    return usable, [m for m in usable if not chain.cooldowns.cooling(m.name)]


def _candidates(chain: Chain) -> list[Model]:
    usable, warm = _callable(chain)
    chain.trace.skipped += [f"{m.name}: skipped ({m.unusable})" for m in chain.models
                            if m.unusable]
    if warm:
        chain.trace.skipped += [f"{m.name}: skipped (cooling down)" for m in usable
                                if m not in warm]
    return warm or usable


@dataclass(frozen=True)
class Turn:
    """The time one model of the chain may use: until `until` (loop time)."""

    until: float
    share_s: float | None  # its share of the time left, when models come after it

    def remaining_s(self) -> float:
        return self.until - asyncio.get_running_loop().time()


def _turn(trace: Trace, models_left: int) -> Turn:
    if models_left == 1:
        return Turn(trace.deadline, None)
    share_s = trace.remaining_s() / models_left
    return Turn(asyncio.get_running_loop().time() + share_s, share_s)


def _call_timeout_s(chain: Chain, turn: Turn) -> float:
    remaining = turn.remaining_s()
    if remaining <= 0:
        raise TimeoutError
    return min(chain.settings.timeouts.first_token_s, remaining)


def _timed_out(chain: Chain, turn: Turn, what: str) -> ProviderError:
    limit = chain.settings.timeouts
    if chain.trace.remaining_s() <= 0:
        reason = f"the request's total_s ({limit.total_s:g}s) ran out"
    elif turn.remaining_s() <= 0 and turn.share_s is not None:
        reason = (f"no {what} within its share of the time left ({turn.share_s:.2g}s of "
                  f"total_s {limit.total_s:g}s; the models after it get the rest)")
    else:
        reason = f"no {what} within first_token_s ({limit.first_token_s:g}s)"
    return ProviderError(reason, status=504, kind="transient", timed_out=True)


async def _attempt(chain: Chain, model: Model, call: Callable[[], Awaitable[T]]) -> T:
    """One provider call: recorded, and counted toward the model's cooldown if it failed.
    It is in flight from its start (balance.py): a call that failed ends at once, one that
    answered when its request does (a stream at its end)."""
    started = time.perf_counter()
    end = chain.balancer.started(model.name)
    try:
        result = await call()
    except ProviderError as error:
        end()
        chain.trace.record(model, started, error)
        if error.kind in ("transient", "auth"):
            starts = chain.cooldowns.failed(model.name, chain.settings.cooldown,
                                            at_once=error.kind == "auth")
            if starts:
                chain.trace.cooled.append(model.name)
                log.warning("request %s: model %s cools down for %gs after: %s %s",
                            chain.trace.request_id, model.name, chain.settings.cooldown.for_s,
                            error.status, error.message[:200])
        raise
    except BaseException:
        end()
        raise
    chain.ends.append(end)
    chain.balancer.answered(model.name, time.perf_counter() - started)
    chain.trace.record(model, started, None)
    return result


# One call of one model within its turn.
ModelCall = Callable[[Model, Turn], Awaitable[T]]


class QuotaUsed(Exception):
    """The model's own quota has no room: it is not called."""

    def __init__(self, reason: str, retry_after_s: float):
        super().__init__(reason)
        self.reason, self.retry_after_s = reason, retry_after_s


def first_limited(chain: Chain) -> Model | None:
    """The model the chain will call first (as far as can be told before the call), when
    it has limits of its own whose place can be asked ahead (admit_ahead)."""
    if chain.quotas is None or not any(m.limits for m in chain.models):
        return None
    usable, warm = _callable(chain)
    first = next(iter(warm or usable), None)
    return first if first is not None and first.limits else None


async def admit_ahead(chain: Chain, model: Model) -> None:
    """`model`'s place under its own limits, asked now: a caller that asks it with the
    reservation sends both in one ledger command, and the call waits for no store."""
    with contextlib.suppress(StoreDown):  # the call asks again, and goes ahead if still down
        chain.ahead[model.name] = await _admit(chain, model)


async def _admit(chain: Chain, model: Model) -> Admission:
    assert chain.quotas is not None
    return await chain.quotas.admit(quotas.model_owner(model.name), model.limits,
                                    chain.lease_s)


async def _within_quota(chain: Chain, model: Model) -> None:
    """A place under the model's limits, or QuotaUsed; the store down: the call goes ahead."""
    if chain.quotas is None or not model.limits:
        return
    admission = chain.ahead.pop(model.name, None)
    if admission is None:
        try:
            admission = await _admit(chain, model)
        except StoreDown:
            return
    if not admission.admitted:
        what = quotas.REFUSED_BY[admission.refused_by]
        raise QuotaUsed(f"its {what} quota is used up; room again in "
                        f"{admission.retry_after_s:.1f}s", admission.retry_after_s)


async def _over_chain(chain: Chain, call: ModelCall[T]) -> tuple[Model, T]:
    models = _candidates(chain)
    unsupported: list[Unsupported] = []
    quota_waits: list[float] = []
    for position, model in enumerate(models):
        if chain.trace.remaining_s() <= 0:
            chain.trace.skipped += [f"{m.name}: not tried (the request's total_s ran out)"
                                    for m in models[position:]]
            break
        turn = _turn(chain.trace, len(models) - position)

        async def attempt(model: Model = model, turn: Turn = turn) -> T:
            if chain.gone():  # a provider is paid for answers nobody would read
                raise ClientGone(f"the client left before {model.name} was called")
            await _within_quota(chain, model)  # every call, retries too, takes a place
            return await _attempt(chain, model, lambda: call(model, turn))

        try:
            result = await retries.with_retries(attempt, chain.settings.retry, turn.remaining_s,
                                                retry_timeouts=turn.share_s is None)
        except Unsupported as refused:  # no call was made: the next model may carry it
            unsupported.append(refused)
            chain.trace.skipped.append(f"{model.name}: skipped ({refused.message})")
            continue
        except QuotaUsed as used:
            quota_waits.append(used.retry_after_s)
            chain.trace.skipped.append(f"{model.name}: skipped ({used.reason})")
            continue
        except ProviderError as error:
            if not error.falls_back:
                raise
            continue
        return model, result
    if unsupported and not chain.trace.failures:
        raise unsupported[0]  # what to change so that a model of the chain can take it
    raise ChainFailed(chain.trace.requested, chain.trace.attempts, chain.trace.skipped,
                      chain.trace.failures, quota_waits)


async def _one_answer(chain: Chain, ask: Callable[[Model], Awaitable[dict[str, Any]]],
                      ) -> tuple[Model, dict[str, Any]]:
    async def call(model: Model, turn: Turn) -> dict[str, Any]:
        try:
            async with asyncio.timeout(_call_timeout_s(chain, turn)):
                return await ask(model)
        except TimeoutError as exc:
            raise _timed_out(chain, turn, "answer") from exc

    return await _over_chain(chain, call)


async def complete(chain: Chain, body_for: BodyFor) -> tuple[Model, dict[str, Any]]:
    """An answer, not streamed, in the chain's wire format."""
    return await _one_answer(chain, lambda model: chain.speaker(model).complete(body_for(model)))


async def embed(chain: Chain, body_for: BodyFor) -> tuple[Model, dict[str, Any]]:
    return await _one_answer(chain, lambda model: chain.adapters[model.name].embed(
        body_for(model)))


async def open_stream(chain: Chain, body_for: BodyFor) -> OpenStream:
    has_token = chain.form.has_token

    async def call(model: Model, turn: Turn) -> OpenStream:
        chunks = chain.speaker(model).stream(body_for(model))
        head: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(_call_timeout_s(chain, turn)):
                async for chunk in chunks:
                    head.append(chunk)
                    if has_token(chunk):
                        break
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await chunks.aclose()
            if isinstance(exc, TimeoutError):
                raise _timed_out(chain, turn, "first token") from exc
            raise
        return OpenStream(model, head, chunks)

    _, opened = await _over_chain(chain, call)
    return opened
