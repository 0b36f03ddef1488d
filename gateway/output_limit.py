"""A chat request's output limit: which one holds, and the field each model takes it in. Pure.

A body may carry `max_tokens`, `max_completion_tokens` or both. Providers that
know both honour `max_completion_tokens` (OpenAI deprecated `max_tokens`; vLLM
and Groq read it first), and the Anthropic translation does the same, so that
is the limit; whenever the gateway sends a limit it writes the same number into
every field the body carries, so no provider can read a larger one than the
budget paid for. OpenAI's reasoning models (o-series, gpt-5) refuse
`max_tokens` and take only `max_completion_tokens`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # config reads COMPLETION_TOKENS_ONLY; the type is all this needs of it
    from gateway.config import Model

FIELDS = ("max_completion_tokens", "max_tokens")  # the first one given is the limit
# The output limit of a Claude model whose limit neither router.yaml nor litellm's map
# gives (the map drops older ids as it moves on). Anthropic refuses a call without
# max_tokens, and one above the model's limit; every Claude model accepts 4096 (the
# Claude 3 models allow no more), so the default never turns a call into a 400.
ANTHROPIC_DEFAULT_OUTPUT_LIMIT = 4096
# OpenAI models that answer 400 to `max_tokens`.
COMPLETION_TOKENS_ONLY = ("o1", "o3", "o4", "gpt-5")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def asked(body: dict[str, Any]) -> int | None:
    """The limit the client set, as the provider will read it; None when it set none."""
    for name in FIELDS:
        if (value := _int(body.get(name))) is not None:
            return value
    return None


def takes_completion_tokens_only(model: Model) -> bool:
    return (model.provider.type in ("openai", "azure")
            and model.provider_model.lower().startswith(COMPLETION_TOKENS_ONLY))


def with_limit(body: dict[str, Any], model: Model, tokens: int | None) -> dict[str, Any]:
    """The body as `model` is sent it: `tokens` (or the client's own limit, when None) in
    the field(s) that model reads. Returns `body` itself when nothing changes."""
    limit = asked(body) if tokens is None else tokens
    if limit is None:
        return body
    if takes_completion_tokens_only(model):
        if "max_tokens" not in body and body.get("max_completion_tokens") == limit:
            return body
        out = {k: v for k, v in body.items() if k != "max_tokens"}
        out["max_completion_tokens"] = limit
        return out
    named = [name for name in FIELDS if name in body] or ["max_tokens"]
    if all(body.get(name) == limit for name in named):
        return body
    return {**body, **dict.fromkeys(named, limit)}
