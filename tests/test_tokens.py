"""Token counts err high, never low; the byte bound is above every count."""

from __future__ import annotations

import pytest

from gateway.config import Model, Price, Provider
from gateway.money import tokens

TEXTS = [
    "Hello, world",
    "budget " * 100,
    "Grüße aus Köln, ça va? Ñandú",
    "日本語のテキストはトークンが多い",
    "emoji 🚀🔥👩‍👩‍👧‍👦 and more",
    "    indented\n\tcode();\n" * 20,
    "a",
]


def _tally(text: str) -> tokens.Tally:
    return tokens.chat_tally({"messages": [{"role": "user", "content": text}],
                              "tools": [{"type": "function", "function": {"name": "f"}}]})


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("provider_model", ["gpt-4o-mini", "claude-sonnet-4-5"])
def test_the_byte_bound_is_never_below_the_tokenizers_count(text: str,
                                                             provider_model: str) -> None:
    provider = Provider("p", "openai", None, None, None, {}, None)
    model = Model("m", provider, provider_model, Price(1, 1), None)
    tally = _tally(text)
    assert tally.bound().for_model(model) >= tally.counted().for_model(model)


def test_the_tokenizer_loads_only_when_a_count_is_asked_for() -> None:
    tally = _tally("Hello, world")
    tally.bound()
    assert tally.counted().text_tokens > 0
    assert tokens.loaded()
