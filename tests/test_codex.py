"""The real Codex CLI (`codex exec --json`, pinned in tests/clients) through the gateway's
Responses API to the mock providers: a plain prompt and a shell tool round trip, on a tier whose
first model is OpenAI (Codex's body passes through to the provider's /v1/responses) and on one
whose first model is Claude (translated: Responses to Anthropic's Messages API and back).

Codex is set up as a user would for a self-hosted gateway: a custom model provider
(`[model_providers.gw]`, `wire_api = "responses"`) whose base_url is the gateway's /v1, the key
in an environment variable, a tier's name as its model. Codex 0.171 offers its shell as the
function tool `exec_command` taking `{"cmd": "..."}`; the mock calls it when the prompt says
`mock:tool exec_command {"cmd": "echo TOKEN"}`, Codex runs the command and sends its output
back as a function_call_output, and the mock answers "... after the tool said: <output>".

WebSockets: against a custom provider Codex 0.171 speaks plain HTTP (POST /v1/responses, an
SSE stream) unless the provider says `supports_websockets = true`. Then it first GETs
/v1/responses with `Upgrade: websocket` (`openai-beta: responses_websockets=...`); answered
426 it falls back to HTTP at once and quietly; answered otherwise (a 404, say) it tries the
upgrade three times and shows the user "Falling back from WebSockets to HTTPS transport".
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.demo.mockprovider import MockProvider
from tests.conftest import KEY_A, free_port
from tests.responses_clients import CLIENTS, tool_exchanges

RUN_TIMEOUT_S = 60  # a run takes a second or two; the CLI can hang, and is killed past this
# tier, the router.yaml model that answers it, its provider's id, the path the mock receives
TIERS = [pytest.param("fast", "gpt", "gpt-4o-mini", "/v1/responses", id="openai-tier"),
         pytest.param("smart", "claude", "claude-sonnet-4-5", "/v1/messages",
                      id="claude-tier")]
CONFIG = """\
model = "{model}"
model_provider = "gw"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[analytics]
enabled = false

[otel]
exporter = "none"

[model_providers.gw]
name = "gw"
base_url = "{base_url}/v1"
env_key = "GW_KEY"
wire_api = "responses"
request_max_retries = 1
stream_max_retries = 1
"""


def codex_binary() -> Path:
    """The CLI's native binary, from the platform package npm installs beside the wrapper
    (scripts/test runs `npm ci --ignore-scripts`; the wrapper would only start this file)."""
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64",
            "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine())
    cpu = "x64" if arch == "x86_64" else "arm64"
    binary = (CLIENTS / "node_modules" / "@openai" / f"codex-linux-{cpu}" / "vendor"
              / f"{arch}-unknown-linux-musl" / "bin" / "codex")
    if not os.access(binary, os.X_OK):
        pytest.fail(f"Codex is not installed at {binary}: run scripts/test, or "
                    "`npm ci --prefix tests/clients --ignore-scripts` (it needs Node.js and "
                    "npm)", pytrace=False)
    return binary


@dataclass(frozen=True)
class Run:
    exit_code: int
    events: list[dict[str, Any]]  # the --json JSONL events
    output: str  # what it printed, for failure messages

    def items(self, kind: str) -> list[dict[str, Any]]:
        return [e["item"] for e in self.events
                if e.get("type") == "item.completed" and e["item"].get("type") == kind]

    @property
    def final_message(self) -> str:
        messages = self.items("agent_message")
        return str(messages[-1]["text"]) if messages else ""


def run_codex(base_url: str, model: str, prompt: str, home: Path, provider_extra: str = ""
              ) -> Run:
    """`codex exec --json PROMPT` in a fresh HOME, CODEX_HOME and working directory, with
    nothing to reach but loopback (any other host goes to a closed local port)."""
    codex_home = home / ".codex"
    work = home / "work"
    codex_home.mkdir(parents=True)
    work.mkdir()
    (codex_home / "config.toml").write_text(
        CONFIG.format(model=model, base_url=base_url) + provider_extra)
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "CODEX_HOME": str(codex_home), "GW_KEY": KEY_A, "LANG": "C.UTF-8",
           "HTTPS_PROXY": dead_proxy, "HTTP_PROXY": dead_proxy,
           "NO_PROXY": "127.0.0.1,localhost"}
    command = [str(codex_binary()), "exec", "--skip-git-repo-check", "--json", prompt]
    process = subprocess.Popen(command, env=env, cwd=work, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        stdout, stderr = process.communicate(timeout=10)
        pytest.fail(f"codex exec did not finish within {RUN_TIMEOUT_S} s (killed):\n"
                    f"{stdout[-3000:]}\n{stderr[-3000:]}", pytrace=False)
    finally:
        _kill_group(process)  # a command's shell may outlive the CLI
    events = []
    for line in stdout.splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    output = f"exit {process.returncode}\nstdout: {stdout[-4000:]}\nstderr: {stderr[-2000:]}"
    return Run(process.returncode, events, output)


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def answered(run: Run, log: Path) -> Run:
    """The run, once its turn completed; otherwise fails with what the CLI and gateway said."""
    types = [e.get("type") for e in run.events]
    if run.exit_code != 0 or "turn.completed" not in types or "turn.failed" in types:
        tail = log.read_text()[-3000:] if log.exists() else "(no gateway log)"
        pytest.fail(f"codex exec failed:\n{run.output}\ngateway log:\n{tail}", pytrace=False)
    return run


def token() -> str:
    return f"cx-{uuid.uuid4().hex[:12]}"


class UsageLog:
    """The gateway's usage log from where it ended when a test began: Codex shows no response
    headers, so its requests' lines are the ones written since."""

    def __init__(self, path: Path):
        self.path = path
        self.start = path.stat().st_size if path.exists() else 0

    def lines(self, count: int, within_s: float = 5) -> list[dict[str, Any]]:
        """The whole lines written since, once there are `count` (fewer past `within_s`)."""
        deadline = time.monotonic() + within_s
        while True:
            with self.path.open("rb") as log:
                log.seek(self.start)
                found = [json.loads(line) for line in log.read().split(b"\n")[:-1]]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


