"""Prices and output limits from litellm's bundled price map, read as data, and where
litellm keeps the tokenizer files it bundles.

Reading the JSON directly costs ~30 ms once, where `import litellm` costs
seconds and 170 MB; the gateway only needs the numbers. This is the one module
that knows where litellm's data files are.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

PRICE_FILE = "model_prices_and_context_window_backup.json"
PROVIDERS_FILE = "provider_endpoints_support_backup.json"
TOKENIZERS_DIR = ("litellm_core_utils", "tokenizers")  # tiktoken's cache, filled: no download


@dataclass(frozen=True)
class ListedModel:
    """What litellm's map says of one provider model; prices in USD per million tokens."""

    input_per_mtok: float | None
    output_per_mtok: float | None
    cached_input_per_mtok: float | None
    cache_write_per_mtok: float | None
    cache_write_1h_per_mtok: float | None
    max_output_tokens: int | None
    reasoning: bool  # litellm's supports_reasoning


def _litellm_dir() -> Path:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("litellm is not installed: pip install litellm")
    return Path(next(iter(spec.submodule_search_locations)))


def tokenizer_dir() -> Path:
    """The directory of tiktoken encodings litellm bundles (for TIKTOKEN_CACHE_DIR)."""
    return _litellm_dir().joinpath(*TOKENIZERS_DIR)


@functools.cache
def _price_map() -> dict[str, Any]:
    prices = orjson.loads((_litellm_dir() / PRICE_FILE).read_bytes())
    if not isinstance(prices, dict):
        raise RuntimeError(f"litellm's {PRICE_FILE} is not a JSON object: reinstall litellm")
    return prices


@functools.cache
def known_provider_types() -> frozenset[str]:
    """Every provider type litellm supports."""
    data = orjson.loads((_litellm_dir() / PROVIDERS_FILE).read_bytes())
    return frozenset(data["providers"])


def _per_mtok(entry: dict[str, Any], field: str) -> float | None:
    value = entry.get(field)
    if isinstance(value, int | float):
        return round(value * 1_000_000, 6)
    return None


def lookup(provider_type: str, provider_model: str) -> ListedModel | None:
    """The map's entry for a provider model, tried as `type/model` then as `model`."""
    prices = _price_map()
    entry = prices.get(f"{provider_type}/{provider_model}")
    if entry is None:
        entry = prices.get(provider_model)
        # A bare id must belong to this provider: "llama3" under groq is not ollama's.
        if entry is not None and entry.get("litellm_provider") not in (provider_type, None):
            entry = None
    if not isinstance(entry, dict):
        return None
    max_output = entry.get("max_output_tokens") or entry.get("max_tokens")
    output = _per_mtok(entry, "output_cost_per_token")
    if output is None and entry.get("mode") == "embedding":
        output = 0.0  # an embedding model produces no tokens; the map leaves the price out
    return ListedModel(
        input_per_mtok=_per_mtok(entry, "input_cost_per_token"),
        output_per_mtok=output,
        cached_input_per_mtok=_per_mtok(entry, "cache_read_input_token_cost"),
        cache_write_per_mtok=_per_mtok(entry, "cache_creation_input_token_cost"),
        cache_write_1h_per_mtok=_per_mtok(entry, "cache_creation_input_token_cost_above_1hr"),
        max_output_tokens=max_output if isinstance(max_output, int) else None,
        reasoning=entry.get("supports_reasoning") is True,
    )
