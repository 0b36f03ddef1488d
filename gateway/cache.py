"""The exact-match response cache: which requests share an answer, and reading and writing it.

The key is the SHA-256 of canonical JSON (sorted keys, no whitespace) of the
kind of request, the requested tier or model name, the chain behind it as
configured (so a rerouted tier never serves another model's answers), and the
request's fields. Every field of the OpenAI API is classified below as
changing the answer or not, and a test fails when the SDK gains a field nobody
classified. A field the gateway does not know (a provider's own parameter,
such as Ollama's `num_ctx` or `top_k`) is in the key: an unknown field can cost
a miss, never a wrong answer.

Never in the key: `stream` and `stream_options` (a hit is replayed either way),
`user`, metadata and other bookkeeping.

Which keys share an entry is the cache scope, hashed into the store key with
the request's digest: a key's own scope (by its name, never its secret), a
group (`keys[].cache_scope`) or the shared scope (`settings.cache.scope:
shared`, for keys in no group). A key reads its own scope first, then its
group or the shared one. An entry that several keys read is written once,
where there is none, and never overwritten: so `Cache-Control: no-cache`, a
refresh, writes only the caller's own scope, and no key can re-roll the answer
another key is given.

The store failing is never an outage: a lookup that fails is a miss and a
write that fails is skipped (store.py logs the outage once).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from gateway import store as store_keys
from gateway.auth import ANONYMOUS
from gateway.config import ApiKey, Model
from gateway.request import Kind
from gateway.schema import CacheSettings
from gateway.store import Store, StoreDown

State = Literal["hit", "miss", "bypass", "off"]  # the x-gateway-cache header

CHAT_ANSWER_FIELDS = frozenset({
    "messages", "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call",
    "response_format", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop",
    "seed", "n", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
    "top_logprobs", "reasoning_effort", "verbosity", "modalities", "audio", "prediction",
    "web_search_options", "moderation",
})
CHAT_BOOKKEEPING_FIELDS = frozenset({
    "model",  # the requested name is in the key on its own
    "stream", "stream_options", "user", "metadata", "store", "safety_identifier",
    "service_tier", "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention",
})
EMBEDDINGS_ANSWER_FIELDS = frozenset({"input", "dimensions", "encoding_format"})
EMBEDDINGS_BOOKKEEPING_FIELDS = frozenset({"model", "user"})
# Anthropic's Messages API (its beta fields included). The anthropic-beta header is in the
# key too: a beta may change the answer (context management, longer outputs).
MESSAGES_ANSWER_FIELDS = frozenset({
    "messages", "system", "max_tokens", "tools", "tool_choice", "thinking", "stop_sequences",
    "temperature", "top_p", "top_k", "output_config", "container", "mcp_servers",
    "context_management", "compaction", "fallbacks", "thread",
})
MESSAGES_BOOKKEEPING_FIELDS = frozenset({
    "model", "stream", "metadata", "service_tier", "speed", "inference_geo", "diagnostics",
    "user_profile_id", "workspace_id", "billing_policy", "fallback_credit_token",
    "cache_control",  # the provider's prompt cache: what is billed, not what is said
})

# OpenAI's Responses API. `input` holds the whole conversation by the time the key is made
# (conversations.py extends it), so two turns of different conversations never share an entry.
RESPONSES_ANSWER_FIELDS = frozenset({
    "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text",
    "max_output_tokens", "max_tool_calls", "reasoning", "temperature", "top_p", "top_logprobs",
    "truncation", "include", "prompt", "previous_response_id", "conversation", "background",
    "background_options", "context_management", "image", "moderation",
})
RESPONSES_BOOKKEEPING_FIELDS = frozenset({
    "model", "stream", "stream_options", "store", "metadata", "user", "safety_identifier",
    "service_tier", "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options",
    "client_metadata", "access_programs",
})

NOT_IN_KEY: dict[Kind, frozenset[str]] = {"chat": CHAT_BOOKKEEPING_FIELDS,
                                          "embeddings": EMBEDDINGS_BOOKKEEPING_FIELDS,
                                          "messages": MESSAGES_BOOKKEEPING_FIELDS,
                                          "responses": RESPONSES_BOOKKEEPING_FIELDS}


@dataclass
class Lookup:
    """What the cache does for one request, and what it did (`state`)."""

    state: State
    reads: tuple[str, ...] = ()  # store keys looked up, in order: the caller's own first
    writes: str | None = None  # the store key a complete answer is written to
    overwrites: bool = True  # False: an entry other keys read, written only where none is
    ttl_s: int = 0


def digest(kind: Kind, requested: str, models: tuple[Model, ...], body: dict[str, Any],
           headers: Mapping[str, str] | None = None) -> str:
    """The request's digest, whoever asks; `headers`: those the provider is sent."""
    fields = {name: value for name, value in body.items() if name not in NOT_IN_KEY[kind]}
    chain = [[m.name, m.provider.type, m.provider.api_base, m.provider_model] for m in models]
    keyed: list[Any] = [kind, requested, chain, fields]
    if headers:
        keyed.append(dict(headers))
    canonical = orjson.dumps(keyed, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


Scope = tuple[str, ...]  # ("key", name), ("group", name), ("shared",) or ("anonymous",)


def scopes(settings: CacheSettings, key: ApiKey) -> tuple[Scope, Scope | None]:
    """The caller's own scope, and the one it shares with other keys (None: it shares none)."""
    # By the key's name, so that a key rotated under the same name keeps its entries; the
    # tag keeps a key and a group of the same name apart, and keyless callers from a key.
    own: Scope = ("anonymous",) if key is ANONYMOUS else ("key", key.name)
    if key.cache_scope is not None:
        return own, ("group", key.cache_scope)
    return own, (("shared",) if settings.scope == "shared" else None)


def scoped(scope: Scope, request_digest: str) -> str:
    """The store key of one request's entry in one scope."""
    return store_keys.cache_key(hashlib.sha256(orjson.dumps([*scope, request_digest])).hexdigest())


def plan(settings: CacheSettings, cache_control: str | None, key: ApiKey, kind: Kind,
         requested: str, models: tuple[Model, ...], body: dict[str, Any],
         headers: Mapping[str, str] | None = None) -> Lookup:
    if not settings.enabled:
        return Lookup("off")
    directives = {part.strip().lower() for part in (cache_control or "").split(",")}
    if "no-store" in directives:
        return Lookup("bypass")
    request_digest = digest(kind, requested, models, body, headers)
    own, shared = scopes(settings, key)
    mine = scoped(own, request_digest)
    if "no-cache" in directives:  # skip the lookup; the refresh is the caller's alone
        return Lookup("bypass", writes=mine, ttl_s=settings.ttl_s)
    if shared is None:
        return Lookup("miss", (mine,), mine, ttl_s=settings.ttl_s)
    theirs = scoped(shared, request_digest)
    return Lookup("miss", (mine, theirs), theirs, overwrites=False, ttl_s=settings.ttl_s)


@dataclass(frozen=True)
class Hit:
    model: str  # the router.yaml model that made the answer
    answer: bytes  # the JSON body, as first sent


async def get(store: Store, lookup: Lookup) -> Hit | None:
    if not lookup.reads:
        return None
    try:
        entry = await store.first(lookup.reads)
    except StoreDown:
        lookup.state, lookup.writes = "off", None
        return None
    if entry is None:
        return None
    lookup.state = "hit"
    # The entry is the model's name as a JSON string, a newline, then the answer as sent:
    # a hit needs no parsing unless it is replayed as a stream.
    name, _, answer = entry.partition(b"\n")
    return Hit(orjson.loads(name), answer)


async def put(store: Store, lookup: Lookup, model: str, answer: bytes) -> None:
    if lookup.writes is None:
        return
    with contextlib.suppress(StoreDown):
        await store.set(lookup.writes, orjson.dumps(model) + b"\n" + answer, lookup.ttl_s,
                        overwrite=lookup.overwrites)