@pytest.fixture
def gateway_log(gateway_files: Path) -> Path:
    return gateway_files / "gateway.log"


@pytest.fixture
def usage(gateway: str, gateway_files: Path) -> UsageLog:
    return UsageLog(gateway_files / "usage.jsonl")


def assert_through_the_gateway(usage: UsageLog, mock: MockProvider, tier: str, model: str,
                               path: str) -> None:
    """Every call the provider received came through the gateway's Responses surface, for
    `tier`, answered by `model`: one usage-log line each."""
    calls = len(mock.received)
    assert calls >= 1 and [r.path for r in mock.received] == [path] * calls
    lines = usage.lines(calls)
    assert [(line["surface"], line["requested"], line["model"], line["status"])
            for line in lines] == [("responses", tier, model, 200)] * calls, lines
    assert all(line["stream"] for line in lines)  # Codex always streams


@pytest.mark.parametrize("tier,model,provider_model,path", TIERS)
def test_a_plain_prompt_is_answered(gateway: str, mock: MockProvider, tmp_path: Path,
                                    gateway_log: Path, usage: UsageLog, tier: str, model: str,
                                    provider_model: str, path: str) -> None:
    prompt = f"{token()} says hello mock:tool none"

    run = answered(run_codex(gateway, tier, prompt, tmp_path), gateway_log)

    # The mock quotes the start of the user's last message; translated for Claude, Codex's
    # environment context and the prompt are one user turn, so the quote may start with it.
    assert run.final_message.startswith(f"mock answer from {provider_model} to: ")
    assert_through_the_gateway(usage, mock, tier, model, path)
    # the prompt, Codex's own instructions and its shell tool reached the model
    sent = json.dumps(mock.received[0].body)
    assert prompt in sent and "exec_command" in sent and "You are a coding agent" in sent


