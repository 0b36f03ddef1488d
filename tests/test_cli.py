"""The commands as an operator types them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import openai

from tests.conftest import free_port, start_gateway

REPO = Path(__file__).resolve().parent.parent


def gateway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True,
                          text=True, timeout=60, env=env, cwd=REPO)


def test_check_accepts_the_shipped_file_and_names_unusable_models() -> None:
    result = gateway("check", "--config", str(REPO / "router.yaml"), env={"PATH": ""})
    assert result.returncode == 0, result.stderr
    assert "fast: gpt-4o-mini (unusable) -> llama-groq (unusable) -> claude-haiku (unusable) " \
           "-> llama-local" in result.stdout
    assert "gpt-4o-mini: environment variable OPENAI_API_KEY is not set" in result.stdout


def test_check_exits_1_with_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "router.yaml"
    bad.write_text("providers: {openai: {api_key: x}}\nmodels:\n  a: {provider: openai, "
                   "model: gpt-4o-mini, colour: red}\ntiers:\n  t: [a, b]\n")
    result = gateway("check", "--config", str(bad))
    assert result.returncode == 1
    assert "router.yaml:3: models.a.colour: unknown field" in result.stderr
    assert "router.yaml:5: tiers.t[1]: unknown model 'b'" in result.stderr
    assert "keys: no keys are configured" in result.stderr


def test_serve_refuses_a_broken_file_before_listening(tmp_path: Path) -> None:
    bad = tmp_path / "router.yaml"
    bad.write_text("providers: {}\nmodels: {}\ntiers: {t: [nope]}\n")
    result = gateway("serve", "--config", str(bad), "--port", str(free_port()))
    assert result.returncode == 1
    assert "tiers.t[0]: unknown model 'nope'" in result.stderr


def test_keys_new_prints_a_key_whose_snippet_lets_it_in(tmp_path: Path, mock) -> None:
    result = gateway("keys", "new", "--name", "team-z", "--daily-budget", "2.5")
    assert result.returncode == 0
    key = re.search(r"^  (sk-gw-\S+)$", result.stdout, re.M).group(1)
    snippet = result.stdout[result.stdout.index("  - name: team-z"):]
    assert key not in snippet
    assert "daily_budget_usd: 2.50" in snippet
    config = tmp_path / "router.yaml"
    config.write_text(f"providers:\n  openai: {{api_key: k, api_base: '{mock.base_url}/v1'}}\n"
                      "models:\n  gpt: {provider: openai, model: gpt-4o-mini}\n"
                      f"keys:\n{snippet}")
    process, base_url = start_gateway(config, tmp_path / "log.txt")
    try:
        with openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0) as client:
            reply = client.chat.completions.create(model="gpt", messages=[{"role": "user",
                                                                           "content": "hi"}])
        assert reply.model == "gpt"
    finally:
        process.terminate()
        process.wait(10)
