"""router.yaml's balanced groups and key downgrades: validation rows, the flat chain, the view."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway import config_view
from gateway.balance import Balancer
from gateway.config import ConfigError, Group, load_config

GROUPED = """\
providers:
  openai: {api_key: sk-x}
models:
  us: {provider: openai, model: gpt-4o-mini}
  eu: {provider: openai, model: gpt-4o-mini}
  backup: {provider: openai, model: gpt-4o}
tiers:
  smart:
    - group: [us, eu]
      balance: weighted
      weights: {us: 3}
    - backup
  fast: [backup]
keys:
  - name: a
    key_sha256: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
    daily_budget_usd: 10
    allow: [smart]
    downgrade: [{tier: smart, to: fast, after_percent: 80}]
"""


def load(tmp_path: Path, text: str):
    path = tmp_path / "router.yaml"
    path.write_text(textwrap.dedent(text))
    return load_config(path, environ={})


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return caught.value.problems


def test_a_group_is_one_step_and_the_flat_chain_stays_as_configured(tmp_path: Path) -> None:
    config = load(tmp_path, GROUPED)
    assert config.tiers["smart"] == ("us", "eu", "backup")
    assert [m.name for m in config.chain("smart") or ()] == ["us", "eu", "backup"]
    assert config.groups["smart"] == (Group(("us", "eu"), "weighted", {"us": 3.0}), "backup")
    assert "fast" not in config.groups
    assert config.keys[0].downgrade[0].to == "fast"


def test_a_weighted_group_draws_either_member_first_and_keeps_later_steps_after(
        tmp_path: Path) -> None:
    config = load(tmp_path, GROUPED)
    balancer = Balancer(random.Random(7))
    firsts = [balancer.order(config, "smart")[0].name for _ in range(400)]
    orders = {tuple(m.name for m in balancer.order(config, "smart")) for _ in range(50)}
    assert orders == {("us", "eu", "backup"), ("eu", "us", "backup")}
    assert 0.67 <= firsts.count("us") / 400 <= 0.83  # 3:1
    assert [m.name for m in balancer.order(config, "fast")] == ["backup"]


def test_least_busy_adds_other_replicas_in_flight(tmp_path: Path) -> None:
    config = load(tmp_path, GROUPED.replace("balance: weighted\n      weights: {us: 3}",
                                            "balance: least-busy"))
    balancer = Balancer()
    end = balancer.started("us")
    assert [m.name for m in balancer.order(config, "smart")] == ["eu", "us", "backup"]
    end()
    end()  # ending twice counts once
    assert balancer.in_flight("us") == 0
    balancer.others({"eu": 2})
    assert [m.name for m in balancer.order(config, "smart")] == ["us", "eu", "backup"]


def test_latency_puts_unmeasured_first_then_the_fastest(tmp_path: Path) -> None:
    config = load(tmp_path, GROUPED.replace("balance: weighted\n      weights: {us: 3}",
                                            "balance: latency"))
    balancer = Balancer()
    balancer.answered("us", 0.5)
    assert [m.name for m in balancer.order(config, "smart")][:2] == ["eu", "us"]
    balancer.answered("eu", 1.0)
    assert [m.name for m in balancer.order(config, "smart")][:2] == ["us", "eu"]


def test_admin_config_and_gateway_check_show_the_group(tmp_path: Path) -> None:
    config = load(tmp_path, GROUPED)
    view = config_view.effective(config)
    assert view["tiers"] == {"smart": [{"group": ["us", "eu"], "balance": "weighted",
                                        "weights": {"us": 3.0}}, "backup"],
                             "fast": ["backup"]}
    assert view["keys"][0]["downgrade"] == [{"tier": "smart", "to": "fast",
                                             "after_percent": 80.0}]
    checked = subprocess.run([sys.executable, "-m", "gateway", "check", "--config",
                              str(tmp_path / "router.yaml")], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert "smart: [us | eu] (weighted 3:1) -> backup" in checked.stdout


def _group(text: str) -> str:
    step = "    - group: [us, eu]\n      balance: weighted\n      weights: {us: 3}\n"
    return GROUPED.replace(step, text)


BROKEN = [
    ("unknown member", _group("    - group: [us, mars]\n"),
     "router.yaml:9: tiers.smart[0].group[1]: unknown model 'mars'; add it under models:"),
    ("a tier as member", _group("    - group: [us, fast]\n"),
     "tiers.smart[0].group[1]: unknown model 'fast'; tiers list models, not other tiers"),
    ("empty group", _group("    - group: []\n"), "tiers.smart[0].group: "),
    ("duplicate member", _group("    - group: [us, us]\n"),
     "tiers.smart[0].group[1]: 'us' is listed twice in the group"),
    ("member also a step", _group("    - group: [us, backup]\n"),
     "tiers.smart[0].group[1]: 'backup' is also in a step of its own of tier smart"),
    ("weight of a non-member", _group("    - group: [us, eu]\n      weights: {backup: 2}\n"),
     "tiers.smart[0].weights.backup: 'backup' is not a member of this group"),
    ("weights with least-busy",
     _group("    - group: [us, eu]\n      balance: least-busy\n      weights: {us: 2}\n"),
     "tiers.smart[0].weights: weights are for balance: weighted only"),
    ("zero weight", _group("    - group: [us, eu]\n      weights: {us: 0}\n"),
     "tiers.smart[0].weights.us: should be greater than 0"),
    ("unknown balance", _group("    - group: [us, eu]\n      balance: random\n"),
     "tiers.smart[0].balance: should be 'weighted', 'least-busy' or 'latency'"),
    ("unknown group field", _group("    - group: [us, eu]\n      strategy: weighted\n"),
     "tiers.smart[0].strategy: unknown field"),
    ("downgrade to nowhere", GROUPED.replace("to: fast", "to: slow"),
     "keys[0].downgrade[0].to: unknown tier or model 'slow'"),
    ("downgrade of an unknown tier", GROUPED.replace("tier: smart,", "tier: smrt,"),
     "keys[0].downgrade[0].tier: unknown tier or model 'smrt'"),
    ("downgrade of a tier not allowed", GROUPED.replace("allow: [smart]", "allow: [fast]"),
     "keys[0].downgrade[0].tier: the key may not use 'smart'"),
    ("downgrade without a budget", GROUPED.replace("    daily_budget_usd: 10\n", ""),
     "keys[0].downgrade: a downgrade is a share of the daily budget: set daily_budget_usd"),
    ("downgrade at 0 percent", GROUPED.replace("after_percent: 80", "after_percent: 0"),
     "keys[0].downgrade[0].after_percent: should be greater than 0"),
    ("downgrade past 100 percent", GROUPED.replace("after_percent: 80", "after_percent: 101"),
     "keys[0].downgrade[0].after_percent: should be less than or equal to 100"),
    ("downgrade unknown field", GROUPED.replace("after_percent: 80", "after_percent: 80, x: 1"),
     "keys[0].downgrade[0].x: unknown field"),
]


@pytest.mark.parametrize(("case", "text", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_group_or_downgrade_names_the_field(tmp_path: Path, case: str, text: str,
                                                     expected: str) -> None:
    found = problems(tmp_path, text)
    assert any(expected in p for p in found), found
