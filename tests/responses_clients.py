"""What the tests of real Responses API clients share: running the Node clients' scripts in
tests/clients (the OpenAI Node SDK, the Vercel AI SDK) and reading what they saw, and reading
the tool calls a provider was sent.

Each script prints one JSON line with its result and every HTTP exchange as the wire carried
it, which is checked here against OpenAI's schema (the Python side's transport watch in
tests/openai_conformance.py cannot see a Node process's traffic).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import openai_conformance
from tests.conftest import usage_lines_of

CLIENTS = Path(__file__).parent / "clients"
RUN_TIMEOUT_S = 30  # a scenario takes well under a second


@dataclass(frozen=True)
class NodeRun:
    result: dict[str, Any]
    traffic: list[dict[str, Any]]  # method, url, status, contentType, requestId, request, body

    def request_ids(self) -> list[str]:
        return [t["requestId"] for t in self.traffic if t.get("requestId")]


# tier, the router.yaml model that answers it, its provider's id, the path the mock receives
TIERS = [pytest.param("fast", "gpt", "gpt-4o-mini", "/v1/responses", id="openai-tier"),
         pytest.param("smart", "claude", "claude-sonnet-4-5", "/v1/messages",
                      id="claude-tier")]


def assert_logged(gateway_files: Path, node: NodeRun, tier: str, model: str) -> None:
    """Each request the SDK made is in the usage log, as a Responses request answered by
    `model` for `tier`."""
    ids = node.request_ids()
    assert len(ids) == len(node.traffic), "an answer without x-request-id"
    for request_id in ids:
        [line] = usage_lines_of(gateway_files / "usage.jsonl", request_id)
        assert (line["surface"], line["requested"], line["model"], line["status"]) == (
            "responses", tier, model, 200), line


def token() -> str:
    return f"tk-{uuid.uuid4().hex[:12]}"


def run_node(script: str, **options: Any) -> NodeRun:
    """`node tests/clients/SCRIPT OPTIONS-AS-JSON`; fails the test with what the script and
    the server said unless the scenario succeeded and its traffic fits OpenAI's schema."""
    node = shutil.which("node")
    if node is None or not (CLIENTS / "node_modules" / "openai").is_dir():
        pytest.fail("these tests need Node.js and the clients pinned in tests/clients: run "
                    "scripts/test, or `npm ci --prefix tests/clients --ignore-scripts`",
                    pytrace=False)
    process = subprocess.run([node, str(CLIENTS / script), json.dumps(options)], cwd=CLIENTS,
                             capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                             stdin=subprocess.DEVNULL)
    lines = process.stdout.strip().splitlines()
    try:
        printed = json.loads(lines[-1]) if lines else None
    except ValueError:
        printed = None
    if not isinstance(printed, dict):
        pytest.fail(f"{script} printed no result (exit {process.returncode}):\n"
                    f"{process.stdout[-3000:]}\n{process.stderr[-3000:]}", pytrace=False)
    traffic = printed.get("traffic") or []
    if "error" in printed:
        pytest.fail(f"{script} {options.get('scenario')} failed: "
                    f"{json.dumps(printed['error'])[:2000]}\ntraffic:\n{_shown(traffic)}",
                    pytrace=False)
    if found := [p for exchange in traffic for p in conformance_problems(exchange)]:
        pytest.fail(f"{script} {options.get('scenario')} received what does not fit OpenAI's "
                    "schema:\n" + "\n".join(found[:20]), pytrace=False)
    return NodeRun(printed["result"], traffic)


def _shown(traffic: list[dict[str, Any]]) -> str:
    return "\n".join(f"{t['method']} {t['url']} -> {t['status']}: {str(t.get('body'))[:600]}"
                     for t in traffic)


def sse_events(body: str) -> list[tuple[str | None, bytes]]:
    """A stream's events: the `event:` name (None when there is none) and the `data:`."""
    events = []
    for block in re.split(r"\r?\n\r?\n", body):
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, "\n".join(data).encode()))
    return events


def conformance_problems(exchange: dict[str, Any]) -> list[str]:
    """What in one recorded answer breaks OpenAI's schema: a body as a whole, a stream event
    by event (each event's `event:` name must be its data's `type`, as OpenAI sends it)."""
    where = f"{exchange['method']} {exchange['url']}"
    path = re.sub(r"^https?://[^/]+", "", exchange["url"]).split("?")[0]
    body = exchange.get("body") or ""
    if re.search(r"/v1/responses/[^/]+(/input_items)?$", path):
        return [f"{where}: {p}" for p in _stored_problems(exchange, path, body)]
    if not exchange["contentType"].startswith("text/event-stream"):
        return [f"{where}: {p}" for p in openai_conformance.body_problems(
            path, exchange["status"], exchange["contentType"], body.encode())]
    found = []
    for name, data in sse_events(body):
        wrong = openai_conformance.event_problems(data, path)
        found += [f"{where}: {p}" for p in wrong]
        try:
            with_type = json.loads(data)
        except ValueError:
            continue  # event_problems said so
        if wrong and isinstance(with_type, dict) and isinstance(with_type.get("response"), dict):
            # "not valid under any of the given schemas" names no field: the response it
            # carries, checked alone, does
            found += [f"{where}: {with_type.get('type')}'s {p}" for p in
                      openai_conformance.problems("Response", with_type["response"])]
        if name is not None and isinstance(with_type, dict) and name != with_type.get("type"):
            found.append(f"{where}: event {name!r} carries data of type "
                         f"{with_type.get('type')!r}")
    return found


def _stored_problems(exchange: dict[str, Any], path: str, body: str) -> list[str]:
    """A stored response's routes: a retrieved one is a Response, a refusal an
    ErrorResponse; the input_items list and the deletion's answer are not in the extracted
    schema (tests/schema/extract.py's ROOTS), so their fields are the tests' to assert."""
    try:
        document = json.loads(body)
    except ValueError:
        return [f"HTTP {exchange['status']} with a body that is not JSON: {body[:200]!r}"]
    if exchange["status"] >= 400:
        return openai_conformance.problems("ErrorResponse", document)
    if exchange["method"] == "GET" and not path.endswith("/input_items"):
        return openai_conformance.problems("Response", document)
    return []


def tool_exchanges(body: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """The tool calls and the tool results a provider request carries, either wire format:
    (name, arguments, id) and (id, result text)."""
    calls: list[Any] = []
    results: list[Any] = []
    given = body.get("input")
    for item in given if isinstance(given, list) else []:  # Responses
        if item.get("type") == "function_call":
            calls.append((item["name"], json.loads(item["arguments"]), item["call_id"]))
        elif item.get("type") == "function_call_output":
            results.append((item["call_id"], item["output"]))
    for message in body.get("messages") or []:  # Anthropic
        for block in message["content"] if isinstance(message["content"], list) else []:
            if block.get("type") == "tool_use":
                calls.append((block["name"], block["input"], block["id"]))
            elif block.get("type") == "tool_result":
                content = block.get("content")
                text = content if isinstance(content, str) else "".join(
                    b.get("text", "") for b in content or [])
                results.append((block["tool_use_id"], text))
    return calls, results
