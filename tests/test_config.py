"""router.yaml rules, table-driven: each broken file gets a precise, line-numbered message."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent

VALID = """\
providers:
  openai: {api_key: sk-x}
  anthropic: {api_key: sk-y}
models:
  gpt: {provider: openai, model: gpt-4o-mini}
  claude: {provider: anthropic, model: claude-sonnet-4-5}
tiers:
  fast: [gpt, claude]
settings:
  allow_anonymous: true
"""


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None):
    path = tmp_path / "router.yaml"
    path.write_text(textwrap.dedent(text))
    return load_config(path, environ=env or {})


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, env)
    return caught.value.problems


def test_shipped_router_yaml_is_valid_with_no_secrets_set() -> None:
    config = load_config(REPO / "router.yaml", environ={})
    assert set(config.tiers) == {"fast", "smart", "local"}
    unusable = {m.name for m in config.models.values() if m.unusable}
    assert unusable == {"claude-sonnet", "claude-haiku", "gpt-4o", "gpt-4o-mini", "llama-groq"}
    assert config.models["llama-local"].unusable is None
    assert any("ANTHROPIC_API_KEY is not set" in w for w in config.warnings)


def test_shipped_router_yaml_has_every_model_priced() -> None:
    config = load_config(REPO / "router.yaml", environ={})
    for model in config.models.values():
        assert model.price.input_per_mtok >= 0 and model.price.output_per_mtok >= 0


def test_prices_come_from_litellms_map_unless_overridden(tmp_path: Path) -> None:
    config = load(tmp_path, VALID)
    assert config.models["gpt"].price.input_per_mtok == pytest.approx(0.15)
    assert config.models["gpt"].price.output_per_mtok == pytest.approx(0.6)
    assert config.models["claude"].max_output_tokens == 64000
    override = VALID.replace("model: gpt-4o-mini}", "model: gpt-4o-mini, price: "
                             "{input_per_mtok: 9, output_per_mtok: 10}}")
    assert load(tmp_path, override).models["gpt"].price.input_per_mtok == 9


def test_env_references_are_substituted_with_defaults(tmp_path: Path) -> None:
    text = VALID.replace("api_key: sk-x", 'api_key: "${OPENAI_KEY}"').replace(
        "allow_anonymous: true", 'allow_anonymous: true\n  redis_url: "${REDIS_URL:-redis://r:6379}"')
    config = load(tmp_path, text, env={"OPENAI_KEY": "sk-from-env"})
    assert config.models["gpt"].provider.api_key == "sk-from-env"
    assert config.settings.redis_url == "redis://r:6379"


def test_missing_provider_secret_makes_its_models_unusable_not_the_file(tmp_path: Path) -> None:
    config = load(tmp_path, VALID.replace("api_key: sk-y", 'api_key: "${ANTHROPIC_KEY}"'))
    assert config.models["claude"].unusable == (
        "environment variable ANTHROPIC_KEY is not set (providers.anthropic)")
    assert config.models["gpt"].unusable is None


def test_provider_without_a_required_key_is_unusable(tmp_path: Path) -> None:
    config = load(tmp_path, VALID.replace("{api_key: sk-y}", "{}"))
    assert config.models["claude"].unusable == "providers.anthropic has no api_key"


def test_openai_compatible_server_with_its_own_base_needs_no_key(tmp_path: Path) -> None:
    text = VALID.replace("openai: {api_key: sk-x}", "openai: {api_base: 'http://vllm:8000/v1/'}")
    model = load(tmp_path, text).models["gpt"]
    assert model.unusable is None
    assert model.provider.api_base == "http://vllm:8000/v1"


@pytest.mark.parametrize(("base", "expected"), [
    ("http://localhost:11434", "http://localhost:11434"),
    ("http://localhost:11434/v1", "http://localhost:11434"),
    ("http://ollama:11434/", "http://ollama:11434"),
])
def test_ollama_base_is_accepted_with_or_without_v1(tmp_path: Path, base: str,
                                                    expected: str) -> None:
    text = VALID + """\
  # appended
