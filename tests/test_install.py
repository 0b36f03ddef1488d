"""A newcomer's first minutes: `pip install .` (not editable) in a new virtualenv, `gateway demo`,
and the README's own curl and SDK snippets against it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import demo_running, free_port
from tests.test_readme import REPO, code_blocks


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's tracked files, as a clone has them, installed into a new virtualenv.

    The virtualenv sees this interpreter's packages (through a .pth file, which works whether
    this interpreter is a system one or itself a virtualenv), so installing needs no network;
    the gateway itself is built and installed from the copy, without -e.
    """
    tmp = tmp_path_factory.mktemp("install")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (tmp / "clone" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, tmp / "clone" / name)
    # Without a pip (and setuptools) of its own, it builds with this interpreter's.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")],
                   check=True, timeout=120)
    python = str(tmp / "venv/bin/python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    Path(site, "parent-packages.pth").write_text("\n".join(sorted(ours)) + "\n")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", str(tmp / "clone")],
                   check=True, timeout=300, capture_output=True)
    return tmp / "venv"


@pytest.fixture(scope="module")
def demo_port(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    elsewhere = tmp_path_factory.mktemp("cwd")  # not the repository: nothing found by accident
    with demo_running([str(venv / "bin/gateway"), "demo", "--port", str(port)], cwd=elsewhere):
        yield port


def test_the_installed_gateway_is_the_built_one_not_the_checkout(venv: Path) -> None:
    where = subprocess.run([str(venv / "bin/python"), "-c",
                            "import gateway; print(gateway.__file__)"], capture_output=True,
                           text=True, check=True, cwd="/")
    assert where.stdout.startswith(str(venv))


def test_the_readme_curl_answers_from_the_installed_demo(demo_port: int) -> None:
    (commands,) = code_blocks("bash", "The two commands")[1:2]
    assert commands.startswith("curl http://127.0.0.1:4000/")
    pasted = subprocess.run(["bash", "-c", commands.replace(":4000/", f":{demo_port}/")],
                            capture_output=True, text=True, timeout=30)
    assert pasted.returncode == 0, pasted.stderr
    assert "x-gateway-attempts: 2" in pasted.stdout
    assert '"model":"llama-groq"' in pasted.stdout


def test_the_readme_python_sdk_example_runs_against_the_installed_demo(
        venv: Path, demo_port: int) -> None:
    code = code_blocks("python", "Using it from your code")[0]
    ran = subprocess.run([str(venv / "bin/python"), "-c", code.replace(":4000/", f":{demo_port}/")],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    served, streamed = ran.stdout.splitlines()
    assert served == "gpt-4o-mini"
    assert streamed == "mock answer from claude-sonnet-4-5 to: Hi"


def test_the_readme_anthropic_sdk_example_runs_against_the_installed_demo(
        venv: Path, demo_port: int) -> None:
    code = code_blocks("python", "Claude Code and the Anthropic SDK: `/v1/messages`")[0]
    ran = subprocess.run([str(venv / "bin/python"), "-c",
                          code.replace(":4000\"", f":{demo_port}\"")],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    served, usage, counted = ran.stdout.splitlines()
    assert served == "smart mock answer from claude-sonnet-4-5 to: Hi"
    assert "output_tokens=" in usage and " input_tokens=0," not in usage
    assert counted.startswith("MessageTokensCount(") and "(input_tokens=0)" not in counted


def test_the_readme_responses_example_runs_against_the_installed_demo(
        venv: Path, demo_port: int) -> None:
    code = code_blocks("python", "The Responses API and Codex: `/v1/responses`")[0]
    ran = subprocess.run([str(venv / "bin/python"), "-c", code.replace(":4000/", f":{demo_port}/")],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    first, second, streamed = ran.stdout.splitlines()
    assert first == "gpt-4o-mini mock answer from gpt-4o-mini to: My name is Ada."
    assert second == "claude-sonnet 3"  # Claude got the conversation: 3 input items
    assert streamed == "mock answer from claude-sonnet-4-5 to: Hi"
