"""load_config(): router.yaml -> a validated, frozen Config, or every problem at once.

Each problem reads `router.yaml:LINE: dotted.path: what to fix`. Secrets come
from `${NAME}` / `${NAME:-default}`; a provider whose secret is unset does not
fail the file, it makes that provider's models unusable (reported, skipped).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from gateway import output_limit
from gateway.providers import litellm_data
from gateway.schema import ModelLimitSpec, ModelSpec, ProviderSpec, RouterFile, Settings
from gateway.yamlpos import PositionIndex

CONFIG_ENV = "GATEWAY_CONFIG"  # where `gateway serve` workers find router.yaml
Note = Callable[[tuple[Any, ...], str], None]  # a problem or a warning, at a dotted path
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# Base URLs as each provider documents them; the fast path appends its own endpoint.
DEFAULT_API_BASES = {
    "openai": "https://api.openai.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "anthropic": "https://api.anthropic.com",
    "ollama": "http://localhost:11434",
}
# Providers that cannot answer without an API key (local servers and cloud IAM can).
KEY_REQUIRED = frozenset(
    {"openai", "anthropic", "groq", "azure", "gemini", "mistral", "deepseek", "cohere",
     "together_ai", "fireworks_ai", "openrouter", "xai", "cerebras", "perplexity", "deepinfra"}
)


class ConfigError(Exception):
    """router.yaml cannot be used; `problems` lists every reason."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None  # prompt-cache writes kept 5 minutes
    cache_write_1h_per_mtok: float | None = None  # and kept an hour


@dataclass(frozen=True)
class Provider:
    name: str
    type: str
    api_key: str | None = field(repr=False)  # never in a log line, even by accident
    api_base: str | None
    api_version: str | None
    headers: dict[str, str] = field(repr=False)
    unusable: str | None  # why no model of this provider can be called
    max_response_bytes: int = 32 * 1024 * 1024  # settings.max_response_mb


@dataclass(frozen=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    max_in_flight: int | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.rpm, self.tpm, self.max_in_flight))


NO_LIMITS = Limits()


@dataclass(frozen=True)
class Model:
    name: str
    provider: Provider
    provider_model: str
    price: Price
    max_output_tokens: int | None
    reasoning: bool = False  # it may think before answering, in tokens it may not show
    limits: Limits = NO_LIMITS  # the provider account's quota: past it, the chain moves on

    @property
    def unusable(self) -> str | None:
        return self.provider.unusable


@dataclass(frozen=True)
class Group:
    """A step of a tier whose models are ordered per request (balance.py), then tried in turn."""

    members: tuple[str, ...]
    balance: str  # weighted | least-busy | latency
    weights: dict[str, float] = field(default_factory=dict)  # as configured; others weigh 1

    def weight(self, member: str) -> float:
        return self.weights.get(member, 1.0)


Step = str | Group  # a model's name, or a group of models


@dataclass(frozen=True)
class Downgrade:
    """Past `after_percent` of the key's daily budget, `tier` is served as `to`."""

    tier: str
    to: str
    after_percent: float


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes = field(repr=False)
    daily_budget_usd: float | None
    allow: frozenset[str] | None  # None: every tier and model
    cache_scope: str | None = None  # the group whose keys share cache entries
    limits: Limits = NO_LIMITS
    alert_at_percent: tuple[int, ...] = ()  # sorted, distinct
    downgrade: tuple[Downgrade, ...] = ()

    def may_use(self, requested: str) -> bool:
        return self.allow is None or requested in self.allow


@dataclass(frozen=True)
class Config:
    path: Path
    sha256: str  # of the file's bytes: a reload of the same bytes changes nothing
    providers: dict[str, Provider]
    models: dict[str, Model]
    tiers: dict[str, tuple[str, ...]]  # each tier's models as configured, groups flattened
    keys: tuple[ApiKey, ...]
    settings: Settings
    notes: tuple[str, ...] = field(default=())  # located warnings of the file, e.g. a default taken
    # Each tier's steps as configured (a model, or a group); a tier of plain models is absent.
    groups: dict[str, tuple[Step, ...]] = field(default_factory=dict)

    @property
    def warnings(self) -> tuple[str, ...]:
        """Everything worth a warning at start-up and reload: unusable models, then notes."""
        unusable = tuple(f"model '{m.name}' is unusable: {m.unusable}"
                         for m in self.models.values() if m.unusable)
        return unusable + self.notes

    def chain(self, requested: str) -> tuple[Model, ...] | None:
        """The ordered models behind a tier or model name; None when neither exists."""
        if requested in self.tiers:
            return tuple(self.models[name] for name in self.tiers[requested])
        if requested in self.models:
            return (self.models[requested],)
        return None

    def names(self) -> list[str]:
        return [*self.tiers, *self.models]

    def resolve_path(self, value: str) -> Path:
        """Relative paths in settings are relative to router.yaml's directory."""
        path = Path(value)
        return path if path.is_absolute() else self.path.parent / path