@pytest.mark.parametrize("tier,model,provider_model,path", TIERS)
def test_a_shell_tool_round_trip_completes(gateway: str, mock: MockProvider, tmp_path: Path,
                                           gateway_log: Path, usage: UsageLog, tier: str,
                                           model: str, provider_model: str, path: str) -> None:
    value = token()
    prompt = f"Run it: mock:tool exec_command {json.dumps({'cmd': f'echo {value}'})}"

    run = answered(run_codex(gateway, tier, prompt, tmp_path), gateway_log)

    [command] = run.items("command_execution")
    assert f"echo {value}" in command["command"]
    assert (command["exit_code"], command["aggregated_output"]) == (0, f"{value}\n")
    assert run.final_message.startswith(
        f"mock answer from {provider_model} after the tool said: ")
    assert value in run.final_message  # the command's output came back through the model
    assert len(mock.received) == 2
    calls, results = tool_exchanges(mock.received[1].body)
    [(name, arguments, call_id)] = calls
    assert (name, arguments) == ("exec_command", {"cmd": f"echo {value}"})
    [(answered_id, output)] = results
    assert answered_id == call_id and value in output
    assert_through_the_gateway(usage, mock, tier, model, path)


def as_written(body: dict[str, Any]) -> dict[str, Any]:
    """What a pass-through must leave as Codex wrote it: everything but the ids of one run
    (its session's cache key and metadata, its items' ids; the cwd named in its context)."""
    kept = {k: v for k, v in body.items()
            if k not in ("client_metadata", "prompt_cache_key", "input")}
    kept["input"] = [(i.get("type"), i.get("role")) for i in body["input"]]
    kept["asked"] = body["input"][-1]["content"]
    return kept


def test_a_plain_prompt_on_an_openai_tier_passes_codexs_request_through(
        gateway: str, mock: MockProvider, tmp_path: Path, gateway_log: Path,
        usage: UsageLog) -> None:
    value = token()
    prompt = f"{value} says hello mock:tool none"
    direct = answered(run_codex(mock.base_url, "gpt-4o-mini", prompt,  # type: ignore[attr-defined]
                                tmp_path / "direct"), gateway_log)
    [sent] = mock.received  # what Codex sends, seen at the provider with no gateway
    mock.reset()

    run = answered(run_codex(gateway, "fast", prompt, tmp_path / "home"), gateway_log)

    assert run.final_message == direct.final_message
    [received] = mock.received
    assert as_written(received.body) == as_written(sent.body)
    assert_through_the_gateway(usage, mock, "fast", "gpt", "/v1/responses")


def test_with_websockets_on_codex_falls_back_to_http_quietly(
        gateway: str, mock: MockProvider, tmp_path: Path, gateway_log: Path,
        usage: UsageLog) -> None:
    """`supports_websockets = true`: Codex asks to upgrade GET /v1/responses first; the
    gateway's 426 sends it to plain HTTP at once, with no warning shown to the user."""
    value = token()

    run = answered(run_codex(gateway, "fast", f"{value} says hi mock:tool none", tmp_path,
                             "supports_websockets = true\n"), gateway_log)

    assert run.final_message == f"mock answer from gpt-4o-mini to: {value} says hi mock:tool none"
    warnings = [e["message"] for e in run.items("error")]
    assert not [w for w in warnings if "WebSocket" in w], warnings
    assert_through_the_gateway(usage, mock, "fast", "gpt", "/v1/responses")


def test_a_shell_round_trip_on_an_openai_tier_replays_codexs_encrypted_reasoning(
        gateway: str, mock: MockProvider, tmp_path: Path, gateway_log: Path,
        usage: UsageLog) -> None:
    """Codex sends `store: false` and asks for `reasoning.encrypted_content`, then replays
    the reasoning item with the call it led to; passed through, the provider gets both
    exactly as it sent them (a real reasoning model needs them to continue)."""
    value = token()
    prompt = f"Run it: mock:tool exec_command {json.dumps({'cmd': f'echo {value}'})}"

    run = answered(run_codex(gateway, "fast", prompt, tmp_path), gateway_log)

    assert value in run.final_message
    first, second = mock.received
    assert (first.body["store"], first.body["include"]) == (
        False, ["reasoning.encrypted_content"])
    thought = mock.answers[0]
    replayed = [i for i in second.body["input"] if i.get("type") == "reasoning"]
    assert [r["encrypted_content"] for r in replayed] == [thought.signature]
    assert [r["summary"] for r in replayed] == [[{"type": "summary_text",
                                                  "text": thought.thinking}]]
    assert_through_the_gateway(usage, mock, "fast", "gpt", "/v1/responses")
