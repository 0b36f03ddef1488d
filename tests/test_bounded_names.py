"""What a client chooses reaches the usage log, the process log and errors bounded and clean.

A tenant once wiped the usage log with four 9 MB model names: each was logged
and echoed whole, and the log rotated every earlier line away. A name with a
newline or an ANSI escape could forge a line in a terminal or a log file.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.demo.mockprovider import MockProvider
from gateway.untrusted import bounded
from tests.conftest import RedisServer, gateway_running, sha

KEY = "sk-test-bounded"
AUTH = {"authorization": f"Bearer {KEY}"}
HUGE = 9 * 1024 * 1024
# A forged process-log line, a forged usage-log line, ANSI colour and a cursor-up, a bell.
INJECTED = ("fast\n2026-12-01 09:00:00,000 ERROR gateway[1]: forged line\r\n"
            '{"request_id":"forged","cost_usd":0}\n\x1b[31mred\x1b[1A\x07\u2028end')


def router_yaml(mock_url: str, redis_url: str, tmp: Path) -> str:
    return "\n".join([
        "providers:",
        f"  openai: {{api_key: sk-provider-bounded, api_base: '{mock_url}/v1'}}",
        "models:",
        "  first: {provider: openai, model: model-first, "
        "price: {input_per_mtok: 1, output_per_mtok: 2}}",
        "tiers:",
        "  fast: [first]",
        "keys:",
        f"  - {{name: team-a, key_sha256: {sha(KEY)}}}",
        "settings:",
        f"  redis_url: '{redis_url}'",
        "  max_body_mb: 10",
        f"  usage_log: {tmp}/usage.jsonl",
        "  usage_log_max_mb: 5",  # a 9 MB line would rotate the log at once
        "  usage_log_keep: 1",
        "  cache: {enabled: false}",
        "  retry: {max_retries: 0}",
    ]) + "\n"


class Running:
    def __init__(self, url: str, tmp: Path):
        self.url, self.tmp = url, tmp
        self.usage, self.log = tmp / "usage.jsonl", tmp / "gateway.log"

    def chat(self, model: str, **fields: Any) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], **fields}
        return httpx.post(f"{self.url}/v1/chat/completions", headers=AUTH, json=body,
                          timeout=30)

    def line(self, request_id: str, within_s: float = 5) -> dict[str, Any]:
        """The request's usage-log line (a thread writes it: wait for it)."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            for raw in self.usage.read_bytes().splitlines() if self.usage.exists() else []:
                if request_id.encode() in raw:
                    assert len(raw) < 4096, f"a usage-log line of {len(raw)} bytes"
                    return json.loads(raw)  # type: ignore[no-any-return]
            time.sleep(0.05)
        raise AssertionError(f"no usage-log line for {request_id} in {self.usage}")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, mock: MockProvider,
       redis_server: RedisServer) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("bounded")
    config = tmp / "router.yaml"
    config.write_text(router_yaml(mock.base_url, redis_server.url, tmp))  # type: ignore[attr-defined]
    with gateway_running(config, tmp / "gateway.log") as url:
        yield Running(url, tmp)


def no_control_characters(text: str) -> bool:
    return not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text)


def test_a_9_mb_model_name_gets_a_small_unknown_model_error_and_a_small_log_line(
        gw: Running) -> None:
    earlier = gw.chat("fast")
    assert earlier.status_code == 200

    ids = []
    for i in range(4):  # four were enough to rotate every earlier line away
        response = gw.chat(chr(ord("a") + i) * HUGE)
        assert response.status_code == 404
        assert len(response.content) < 2048, f"{len(response.content)} bytes echoed"
        error = response.json()["error"]
        assert error["code"] == "model_not_found"
        assert error["message"].startswith(f"unknown model or tier '{chr(ord('a') + i) * 64}")
        assert "… (9437184 characters)'" in error["message"]
        assert "this key may use: fast, first" in error["message"]
        ids.append(response.headers["x-request-id"])

    for request_id in ids:
        requested = gw.line(request_id)["requested"]
        assert len(requested) < 200
        assert requested.endswith("… (9437184 characters)")
    assert gw.line(earlier.headers["x-request-id"])["status"] == 200  # still in usage.jsonl
    assert not (gw.tmp / "usage.jsonl.1").exists()  # nothing was rotated away


def test_a_model_name_with_newlines_and_escapes_forges_no_line(gw: Running) -> None:
    before = gw.log.read_text()
    response = gw.chat(INJECTED, user=INJECTED)
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert no_control_characters(message), message
    assert "fast\\n2026-12-01" in message and "\\x1b[31mred" in message  # shown, escaped

    line = gw.line(response.headers["x-request-id"])
    assert no_control_characters(line["requested"]), line["requested"]
    assert "\\x1b[31m" in line["requested"]
    rows = [json.loads(row) for row in gw.usage.read_bytes().splitlines()]
    assert [row["request_id"] for row in rows if row["request_id"] == "forged"] == []
    assert "user" not in line  # the `user` field is passed on, never logged

    time.sleep(0.5)  # the process log, written by the same process, has had its chance
    added = gw.log.read_text()[len(before):]
    assert "forged line" not in added and "\x1b" not in added
    assert not re.search(r"^\S+ \S+ ERROR gateway\[1\]", gw.log.read_text(), re.M)


@pytest.mark.parametrize("where", ["role", "path"])
def test_other_echoed_client_strings_are_bounded_and_clean(gw: Running, where: str) -> None:
    if where == "role":
        response = httpx.post(f"{gw.url}/v1/chat/completions", headers=AUTH, timeout=30,
                              json={"model": "fast",
                                    "messages": [{"role": INJECTED + "x" * HUGE,
                                                  "content": "Hi"}]})
        assert response.status_code == 400
    else:
        response = httpx.get(f"{gw.url}/v1/%1b%5b31m%0aforged" + "x" * 20000, headers=AUTH)
        assert response.status_code == 404
    assert len(response.content) < 2048, f"{len(response.content)} bytes echoed"
    message = response.json()["error"]["message"]
    assert no_control_characters(message), message
    assert "characters)" in message


@pytest.mark.parametrize("text, shown", [
    ("fast", "fast"),
    ("a" * 128, "a" * 128),
    ("a" * 129, "a" * 128 + "… (129 characters)"),
    ("x\n\r\t\x1b[0m\x07", "x\\n\\r\\t\\x1b[0m\\x07"),
    ("\u202eevil\u2028\u200b", "\\u202eevil\\u2028\\u200b"),  # bidi override, separators
    ("\ud800", "\\ud800"),  # a lone surrogate: no UTF-8 line could hold it
    ("\n" * 100, "\\n" * 64 + "… (100 characters)"),  # escapes count toward the bound
    ("naïve 模型 ✓", "naïve 模型 ✓"),  # printable text of any script is left alone
])
def test_bounded_shows_a_string_short_and_escaped(text: str, shown: str) -> None:
    assert bounded(text) == shown
