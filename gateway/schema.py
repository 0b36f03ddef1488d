"""The router.yaml schema, as written by operators: frozen, and strict about unknown fields."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Tag,
)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PriceSpec(Frozen):
    input_per_mtok: NonNegativeFloat
    output_per_mtok: NonNegativeFloat
    cached_input_per_mtok: NonNegativeFloat | None = None
    cache_write_per_mtok: NonNegativeFloat | None = None  # default: 1.25 x input
    cache_write_1h_per_mtok: NonNegativeFloat | None = None  # default: 2 x input


class ProviderSpec(Frozen):
    type: str | None = None
    api_key: str | None = None
    api_base: str | None = None
    api_version: str | None = None
    headers: dict[str, str] = {}


class ModelLimitSpec(Frozen):
    """A model's (a provider account's) quota, held across every process and replica."""

    rpm: PositiveInt | None = None  # requests per minute
    tpm: PositiveInt | None = None  # tokens per minute, input and output, by real usage


class LimitSpec(ModelLimitSpec):
    """A key's rate limits (money/quotas.py)."""

    max_in_flight: PositiveInt | None = None  # requests being answered at once


class ModelSpec(Frozen):
    provider: str
    model: str = Field(min_length=1)
    price: PriceSpec | None = None
    max_output_tokens: PositiveInt | None = None
    limits: ModelLimitSpec = ModelLimitSpec()  # the provider account's quota for this model


class DowngradeSpec(Frozen):
    """Past `after_percent` of its daily budget, a key's requests for `tier` are served by `to`."""

    tier: str = Field(min_length=1)
    to: str = Field(min_length=1)
    after_percent: Annotated[float, Field(gt=0, le=100)]


class KeySpec(Frozen):
    name: str = Field(min_length=1)
    key_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    daily_budget_usd: NonNegativeFloat | None = None
    allow: tuple[str, ...] | None = None
    cache_scope: str | None = Field(default=None, min_length=1)  # a group: its keys share entries
    limits: LimitSpec = LimitSpec()
    # Shares of daily_budget_usd, in percent, whose crossing sends an alert (settings.alerts).
    alert_at_percent: tuple[Annotated[int, Field(ge=1, le=100)], ...] = ()
    downgrade: tuple[DowngradeSpec, ...] = ()


class CacheSettings(Frozen):
    enabled: bool = True
    ttl_s: PositiveInt = 86400
    scope: Literal["key", "shared"] = "key"  # for the keys that name no cache_scope


class BudgetSettings(Frozen):
    on_store_error: Literal["refuse", "allow"] = "refuse"
    # Output reserved up front, and added each time a streaming answer nears it.
    output_slice_tokens: Annotated[int, Field(ge=16, le=1_000_000)] = 4096
    # A request that would fit but for what requests in flight hold waits this long for
    # them, before it is refused (or, mid-answer, ended) on what is left.
    wait_s: NonNegativeFloat = 5


class RetrySettings(Frozen):
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    initial_backoff_s: NonNegativeFloat = 0.25
    max_backoff_s: NonNegativeFloat = 8


class TimeoutSettings(Frozen):
    connect_s: PositiveFloat = 5
    first_token_s: PositiveFloat = 60
    total_s: PositiveFloat = 600
    read_body_s: PositiveFloat = 60  # a client's whole request body, once its headers are in
    read_head_s: PositiveFloat = 10  # a request's line and headers, from its first byte
    idle_s: PositiveFloat = 5  # a connection with no request in flight, after an answer


class OverloadSettings(Frozen):
    """Load shedding, per worker process (see overload.py)."""

    max_in_flight: PositiveInt = 512  # requests being served, streams included
    max_delay_ms: NonNegativeFloat = 1000  # the event loop's delay; 0: not watched
    retry_after_s: PositiveFloat = 1


class CooldownSettings(Frozen):
    after_failures: PositiveInt = 3
    window_s: PositiveFloat = 60
    for_s: NonNegativeFloat = 30


class AlertSettings(Frozen):
    """Where budget alerts (keys[].alert_at_percent) go, besides the log and the metrics."""

    webhook_url: str = ""  # empty: a log line and a metric only
    timeout_s: PositiveFloat = 5  # per delivery attempt
    attempts: Annotated[int, Field(ge=1, le=20)] = 5  # with backoff 1 s, 2 s, 4 s, ... 30 s


class ResponsesSettings(Frozen):
    # How long a stored response (POST /v1/responses without store: false) can be read and
    # continued with previous_response_id; OpenAI keeps its own for 30 days.
    ttl_s: PositiveInt = 30 * 86400


class Settings(Frozen):
    redis_url: str = ""
    cache: CacheSettings = CacheSettings()
    responses: ResponsesSettings = ResponsesSettings()
    budgets: BudgetSettings = BudgetSettings()
    retry: RetrySettings = RetrySettings()
    timeouts: TimeoutSettings = TimeoutSettings()
    max_body_mb: PositiveFloat = 10
    # A provider's answer (a plain body, or a whole stream, or any one line of it) past this
    # is the provider's failure: memory stays bounded whatever an upstream sends.
    max_response_mb: PositiveFloat = 32
    data_dir: str = "./.gateway"
    cooldown: CooldownSettings = CooldownSettings()
    alerts: AlertSettings = AlertSettings()
    overload: OverloadSettings = OverloadSettings()
    usage_log: str = "./logs/usage.jsonl"  # empty: no usage log
    usage_log_max_mb: PositiveFloat = 100
    usage_log_keep: Annotated[int, Field(ge=0, le=1000)] = 5
    master_key: str = ""
    allow_anonymous: bool = False
    log_content: bool = False
    watch_config: bool = True  # false: edits apply on SIGHUP or POST /admin/reload only


Balance = Literal["weighted", "least-busy", "latency"]


class GroupSpec(Frozen):
    """One step of a tier's chain: models taken in an order drawn per request."""

    group: Annotated[tuple[str, ...], Field(min_length=1)]
    balance: Balance = "weighted"
    weights: dict[str, PositiveFloat] = {}  # weighted only; a member not named weighs 1


def _step_kind(value: object) -> str:
    return "group" if isinstance(value, dict) else "model"


# A step of a tier: a model's name, or a group. Tagged, so that a group's problems are
# reported at its own fields (config.py drops the tag from the dotted path).
Step = Annotated[Annotated[str, Tag("model")] | Annotated[GroupSpec, Tag("group")],
                 Discriminator(_step_kind)]


class RouterFile(Frozen):
    providers: dict[str, ProviderSpec]
    models: dict[str, ModelSpec]
    tiers: dict[str, Annotated[tuple[Step, ...], Field(min_length=1)]] = {}
    keys: tuple[KeySpec, ...] = ()
    settings: Settings = Settings()