"""
    text = text.replace("  anthropic: {api_key: sk-y}\n",
                        f"  anthropic: {{api_key: sk-y}}\n  ollama: {{api_base: '{base}'}}\n")
    text = text.replace("tiers:", "  local: {provider: ollama, model: llama3.2, price: "
                        "{input_per_mtok: 0, output_per_mtok: 0}}\ntiers:")
    assert load(tmp_path, text).models["local"].provider.api_base == expected


BROKEN = [
    ("unknown field", VALID.replace("model: gpt-4o-mini}", "model: gpt-4o-mini, temprature: 1}"),
     "router.yaml:5: models.gpt.temprature: unknown field"),
    ("missing field", VALID.replace("provider: openai, model: gpt-4o-mini", "provider: openai"),
     "router.yaml:5: models.gpt.model: required field is missing"),
    ("unknown model in tier", VALID.replace("[gpt, claude]", "[gpt, gpt-5]"),
     "router.yaml:8: tiers.fast[1]: unknown model 'gpt-5'; add it under models:"),
    ("unknown provider", VALID.replace("provider: anthropic", "provider: antropic"),
     "router.yaml:6: models.claude.provider: unknown provider 'antropic'"),
    ("no price anywhere", VALID.replace("model: gpt-4o-mini", "model: my-finetune"),
     "router.yaml:5: models.gpt.price: litellm's price map has no price for openai/my-finetune"),
    ("negative price", VALID.replace("model: gpt-4o-mini}", "model: gpt-4o-mini, price: "
                                     "{input_per_mtok: -1, output_per_mtok: 1}}"),
     "models.gpt.price.input_per_mtok: should be greater than or equal to 0"),
    ("unset variable outside providers",
     VALID.replace("allow_anonymous: true", 'allow_anonymous: true\n  redis_url: "${R}"'),
     "settings.redis_url: environment variable R is not set"),
    ("tier named like a model", VALID.replace("fast: [gpt, claude]", "gpt: [claude]"),
     "tiers.gpt: 'gpt' is also a model name"),
    ("empty tier", VALID.replace("[gpt, claude]", "[]"), "tiers.fast: "),
    ("no keys", VALID.replace("allow_anonymous: true", "log_content: false"),
     "keys: no keys are configured"),
    ("bad digest", VALID.replace("settings:", "keys:\n  - {name: a, key_sha256: abc}\nsettings:"),
     "keys[0].key_sha256: must be 64 lowercase hex characters"),
    ("two keys with no name", VALID.replace("settings:", f"keys:\n  - {{key_sha256: {'a' * 64}}}"
                                            f"\n  - {{key_sha256: {'b' * 64}}}\nsettings:"),
     "keys[1].name: required field is missing"),
    ("key name not text", VALID.replace("settings:", f"keys:\n  - {{name: [a], key_sha256: "
                                        f"{'a' * 64}}}\nsettings:"),
     "keys[0].name: should be a valid string"),
    ("allowed entry not text", VALID.replace("settings:", f"keys:\n  - {{name: a, key_sha256: "
                                             f"{'a' * 64}, allow: [[fast]]}}\nsettings:"),
     "keys[0].allow[0]: should be a valid string"),
    ("unknown provider type", VALID.replace("anthropic: {api_key: sk-y}",
                                            "anthropic: {api_key: sk-y, type: anthropix}"),
     "providers.anthropic.type: unknown provider type 'anthropix'"),
    ("bad enum", VALID.replace("allow_anonymous: true",
                               "allow_anonymous: true\n  budgets: {on_store_error: ignore}"),
     "settings.budgets.on_store_error: should be 'refuse' or 'allow'"),
    ("duplicate key", VALID.replace("tiers:", "tiers:\n  fast: [gpt]"),
     "tiers.fast: duplicate key"),
    ("not yaml", "providers: [unclosed", "not valid YAML"),
    ("alerts without a budget", VALID.replace("settings:", f"keys:\n  - {{name: a, key_sha256: "
                                              f"{'a' * 64}, alert_at_percent: [50]}}\nsettings:"),
     "keys[0].alert_at_percent: alerts are shares of daily_budget_usd, which this key does "
     "not set"),
    ("alert past the budget", VALID.replace("settings:", f"keys:\n  - {{name: a, key_sha256: "
                                            f"{'a' * 64}, daily_budget_usd: 1, "
                                            "alert_at_percent: [150]}\nsettings:"),
     "keys[0].alert_at_percent[0]: should be less than or equal to 100"),
    ("a zero rate limit", VALID.replace("settings:", f"keys:\n  - {{name: a, key_sha256: "
                                        f"{'a' * 64}, limits: {{rpm: 0}}}}\nsettings:"),
     "keys[0].limits.rpm: should be greater than 0"),
    ("a model's limit in flight", VALID.replace("model: gpt-4o-mini}", "model: gpt-4o-mini, "
                                                "limits: {max_in_flight: 3}}"),
     "router.yaml:5: models.gpt.limits.max_in_flight: unknown field"),
]


def test_a_claude_model_with_no_known_output_limit_takes_the_default_and_a_warning(
        tmp_path: Path) -> None:
    config = load(tmp_path, VALID.replace("claude-sonnet-4-5}", "claude-custom, price: "
                                          "{input_per_mtok: 1, output_per_mtok: 1}}"))
    assert config.models["claude"].max_output_tokens == 4096
    assert config.notes == ("router.yaml:6: models.claude.max_output_tokens: litellm's price "
                            "map does not know the output limit of anthropic/claude-custom; "
                            "sent max_tokens 4096 when a client sets none, and no answer is "
                            "longer (every Claude model accepts it); set max_output_tokens to "
                            "the model's own limit to allow longer answers",)


@pytest.mark.parametrize(("case", "text", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_file_names_the_field_and_what_to_fix(tmp_path: Path, case: str, text: str,
                                                     expected: str) -> None:
    found = problems(tmp_path, text)
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (VALID.replace("model: gpt-4o-mini}", "model: gpt-4o-mini, temprature: 1}")
            .replace("[gpt, claude]", "[gpt, gpt-5]")
            .replace("allow_anonymous: true", "allow_anonymous: true\n  max_body_mb: lots"))
    found = problems(tmp_path, text)
    assert len(found) == 3, found
    assert all(p.startswith("router.yaml:") for p in found)
