"""The error tree: each class fixes its HTTP status and its OpenAI error type and code.

Errors are data here; the caller's surface (surfaces/) renders them in its dialect.

    GatewayError                      anything refused or failed
    ├── InvalidRequest       400      the client's body or parameters
    │   └── Unsupported      400      ... that one model of the chain cannot carry
    ├── Unauthorized         401      missing or unknown key
    ├── Forbidden            403      tier or model not allowed for the key
    ├── NotFound             404      unknown tier, model or path
    ├── MethodNotAllowed     405
    ├── RequestTimeout       408      the body did not arrive within timeouts.read_body_s
    ├── PayloadTooLarge      413      body over settings.max_body_mb
    ├── HeadersTooLarge      431      request headers over 32 KB
    ├── BudgetExceeded       429      the key's daily budget cannot pay for the request
    ├── RateLimited          429      the key's rate limit: worth retrying after Retry-After
    ├── NotReady             503      no usable configuration or store
    ├── Overloaded           503      shed: see overload.py
    ├── ClientGone           499      the client left before a provider was called
    ├── ProviderError        (the provider's status)  one failed provider call
    └── ChainFailed          502/504  every model of the chain failed

A ProviderError knows what the chain should do next (`kind`), decided from the
status and the provider's structured error code, never from message text. Its
message is ours (`provider_reason`): a provider's own text may quote the
operator's key or account, so it reaches no tenant and no log, except where the
provider refused the request itself (kind "client"): then the client needs it
to fix the request, and gets it bounded, with anything like a credential masked.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

ProviderErrorKind = Literal["transient", "auth", "overflow", "client"]

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})


class GatewayError(Exception):
    status: int = 500
    type: str = "api_error"
    code: str | None = None
    param: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        if param is not None:
            self.param = param
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class Unsupported(InvalidRequest):
    """One model of the chain cannot carry the request (a translation has no way to say it):
    the chain skips that model; the request is refused with this only if no model can."""


class Unauthorized(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class ResponseNotFound(GatewayError):
    """A stored response this key does not have (never made, expired, deleted, another's)."""

    status = 404
    type = "invalid_request_error"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class UpgradeRequired(GatewayError):
    status = 426
    type = "invalid_request_error"
    code = "upgrade_not_supported"


class RequestTimeout(GatewayError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class HeadersTooLarge(GatewayError):
    status = 431
    type = "invalid_request_error"
    code = "headers_too_large"


class BudgetExceeded(GatewayError):
    """Retrying cannot help before the budget resets, so SDKs are told not to."""

    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"

    def headers(self) -> dict[str, str]:
        return {"x-should-retry": "false"}


class RateLimited(GatewayError):
    """A key's rate limit (money/quotas.py): the SDKs retry it after Retry-After."""

    status = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, type: str, retry_after_s: float,
                 limit_headers: dict[str, str]):
        super().__init__(message)
        self.type = type  # OpenAI's: "requests" or "tokens"
        self.retry_after_s = retry_after_s
        self.limit_headers = limit_headers

    def headers(self) -> dict[str, str]:
        return {**self.limit_headers, "retry-after": str(max(1, math.ceil(self.retry_after_s))),
                "retry-after-ms": str(max(1, round(self.retry_after_s * 1000))),
                "x-should-retry": "true"}


class NotReady(GatewayError):
    status = 503
    type = "api_error"
    code = "not_ready"


class ClientGone(GatewayError):
    """Nobody is waiting for the answer: no provider is called for it (nginx's 499)."""

    status = 499
    type = "invalid_request_error"
    code = "client_closed_request"


class ProviderError(GatewayError):
    """One provider call that failed; `kind` says whether the chain may go on."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        kind: ProviderErrorKind,
        type: str = "api_error",
        code: str | None = None,
        param: str | None = None,
        retry_after_s: float | None = None,
        timed_out: bool = False,
    ):
        super().__init__(message, param=param, code=code)
        self.status = status
        self.kind = kind
        self.type = type
        self.retry_after_s = retry_after_s
        self.timed_out = timed_out

    @property
    def falls_back(self) -> bool:
        """Whether the next model of the chain should be tried."""
        return self.kind != "client"

    @property
    def is_retryable(self) -> bool:
        return self.kind == "transient"


# A provider's `type` or `code` is passed on only when it is an identifier.
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")
# Tokens that look like credentials: sk-..., key-..., Bearer ..., long runs of key characters.
_CREDENTIAL = re.compile(r"(?i)\b(?:bearer\s+\S+|AIza[\w-]{10,}"
                         r"|(?:sk|pk|rk|gsk|xai|key|api[-_]?key)[-_][\w*.-]{4,})|[\w*+/=-]{32,}")
CLIENT_TEXT_CHARS = 300


def identifier(value: Any) -> str | None:
    return value if isinstance(value, str) and _IDENTIFIER.fullmatch(value) else None


REFUSED = "the provider refused the request"
_QUOTED = re.compile(re.escape(REFUSED) + r"( \([^)]*\))?: .*", re.S)


def without_provider_text(message: str | None) -> str | None:
    """A failure's reason without the provider's own words, which may quote the prompt (a 400
    naming the invalid value): what the usage log keeps unless settings.log_content."""
    if message is None:
        return None
    quoted = _QUOTED.fullmatch(message)
    return f"{REFUSED}{quoted.group(1) or ''}" if quoted else message


def provider_reason(status: int, kind: ProviderErrorKind, etype: Any = None,
                    code: Any = None, text: Any = None) -> str:
    """What a tenant and the logs are told of a provider's error: a reason of ours, with the
    provider's type and code when they are identifiers; for a refusal of the request itself,
    the provider's text too, bounded and with credentials masked."""
    tags = ", ".join(t for t in (identifier(etype), identifier(code)) if t)
    tags = f" ({tags})" if tags else ""
    if kind == "client" and isinstance(text, str) and text:
        told = _CREDENTIAL.sub("[redacted]", " ".join(text.split()))
        if len(told) > CLIENT_TEXT_CHARS:
            told = told[:CLIENT_TEXT_CHARS] + "..."
        return f"{REFUSED}{tags}: {told}"
    if kind == "auth":
        return f"the provider refused the gateway's credentials for this model{tags}"
    if kind == "overflow":
        return f"the request is longer than the model's context window{tags}"
    if kind == "client":
        return f"the provider refused the request{tags}"
    if status == 429:
        return f"rate-limited by the provider{tags}"
    return f"the provider failed{tags}"


def kind_for_status(status: int) -> ProviderErrorKind:
    if status in (401, 403):
        return "auth"
    if status in TRANSIENT_STATUSES or status >= 500:
        return "transient"
    return "client"


@dataclass(frozen=True)
class Attempt:
    """One provider call of a request, as the usage log and error messages list it."""

    model: str
    status: int | None
    error: str | None
    latency_ms: float

    def describe(self) -> str:
        status = self.status if self.status is not None else "-"
        return f"{self.model}: {status} {self.error or 'ok'}"


class ChainFailed(GatewayError):
    """Every model of the chain failed or was skipped.

    504 when every call timed out, 429 when every call was rate-limited or every model's
    own quota (models.X.limits) was used up, else 502.
    The gateway has already retried and fallen back, so it tells SDKs not to
    retry on top (`x-should-retry: false`): that stacking is how one request
    becomes (1+N)^2 upstream calls.
    """

    type = "api_error"
    code = "all_models_failed"

    def __init__(self, requested: str, attempts: list[Attempt], skipped: list[str],
                 failures: list[ProviderError], quota_waits: list[float] | None = None):
        parts = [a.describe() for a in attempts] + skipped
        detail = "; ".join(parts) if parts else "no model to try"
        super().__init__(f"every model for '{requested}' failed: {detail}")
        self.attempts = attempts
        self.retry_after_s: float | None = None
        self.quota_only = False  # no model was called: worth a retry once a quota frees
        if failures and all(f.timed_out for f in failures):
            self.status = 504
        elif failures and all(f.status == 429 for f in failures):
            self.status, self.type, self.code = 429, "rate_limit_error", "rate_limited"
            waits = [f.retry_after_s for f in failures if f.retry_after_s is not None]
            self.retry_after_s = min(waits) if waits else None
        elif not failures and quota_waits:  # no call made: each model's quota was used up
            self.status, self.type, self.code = 429, "rate_limit_error", "rate_limited"
            self.retry_after_s, self.quota_only = min(quota_waits), True
        else:
            self.status = 502

    def headers(self) -> dict[str, str]:
        headers = {"x-should-retry": "true" if self.quota_only else "false"}
        if self.retry_after_s is not None:
            headers["retry-after"] = str(max(1, round(self.retry_after_s)))
        return headers
