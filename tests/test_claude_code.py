"""The real Claude Code CLI (`claude -p`, pinned in tests/clients) through the gateway to the
mock providers: a plain prompt and a tool round trip, on a tier whose first model is
Anthropic (the body passes through natively) and on one whose first model is
OpenAI-compatible (translated both ways).

The mock calls the one tool a prompt names (`mock:tool Bash {...}`) and, once the tool's
result comes back, answers quoting it; so the CLI's final text shows the round trip
completed. Claude Code treats an unknown model name (a tier's) as its newest model: it
sends adaptive thinking, `output_config`, mid-conversation system messages and the betas
that go with them, all of which the native tier must pass on unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.demo.mockprovider import MockProvider, Received
from tests.conftest import KEY_A, demo_running, free_port

CLIENTS = Path(__file__).parent / "clients"
RUN_TIMEOUT_S = 45  # a run takes about a second; the CLI can hang, and is killed past this


def claude_binary() -> Path:
    """The CLI's native binary, from the platform package npm installs beside the wrapper
    (scripts/test runs `npm ci --ignore-scripts`, so the wrapper's postinstall, which only
    copies this file over a stub, does not run)."""
    cpu = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine())
    binary = CLIENTS / "node_modules" / "@anthropic-ai" / f"claude-code-linux-{cpu}" / "claude"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"Claude Code is not installed at {binary}: run scripts/test, or "
                    "`npm ci --prefix tests/clients --ignore-scripts` (it needs Node.js and "
                    "npm)", pytrace=False)
    return binary


@dataclass(frozen=True)
class Run:
    exit_code: int
    result: dict[str, Any]  # the CLI's --output-format json summary
    output: str  # what it printed, for failure messages

    @property
    def text(self) -> str:
        return str(self.result.get("result"))


def run_claude(base_url: str, model: str, prompt: str, home: Path, *flags: str) -> Run:
    """`claude -p PROMPT` against base_url with a gateway key, as a user would set it up,
    with nothing to reach but loopback: telemetry, update checks and error reports off, and
    any other host sent to a closed local port."""
    home.mkdir(parents=True, exist_ok=True)
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "LANG": "C.UTF-8", "ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_AUTH_TOKEN": KEY_A,
           "ANTHROPIC_MODEL": model, "ANTHROPIC_SMALL_FAST_MODEL": "fast",
           "DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1",
           "DISABLE_ERROR_REPORTING": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
           # an error shows at once, rather than after the CLI's own retries
           "CLAUDE_CODE_MAX_RETRIES": "0", "API_TIMEOUT_MS": "30000",
           "HTTPS_PROXY": dead_proxy, "HTTP_PROXY": dead_proxy,
           "NO_PROXY": "127.0.0.1,localhost"}
    command = [str(claude_binary()), "-p", prompt, "--output-format", "json", *flags]
    process = subprocess.Popen(command, env=env, cwd=home, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        stdout, stderr = process.communicate(timeout=10)
        pytest.fail(f"claude -p did not finish within {RUN_TIMEOUT_S} s (killed):\n"
                    f"{stdout[-3000:]}\n{stderr[-3000:]}", pytrace=False)
    finally:
        _kill_group(process)  # a tool's shell may outlive the CLI
    output = f"exit {process.returncode}\nstdout: {stdout[-4000:]}\nstderr: {stderr[-2000:]}"
    lines = stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        pytest.fail(f"claude -p printed no JSON result:\n{output}", pytrace=False)
    return Run(process.returncode, result, output)


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def answered(run: Run, log: Path) -> Run:
    """The run, once it has succeeded; otherwise fails with what the CLI and gateway said."""
    if run.exit_code != 0 or run.result.get("is_error"):
        tail = log.read_text()[-3000:] if log.exists() else "(no gateway log)"
        pytest.fail(f"claude -p failed:\n{run.output}\ngateway log:\n{tail}", pytrace=False)
    return run


def token() -> str:
    return f"cc-{uuid.uuid4().hex[:12]}"


def tool_prompt(value: str) -> str:
    call = {"command": f"echo {value}", "description": "Print a token"}
    return f"Run it: mock:tool Bash {json.dumps(call)}"


ECHO_ONLY = ("--allowedTools", "Bash(echo:*)")


def paths(mock: MockProvider) -> list[str]:
    return [f"{r.method} {r.path}" for r in mock.received]


def cache_marks(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """Where the body asks for prompt caching, and how (ttl and all)."""
    marks = [(f"system.{i}", b["cache_control"]) for i, b in enumerate(body.get("system") or [])
             if isinstance(b, dict) and "cache_control" in b]
    for i, message in enumerate(body["messages"]):
        content = message["content"] if isinstance(message["content"], list) else []
        marks += [(f"messages.{i}.{j}", b["cache_control"]) for j, b in enumerate(content)
                  if "cache_control" in b]
    return marks


def as_written(received: Received) -> dict[str, Any]:
    """What the native tier must pass on unchanged, from one call the provider received."""
    body = received.body
    return {"anthropic-beta": received.headers.get("anthropic-beta"),
            "anthropic-version": received.headers.get("anthropic-version"),
            "max_tokens": body["max_tokens"], "stream": body.get("stream"),
            "thinking": body.get("thinking"), "output_config": body.get("output_config"),
            "context_management": body.get("context_management"),
            "roles": [m["role"] for m in body["messages"]],
            "tools": [(t["name"], t.get("input_schema")) for t in body.get("tools") or []],
            "cache": cache_marks(body)}


@pytest.fixture
def gateway_log(gateway_files: Path) -> Path:
    return gateway_files / "gateway.log"


# --- smart: claude first, an Anthropic model: the body passes through ---------------------

def test_a_plain_prompt_on_an_anthropic_tier_passes_claude_codes_request_through(
        gateway: str, mock: MockProvider, tmp_path: Path, gateway_log: Path) -> None:
    prompt = f"Say hello {token()} mock:tool none"
    direct = answered(run_claude(mock.base_url, "smart", prompt, tmp_path / "direct"),  # type: ignore[attr-defined]
                      gateway_log)
    [sent] = mock.calls("smart")  # what the CLI sends, seen at the provider with no gateway
    mock.reset()

    run = answered(run_claude(gateway, "smart", prompt, tmp_path / "home"), gateway_log)

    assert run.text == direct.text.replace("from smart", "from claude-sonnet-4-5")
    assert run.text.startswith("mock answer from claude-sonnet-4-5 to: Say hello cc-")
    [received] = mock.calls("claude-sonnet-4-5")
    assert paths(mock) == ["POST /v1/messages"]
    assert received.body.get("stream") is True
    assert as_written(received) == as_written(sent)
    assert "thinking" in received.body and "mid-conversation-system" in str(
        received.headers.get("anthropic-beta"))
    assert run.result["usage"]["input_tokens"] > 0


def test_a_tool_round_trip_on_an_anthropic_tier_replays_the_signed_thinking(
        gateway: str, mock: MockProvider, tmp_path: Path, gateway_log: Path) -> None:
    value = token()

    run = answered(run_claude(gateway, "smart", tool_prompt(value), tmp_path, *ECHO_ONLY),
                   gateway_log)

    assert run.text == f"mock answer from claude-sonnet-4-5 after the tool said: {value}"
    assert run.result["num_turns"] == 2 and not run.result["permission_denials"]
    first, second = mock.calls("claude-sonnet-4-5")
    assert paths(mock) == ["POST /v1/messages"] * 2
    thought = mock.answers[0]
    called = [m for m in second.body["messages"] if m["role"] == "assistant"][-1]
    result = [m for m in second.body["messages"] if m["role"] == "user"][-1]
    # Claude Code keeps a thinking block in its history only when the answer's `model` is
    # the model it asked for (here the tier, `smart`); without it, Anthropic refuses the
    # tool's result once thinking is `enabled`.
    assert called["content"][0] == {"type": "thinking", "thinking": thought.thinking,
                                    "signature": thought.signature}, called["content"]
    assert called["content"][1]["input"]["command"] == f"echo {value}"
    assert result["content"][0]["type"] == "tool_result"
    assert result["content"][0]["content"].strip() == value
    assert as_written(second)["anthropic-beta"] == as_written(first)["anthropic-beta"]


# --- fast: gpt first, an OpenAI-compatible model: translated both ways -------------------

def test_a_plain_prompt_on_an_openai_tier_is_answered_through_the_translation(
        gateway: str, mock: MockProvider, tmp_path: Path, gateway_log: Path) -> None:
    value = token()

    run = answered(run_claude(gateway, "fast", f"Say hello {value} mock:tool none", tmp_path),
                   gateway_log)

    assert run.text.startswith("mock answer from gpt-4o-mini to: ")
    assert value in run.text
    [received] = mock.calls("gpt-4o-mini")
    assert paths(mock) == ["POST /v1/chat/completions"]
    assert "Bash" in [t["function"]["name"] for t in received.body["tools"]]
    assert run.result["usage"]["input_tokens"] > 0  # Claude Code's context meter reads it


def test_a_tool_round_trip_on_an_openai_tier_completes_through_the_translation(
        gateway: str, mock: MockProvider, tmp_path: Path, gateway_log: Path) -> None:
    value = token()

    run = answered(run_claude(gateway, "fast", tool_prompt(value), tmp_path, *ECHO_ONLY),
                   gateway_log)

    assert run.text.startswith("mock answer from gpt-4o-mini after the tool said: ")
    assert value in run.text
    assert run.result["num_turns"] == 2 and not run.result["permission_denials"]
    _, second = mock.calls("gpt-4o-mini")
    assert paths(mock) == ["POST /v1/chat/completions"] * 2
    [call] = [m for m in second.body["messages"] if m.get("tool_calls")][-1]["tool_calls"]
    assert call["function"]["name"] == "Bash"
    assert json.loads(call["function"]["arguments"])["command"] == f"echo {value}"
    [answer] = [m for m in second.body["messages"] if m["role"] == "tool"]
    assert answer["tool_call_id"] == call["id"] and value in str(answer["content"])


# --- the demo's own lines ------------------------------------------------------------------

@pytest.mark.parametrize("index,expected", [
    (0, "mock answer from claude-sonnet-4-5 to: Say hello"),
    (1, "mock answer from gpt-4o-mini after the tool said: hi"),
])
def test_the_demos_claude_code_lines_work_when_pasted(tmp_path: Path, index: int,
                                                      expected: str) -> None:
    """`gateway demo` prints two Claude Code command lines; pasted (with `claude` on the
    PATH), the first answers in words and the second runs `echo hi` through a translated
    tier and answers with its output."""
    with demo_running([sys.executable, "-m", "gateway", "demo", "--port",
                       str(free_port())]) as printed:
        lines = [line.strip() for line in printed
                 if line.strip().startswith("ANTHROPIC_BASE_URL=")]
        assert len(lines) == 2, printed
        home = tmp_path / "home"
        home.mkdir()
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "claude").symlink_to(claude_binary())
        dead_proxy = f"http://127.0.0.1:{free_port()}"
        env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
               "HOME": str(home), "LANG": "C.UTF-8", "DISABLE_TELEMETRY": "1",
               "DISABLE_AUTOUPDATER": "1", "DISABLE_ERROR_REPORTING": "1",
               "HTTPS_PROXY": dead_proxy, "HTTP_PROXY": dead_proxy,
               "NO_PROXY": "127.0.0.1,localhost"}
        pasted = subprocess.run(["bash", "-c", lines[index]], env=env, cwd=home,
                                capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                                stdin=subprocess.DEVNULL)
    assert pasted.returncode == 0, pasted.stderr[-2000:]
    assert expected in pasted.stdout, pasted.stdout[-2000:]
