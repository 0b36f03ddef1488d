"""widenings(): which edits give someone more access or money, table-driven.

These decide whether a router.yaml written in place may apply by itself
(tests/test_reload_partial.py shows it end to end).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.config import Config, parse_config
from gateway.schema import Settings
from gateway.widening import widenings

DIGEST_A, DIGEST_B, DIGEST_C = "a" * 64, "b" * 64, "c" * 64
BASE = f"""\
providers:
  openai: {{api_key: sk-x, api_base: "http://127.0.0.1:9/v1"}}
models:
  cheap: {{provider: openai, model: m-cheap, price: {{input_per_mtok: 1, output_per_mtok: 2}},
          max_output_tokens: 1000}}
  dear: {{provider: openai, model: m-dear, price: {{input_per_mtok: 5, output_per_mtok: 10}}}}
  spare: {{provider: openai, model: m-spare, price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
tiers:
  fast: [cheap, dear]
keys:
  - {{name: team-a, key_sha256: {DIGEST_A}, daily_budget_usd: 5, limits: {{rpm: 60}}}}
  - {{name: team-b, key_sha256: {DIGEST_B}, allow: [fast]}}
settings:
  master_key: sk-master
  cache: {{enabled: false}}
  timeouts: {{total_s: 60}}
"""


def config(text: str) -> Config:
    return parse_config(text.encode(), Path("router.yaml"), environ={})


def edited(*replacements: tuple[str, str]) -> Config:
    text = BASE
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    return config(text)


NOTHING_WIDENED = {
    "a reordered tier": [("fast: [cheap, dear]", "fast: [dear, cheap]")],
    "a lowered budget": [("daily_budget_usd: 5", "daily_budget_usd: 1")],
    "a budget set": [("allow: [fast]}", "allow: [fast], daily_budget_usd: 1}")],
    "an emptied allow list": [("allow: [fast]", "allow: []")],
    "a key removed": [(f"  - {{name: team-b, key_sha256: {DIGEST_B}, allow: [fast]}}\n", "")],
    "a tier losing a model": [("fast: [cheap, dear]", "fast: [cheap]")],
    "a raised price": [("input_per_mtok: 5,", "input_per_mtok: 6,")],
    "a higher max_output_tokens": [("max_output_tokens: 1000", "max_output_tokens: 2000")],
    "a provider key rotated": [("api_key: sk-x", "api_key: sk-rotated")],
    "timeouts and retries": [("timeouts: {total_s: 60}",
                              "timeouts: {total_s: 30}\n  retry: {max_retries: 5}")],
    "the cache turned off": [("cache: {enabled: false}", "cache: {enabled: false, ttl_s: 60}")],
    "the cache per key again": [("cache: {enabled: false}", "cache: {enabled: false, scope: key}")],
    "a lowered rate limit": [("limits: {rpm: 60}", "limits: {rpm: 30, tpm: 1000}")],
    "alerts and where they go": [("daily_budget_usd: 5,", "daily_budget_usd: 5, "
                                  "alert_at_percent: [50],"),
                                 ("  master_key:", "  alerts: {webhook_url: 'http://h/x'}\n"
                                  "  master_key:")],
    "load shedding and the response bound": [
        ("timeouts: {total_s: 60}", "timeouts: {total_s: 60}\n  max_response_mb: 64\n"
                                    "  overload: {max_in_flight: 10, max_delay_ms: 0}")],
}

WIDENED = {
    "a key added": ([("keys:\n", f"keys:\n  - {{name: team-c, key_sha256: {DIGEST_C}}}\n")],
                    ["key team-c added"]),
    "a key's new secret": ([(DIGEST_B, DIGEST_C)], ["key team-b: a new secret"]),
    "a raised budget": ([("daily_budget_usd: 5", "daily_budget_usd: 6")],
                        ["key team-a: daily budget raised"]),
    "a budget removed": ([(", daily_budget_usd: 5", "")], ["key team-a: daily budget removed"]),
    "an allow list removed": ([(", allow: [fast]", "")],
                              ["key team-b may use more tiers or models: cheap, dear, spare"]),
    "an allow list emptied to null": ([("allow: [fast]", "allow: null")],
                                      ["key team-b may use more tiers or models: "
                                       "cheap, dear, spare"]),
    "a model asked for by name": ([("allow: [fast]", "allow: [fast, dear]")],
                                  ["key team-b may use more tiers or models: dear"]),
    "a tier gaining a model": ([("fast: [cheap, dear]", "fast: [cheap, dear, spare]")],
                               ["key team-b may use more tiers or models: spare"]),
    "a new tier": ([("fast: [cheap, dear]", "fast: [cheap, dear]\n  all: [spare]")],
                   ["key team-a may use more tiers or models: all"]),
    "a lower price": ([("output_per_mtok: 10}", "output_per_mtok: 9}")],
                      ["model dear: a lower price"]),
    "a lower max_output_tokens": ([("max_output_tokens: 1000", "max_output_tokens: 10")],
                                  ["model cheap: a lower max_output_tokens"]),
    "another upstream": ([("model: m-dear", "model: m-dearer")], ["model dear: another upstream"]),
    "another api_base": ([("127.0.0.1:9", "127.0.0.1:10")],
                         ["model cheap: another upstream", "model dear: another upstream",
                          "model spare: another upstream"]),
    "the master key removed": ([("  master_key: sk-master\n", "")],
                               ["settings.master_key changed"]),
    "the master key replaced": ([("sk-master", "sk-other")], ["settings.master_key changed"]),
    "anonymous callers let in": ([("  master_key:", "  allow_anonymous: true\n  master_key:")],
                                 ["settings.allow_anonymous changed"]),
    "unmetered when the store is down": ([("  master_key:",
                                           "  budgets: {on_store_error: allow}\n  master_key:")],
                                         ["settings.budgets.on_store_error changed"]),
    "the cache turned on": ([("cache: {enabled: false}", "cache: {enabled: true}")],
                            ["settings.cache.enabled changed"]),
    "the cache shared": ([("cache: {enabled: false}", "cache: {enabled: false, scope: shared}")],
                         ["settings.cache.scope changed"]),
    "a raised rate limit": ([("limits: {rpm: 60}", "limits: {rpm: 61}")],
                            ["key team-a: limits.rpm raised or removed"]),
    "a rate limit removed": ([(", limits: {rpm: 60}", "")],
                             ["key team-a: limits.rpm raised or removed"]),
    "a key joining a cache group": ([("allow: [fast]}", "allow: [fast], cache_scope: lab}")],
                                    ["key team-b: shares cache entries with cache_scope lab"]),
}


@pytest.mark.parametrize("edit", list(NOTHING_WIDENED))
def test_an_edit_that_gives_nobody_more_widens_nothing(edit: str) -> None:
    assert widenings(config(BASE), edited(*NOTHING_WIDENED[edit])) == []


@pytest.mark.parametrize("edit", list(WIDENED))
def test_an_edit_that_gives_someone_more_says_what(edit: str) -> None:
    replacements, expected = WIDENED[edit]
    assert widenings(config(BASE), edited(*replacements)) == expected


def test_a_master_key_set_where_there_was_none_widens_nothing() -> None:
    without = config(BASE.replace("  master_key: sk-master\n", ""))
    assert widenings(without, config(BASE)) == []


class Later(Settings):
    """Settings as they may be once someone adds a field and forgets widening.py."""

    new_knob: int = 0


def test_a_setting_nobody_classified_counts_as_widening_when_it_changes() -> None:
    base = config(BASE)
    settings = base.settings.model_dump()
    before = dataclasses.replace(base, settings=Later(**settings))
    after = dataclasses.replace(base, settings=Later(**settings, new_knob=1))
    assert widenings(before, after) == ["settings.new_knob changed"]
    assert widenings(before, before) == []