def load_config(path: str | os.PathLike[str], environ: dict[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    return parse_config(data, path, environ)


def parse_config(data: bytes, path: Path, environ: dict[str, str] | None = None) -> Config:
    """`data` is router.yaml's content, read once; `path` places it (relative paths, messages)."""
    env = os.environ if environ is None else environ
    label = path.name
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{label}: not UTF-8 text (byte {exc.start})"]) from exc
    try:
        positions = PositionIndex(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{label}:{mark.line + 1}" if mark else label
        raise ConfigError([f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from exc
    if not isinstance(raw, dict):
        raise ConfigError([f"{label}: must be a mapping with providers, models, tiers, keys"])

    problems = [f"{label}:{line}: {msg}" for line, msg in positions.duplicates]
    notes: list[str] = []  # what serves, but maybe not as the operator thinks

    def located(loc: tuple[Any, ...], message: str) -> str:
        line = positions.line(loc)
        where = f"{label}:{line}" if line else label
        return f"{where}: {dotted(loc)}: {message}"

    def report(loc: tuple[Any, ...], message: str) -> None:
        problems.append(located(loc, message))

    def warn(loc: tuple[Any, ...], message: str) -> None:
        notes.append(located(loc, message))

    missing_secrets: dict[str, str] = {}
    resolved = _substitute(raw, (), env, missing_secrets, report)
    spec: RouterFile | None = None
    try:
        spec = RouterFile.model_validate(resolved)
    except ValidationError as exc:
        for err in exc.errors():
            report(_untagged(tuple(err["loc"])), _explain(err))
    _check_references(resolved, report)
    settings = spec.settings if spec is not None else Settings()
    providers, models = _compile_models(resolved, missing_secrets, settings, report, warn)
    if problems or spec is None:
        raise ConfigError(problems)
    keys = tuple(
        ApiKey(
            name=k.name,
            digest=bytes.fromhex(k.key_sha256),
            daily_budget_usd=k.daily_budget_usd,
            allow=frozenset(k.allow) if k.allow is not None else None,
            cache_scope=k.cache_scope,
            limits=_limits(k.limits),
            alert_at_percent=tuple(sorted(set(k.alert_at_percent))),
            downgrade=tuple(Downgrade(d.tier, d.to, d.after_percent) for d in k.downgrade),
        )
        for k in spec.keys
    )
    steps = {tier: tuple(s if isinstance(s, str) else Group(s.group, s.balance, dict(s.weights))
                         for s in chain) for tier, chain in spec.tiers.items()}
    tiers = {tier: tuple(m for s in chain for m in ((s,) if isinstance(s, str) else s.members))
             for tier, chain in steps.items()}
    groups = {tier: chain for tier, chain in steps.items()
              if any(isinstance(s, Group) for s in chain)}
    return Config(path=path.resolve(), sha256=hashlib.sha256(data).hexdigest(),
                  providers=providers, models=models, tiers=tiers, keys=keys,
                  settings=spec.settings, notes=tuple(notes), groups=groups)


def dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _untagged(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """A tier step's path without the schema's tag for its kind (`model` or `group`)."""
    if len(loc) >= 4 and loc[0] == "tiers" and isinstance(loc[2], int):
        return (*loc[:3], *loc[4:])
    return loc


def _explain(err: ErrorDetails) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field; check its spelling against the README's router.yaml reference"
    if kind == "missing":
        return "required field is missing"
    if kind == "string_pattern_mismatch" and err["loc"][-1] == "key_sha256":
        return "must be 64 lowercase hex characters (`gateway keys new` prints it)"
    return str(err["msg"]).replace("Input should be", "should be").replace("Value error, ", "")


def _substitute(value: Any, loc: tuple[Any, ...], env: Mapping[str, str],
                missing: dict[str, str], report: Note) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, (*loc, k), env, missing, report) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, (*loc, i), env, missing, report) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        if len(loc) >= 2 and loc[0] == "providers":
            missing.setdefault(str(loc[1]), name)
        else:
            report(loc, f"environment variable {name} is not set (write ${{{name}:-default}} "
                        "to give a default)")
        return ""

    return ENV_REF.sub(replace, value)


def _check_references(raw: dict[str, Any], report: Note) -> None:
    """Cross-field rules, checked on the raw data so they add to schema problems."""
    providers, models, tiers = (_section(raw, s) for s in ("providers", "models", "tiers"))
    for name, model in models.items():
        provider = model.get("provider") if isinstance(model, dict) else None
        if isinstance(provider, str) and provider not in providers:
            report(("models", name, "provider"),
                   f"unknown provider '{provider}'; add it under providers:")
    for tier, chain in tiers.items():
        if tier in models:
            report(("tiers", tier), f"'{tier}' is also a model name; rename the tier or the model")
        _check_steps(tier, chain if isinstance(chain, list) else [], models, tiers, report)
    listed = raw.get("keys")
    keys = listed if isinstance(listed, list) else []
    seen_names: set[str] = set()
    seen_digests: set[str] = set()
    for i, key in enumerate(keys):
        if not isinstance(key, dict):
            continue
        # Only text is compared: a missing name or one of another type (unhashable, even)
        # is the schema's problem, reported already.
        key_name, digest = key.get("name"), key.get("key_sha256")
        if isinstance(key_name, str):
            if key_name in seen_names:
                report(("keys", i, "name"), f"duplicate key name '{key_name}'")
            seen_names.add(key_name)
        if isinstance(digest, str):
            if digest in seen_digests:
                report(("keys", i, "key_sha256"), "the same key is listed twice")
            seen_digests.add(digest)
        if key.get("alert_at_percent") and key.get("daily_budget_usd") is None:
            report(("keys", i, "alert_at_percent"),
                   "alerts are shares of daily_budget_usd, which this key does not set")
        allow = key.get("allow")
        for j, entry in enumerate(allow if isinstance(allow, list) else []):
            if isinstance(entry, str) and entry not in tiers and entry not in models:
                report(("keys", i, "allow", j), f"unknown tier or model '{entry}'")
        _check_downgrades(i, key, tiers, models, report)
    settings = _section(raw, "settings")
    if not keys and settings.get("allow_anonymous") is not True:
        report(("keys",), "no keys are configured: add one (`gateway keys new --name NAME` prints "
                          "it), or set settings.allow_anonymous: true to serve without keys")


def _unknown_model(name: str, tiers: dict[str, Any]) -> str:
    hint = "tiers list models, not other tiers" if name in tiers else "add it under models:"
    return f"unknown model '{name}'; {hint}"


def _check_steps(tier: str, chain: list[Any], models: dict[str, Any], tiers: dict[str, Any],
                 report: Note) -> None:
    """A tier's steps: known models; a group's members once in the tier, its weights theirs.
    A model listed twice as plain steps is allowed, as it always was (tried twice); a group
    member named anywhere else in its tier is not: the group's order would be undone."""
    plain = [e for e in chain if isinstance(e, str)]
    placed: dict[str, int] = {}  # group member -> the step that holds it
    for i, entry in enumerate(chain):
        if isinstance(entry, str) and entry not in models:
            report(("tiers", tier, i), _unknown_model(entry, tiers))
        if not isinstance(entry, dict) or not isinstance(entry.get("group"), list):
            continue
        members = entry["group"]
        for j, member in enumerate(members):
            if not isinstance(member, str):
                continue
            if member not in models:
                report(("tiers", tier, i, "group", j), _unknown_model(member, tiers))
            elif member in members[:j]:
                report(("tiers", tier, i, "group", j), f"'{member}' is listed twice in the group")
            elif member in placed or member in plain:
                where = f"step {placed[member]}" if member in placed else "a step of its own"
                report(("tiers", tier, i, "group", j),
                       f"'{member}' is also in {where} of tier {tier}; a model is in one step")
            placed.setdefault(member, i)
        weights = entry.get("weights")
        if isinstance(weights, dict) and weights:
            if entry.get("balance", "weighted") != "weighted":
                report(("tiers", tier, i, "weights"),
                       "weights are for balance: weighted only; remove them or the balance")
            for name in weights:
                if name not in members:
                    report(("tiers", tier, i, "weights", name),
                           f"'{name}' is not a member of this group")


def _check_downgrades(i: int, key: dict[str, Any], tiers: dict[str, Any],
                      models: dict[str, Any], report: Note) -> None:
    """A downgrade needs a budget to be a share of, a tier the key may use, and a target
    that exists (which the key need not be allowed: the operator chose it)."""
    listed = key.get("downgrade")
    rules = listed if isinstance(listed, list) else []
    if rules and key.get("daily_budget_usd") is None:
        report(("keys", i, "downgrade"), "a downgrade is a share of the daily budget: set "
                                         "daily_budget_usd")
    allow = key.get("allow")
    seen: set[str] = set()
    for j, rule in enumerate(rules):
        if not isinstance(rule, dict):
            continue
        tier, to = rule.get("tier"), rule.get("to")
        for field_name, name in (("tier", tier), ("to", to)):
            if isinstance(name, str) and name not in tiers and name not in models:
                report(("keys", i, "downgrade", j, field_name), f"unknown tier or model '{name}'")
        if not isinstance(tier, str):
            continue
        if isinstance(allow, list) and tier not in allow:
            report(("keys", i, "downgrade", j, "tier"),
                   f"the key may not use '{tier}' (it is not in its allow list)")
        if tier == to:
            report(("keys", i, "downgrade", j, "to"), "is the tier itself")
        if tier in seen:
            report(("keys", i, "downgrade", j, "tier"), f"'{tier}' is downgraded twice")
        seen.add(tier)


def _compile_models(raw: dict[str, Any], missing: dict[str, str], settings: Settings,
                    report: Note, warn: Note,
                    ) -> tuple[dict[str, Provider], dict[str, Model]]:
    """Providers and models, entry by entry, so one bad entry does not hide another's problem."""
    known_types = litellm_data.known_provider_types()
    providers: dict[str, Provider] = {}
    for name, entry in _section(raw, "providers").items():
        try:
            p = ProviderSpec.model_validate(entry or {})
        except ValidationError:
            continue  # reported by the whole-file validation
        ptype = p.type or name
        if ptype not in known_types:
            hint = "" if p.type else " (the entry's name is its type unless `type:` is set)"
            report(("providers", name, "type"), f"unknown provider type '{ptype}'{hint}")
        providers[name] = _provider(name, ptype, p, missing.get(name), settings)
    models: dict[str, Model] = {}
    for name, entry in _section(raw, "models").items():
        try:
            m = ModelSpec.model_validate(entry)
        except ValidationError:
            continue
        provider = providers.get(m.provider)
        if provider is not None:
            model = _model(name, m, provider, report, warn)
            if model is not None:
                models[name] = model
    return providers, models


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name)
    return value if isinstance(value, dict) else {}


def _provider(name: str, ptype: str, p: ProviderSpec, missing_var: str | None,
              settings: Settings) -> Provider:
    api_base = (p.api_base or DEFAULT_API_BASES.get(ptype) or "").rstrip("/") or None
    if ptype in ("ollama", "anthropic") and api_base and api_base.endswith("/v1"):
        api_base = api_base[: -len("/v1")]  # both are documented without /v1
    unusable = None
    if missing_var:
        unusable = f"environment variable {missing_var} is not set (providers.{name})"
    elif not p.api_key and ptype in KEY_REQUIRED and (p.api_base is None or ptype != "openai"):
        unusable = f"providers.{name} has no api_key"
    return Provider(name=name, type=ptype, api_key=p.api_key or None, api_base=api_base,
                    api_version=p.api_version, headers=dict(p.headers), unusable=unusable,
                    max_response_bytes=int(settings.max_response_mb * 1024 * 1024))


def _model(name: str, m: ModelSpec, provider: Provider, report: Note, warn: Note,
           ) -> Model | None:
    listed = litellm_data.lookup(provider.type, m.model)
    if m.price is not None:
        given = m.price
        price = Price(given.input_per_mtok, given.output_per_mtok, given.cached_input_per_mtok,
                      given.cache_write_per_mtok, given.cache_write_1h_per_mtok)
    elif listed and listed.input_per_mtok is not None and listed.output_per_mtok is not None:
        price = Price(listed.input_per_mtok, listed.output_per_mtok, listed.cached_input_per_mtok,
                      listed.cache_write_per_mtok, listed.cache_write_1h_per_mtok)
    else:
        report(("models", name, "price"),
               f"litellm's price map has no price for {provider.type}/{m.model}; set "
               "price: {input_per_mtok: ..., output_per_mtok: ...} (USD per million tokens)")
        return None
    max_output = m.max_output_tokens or (listed.max_output_tokens if listed else None)
    if max_output is None and provider.type == "anthropic":
        # Anthropic needs max_tokens on every call. Not a refusal: a litellm upgrade that
        # drops an older id from its map must not stop a start or a reload.
        max_output = output_limit.ANTHROPIC_DEFAULT_OUTPUT_LIMIT
        warn(("models", name, "max_output_tokens"),
             f"litellm's price map does not know the output limit of {provider.type}/"
             f"{m.model}; sent max_tokens {max_output} when a client sets none, and no answer "
             f"is longer (every Claude model accepts it); set max_output_tokens to the "
             "model's own limit to allow longer answers")
    reasoning = bool(listed and listed.reasoning) or m.model.lower().startswith(
        output_limit.COMPLETION_TOKENS_ONLY)
    return Model(name=name, provider=provider, provider_model=m.model, price=price,
                 max_output_tokens=max_output, reasoning=reasoning, limits=_limits(m.limits))


def _limits(spec: ModelLimitSpec) -> Limits:
    return Limits(spec.rpm, spec.tpm, getattr(spec, "max_in_flight", None))


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()
