"""Retries of one model's call: transient failures only, with backoff, jitter and Retry-After.

The only tenacity import. A retry happens when the failure is transient (429,
5xx, 529, a connection error, a timeout), attempts remain (`max_retries`), the
provider's `Retry-After` is no longer than `max_backoff_s`, and the wait still
fits in the model's turn of the request's deadline; otherwise the error goes to
the fallback loop. A timed-out call is retried only when `retry_timeouts` says so
(on the chain's last model: see fallbacks.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from gateway.errors import ProviderError
from gateway.schema import RetrySettings

T = TypeVar("T")


def _failure(state: RetryCallState) -> ProviderError | None:
    exc = state.outcome.exception() if state.outcome else None
    return exc if isinstance(exc, ProviderError) else None


async def with_retries(call: Callable[[], Awaitable[T]], policy: RetrySettings,
                       remaining_s: Callable[[], float], retry_timeouts: bool = True) -> T:
    def retryable(exc: BaseException) -> bool:
        return (isinstance(exc, ProviderError) and exc.is_retryable
                and (retry_timeouts or not exc.timed_out))

    def wait(state: RetryCallState) -> float:
        """Retry-After when the provider gives one, else exponential backoff with jitter."""
        failure = _failure(state)
        if failure is not None and failure.retry_after_s is not None:
            return failure.retry_after_s
        return float(exponential(state))

    def stop(state: RetryCallState) -> bool:
        # tenacity computes the wait before asking whether to stop: upcoming_sleep is it.
        failure = _failure(state)
        if state.attempt_number > policy.max_retries:
            return True
        if failure is not None and (failure.retry_after_s or 0) > policy.max_backoff_s:
            return True  # the provider asks for longer than we wait: fall back now
        return state.upcoming_sleep >= remaining_s()

    try:
        return await call()  # most calls succeed: they need none of tenacity's bookkeeping
    except ProviderError as exc:
        if not retryable(exc) or policy.max_retries == 0:
            raise
        first_failure = exc

    replayed = False
    exponential = wait_exponential_jitter(initial=policy.initial_backoff_s,
                                          max=policy.max_backoff_s,
                                          jitter=policy.initial_backoff_s)

    async def again() -> T:
        """Attempt 1 is the failure above, replayed, so tenacity counts and waits as ever."""
        nonlocal replayed
        if not replayed:
            replayed = True
            raise first_failure
        return await call()

    retrying = AsyncRetrying(retry=retry_if_exception(retryable), stop=stop, wait=wait,
                             reraise=True)
    return await retrying(again)
