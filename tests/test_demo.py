"""`gateway demo`: every example it prints works when pasted into a shell."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import demo_running, free_port

# In the order the demo prints them: what each pasted command's output shows.
EXPECTED = [
    "mock answer from gpt-4o-mini",  # a tier
    "x-gateway-attempts: 2",  # a fallback after a 529
    "x-gateway-cache: hit",  # the cache: the tier example already asked the same
    '"code":"budget_exceeded"',  # a budget refusal
    '"remaining_usd":',  # /v1/budget
    "data: [DONE]",  # Claude, streamed
    '"type":"message"',  # Anthropic's Messages API
    "mock answer from gpt-4o-mini to: Hi",  # the Anthropic SDK, translated onto GPT
    '"object":"response"',  # OpenAI's Responses API, translated onto Claude
    '"model":"llama-local"',  # a reload: the edited tier, served by the same process
    '"requested":"fast"',  # the usage log
    "llama-local mock answer",  # the OpenAI SDK: `fast` now starts with llama-local
]
COMMANDS = ("curl ", "sed ", "tail ", "python3 ")


@pytest.fixture(scope="module")
def printed() -> Iterator[list[str]]:
    if shutil.which("curl") is None:
        pytest.fail("the demo's examples are curl commands: apt-get install -y curl",
                    pytrace=False)
    with demo_running([sys.executable, "-m", "gateway", "demo", "--port",
                       str(free_port())]) as printed:
        yield printed


@pytest.fixture(scope="module")
def demo(printed: list[str]) -> list[str]:
    """The shell commands it printed, in order; a here-document is one command."""
    commands: list[str] = []
    lines = iter(printed)
    for line in lines:
        if line.strip().startswith(COMMANDS):
            command = line.strip()
            if command.endswith("<<'EOF'"):
                command += "\n" + "".join(iter(lines.__next__, "EOF\n")) + "EOF"
            commands.append(command)
    return commands


def test_the_demo_prints_a_command_per_feature(demo: list[str]) -> None:
    assert len(demo) == len(EXPECTED)


@pytest.mark.parametrize("index", range(len(EXPECTED)))
def test_each_printed_example_works_when_pasted(demo: list[str], index: int) -> None:
    pasted = subprocess.run(["bash", "-c", demo[index]], capture_output=True, text=True,
                            timeout=30)
    assert pasted.returncode == 0, pasted.stderr
    assert EXPECTED[index] in pasted.stdout

