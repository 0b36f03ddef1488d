"""A router.yaml read half-written never gives a key more access or money than a whole file.

The file is written in place in two parts, with a pause between them, while
requests are sent: whatever the watcher reads meanwhile, no request is served
with more than the old or the new complete file gives.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.demo.mockprovider import MockProvider
from tests.conftest import RedisServer, sha, start_gateway, wait_for

MASTER_KEY = "sk-master-partial"
ADMIN = {"authorization": f"Bearer {MASTER_KEY}"}


def key_of(name: str) -> str:
    return f"sk-test-partial-{name}"


def router_yaml(mock_url: str, redis_url: str, tier: tuple[str, ...] = ("first", "second"),
                budget_a: float = 0, extra_keys: tuple[str, ...] = ()) -> str:
    """Block style, keys last: a file cut at any line boundary is still valid YAML.

    team-b may use the tier `fast` only; team-a has a budget of `budget_a` dollars
    (0: every request is refused for money).
    """
    lines = [
        "settings:",
        f"  redis_url: '{redis_url}'",
        f"  master_key: {MASTER_KEY}",
        "  cache:",
        "    enabled: false",
        "  retry:",
        "    max_retries: 0",
        "  timeouts: {connect_s: 2, first_token_s: 5, total_s: 20}",
        "providers:",
        "  openai:",
        "    api_key: sk-provider-partial",
        f"    api_base: '{mock_url}/v1'",
        "models:",
        "  first:",
        "    provider: openai",
        "    model: model-first",
        "    price: {input_per_mtok: 1, output_per_mtok: 2}",
        "  second:",
        "    provider: openai",
        "    model: model-second",
        "    price: {input_per_mtok: 1, output_per_mtok: 2}",
        "tiers:",
        "  fast:",
        *[f"    - {name}" for name in tier],
        "keys:",
        *[f"  - {{name: {name}, key_sha256: {sha(key_of(name))}}}" for name in extra_keys],
        "  - name: team-b",
        f"    key_sha256: {sha(key_of('team-b'))}",
        "    allow:",
        "      - fast",
        "  - name: team-a",
        f"    key_sha256: {sha(key_of('team-a'))}",
        f"    daily_budget_usd: {budget_a:g}",
    ]
    return "\n".join(lines) + "\n"


def ask(url: str, name: str, model: str) -> tuple[int, str]:
    """(status, the router.yaml model that served or the error's code)."""
    response = httpx.post(f"{url}/v1/chat/completions", timeout=10,
                          headers={"authorization": f"Bearer {key_of(name)}"},
                          json={"model": model, "messages": [{"role": "user", "content": "Hi"}]})
    if response.status_code == 200:
        return 200, response.headers["x-gateway-model"]
    return response.status_code, response.json()["error"]["code"]



class Gateway:
    def __init__(self, tmp: Path, mock_url: str, redis_url: str):
        self.config, self.log = tmp / "router.yaml", tmp / "gateway.log"
        self.mock_url, self.redis_url = mock_url, redis_url
        self.config.write_text(self.yaml())
        self.process, self.url = start_gateway(self.config, self.log)

    def yaml(self, **changes: object) -> str:
        return router_yaml(self.mock_url, self.redis_url, **changes)  # type: ignore[arg-type]

    def logged(self) -> str:
        return self.log.read_text()

    def admin_config(self) -> dict[str, object]:
        response = httpx.get(f"{self.url}/admin/config", headers=ADMIN)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def reset(self) -> None:
        """Back to the original file, saved whole and applied (SIGHUP), with nothing held."""
        fresh = self.config.with_suffix(".tmp")
        fresh.write_text(self.yaml())
        os.replace(fresh, self.config)
        self.process.send_signal(signal.SIGHUP)
        wait_for(lambda: ask(self.url, "team-b", "fast") == (200, "first"), within_s=5)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, mock: MockProvider,
            redis_server: RedisServer) -> Iterator[Gateway]:
    gateway = Gateway(tmp_path_factory.mktemp("partial"), mock.base_url,  # type: ignore[attr-defined]
                      redis_server.url)
    try:
        yield gateway
    finally:
        gateway.process.terminate()
        gateway.process.wait(10)


@pytest.fixture
def gw(running: Gateway) -> Iterator[Gateway]:
    yield running
    assert running.process.poll() is None, running.logged()
    running.reset()


# Where the first part ends: before or after a marker of the new file. Each cut leaves
# valid YAML that, served, would widen someone: team-a unbudgeted, or team-b unrestricted.
CUTS = {
    "before team-a's daily_budget_usd line": ("    daily_budget_usd:", False),
    "inside team-a's daily_budget_usd line": ("    daily_budget_usd:", True),
    "before team-b's allow list": ("    allow:", False),
    "after team-b's `allow:`": ("    allow:\n", True),
}
# What the old and the new complete file both answer: a refusal, never an answer.
PROBES = {"daily_budget_usd": ("team-a", "fast", (429, "budget_exceeded")),
          "allow": ("team-b", "second", (403, "model_not_allowed"))}


# A pause longer than any settle time: holding a widening edit does not depend on time.
@pytest.mark.parametrize("cut, pause_s", [*((cut, 2.5) for cut in CUTS),
                                          ("before team-a's daily_budget_usd line", 6)])
def test_a_file_written_in_two_parts_never_widens_a_key_during_the_pause(
        gw: Gateway, cut: str, pause_s: float) -> None:
    marker, after = CUTS[cut]
    name, model, refused = PROBES["allow" if "allow" in marker else "daily_budget_usd"]
    assert ask(gw.url, name, model) == refused
    old_log = len(gw.logged())
    new = gw.yaml(tier=("second", "first"))  # the edit: a reordered tier, nobody widened
    at = new.index(marker) + (len(marker) if after else 0)

    seen: list[tuple[int, str]] = []
    with gw.config.open("w") as out:  # in place, as `cat >`, nano or a slow writer does
        out.write(new[:at])
        out.flush()
        started = time.monotonic()
        while time.monotonic() - started < pause_s:  # the pause: ask all along
            seen.append(ask(gw.url, name, model))
            time.sleep(0.05)
        out.write(new[at:])

    assert len(seen) >= 10
    assert set(seen) == {refused}, f"served during the pause: {sorted(set(seen))}"
    logged = gw.logged()[old_log:]
    assert "held" in logged, logged  # the half-written file was read, and not applied
    # The whole file then applies by itself (it widens nobody), in bounded time.
    wait_for(lambda: ask(gw.url, "team-b", "fast") == (200, "second"), within_s=3)
    assert ask(gw.url, name, model) == refused
    assert ask(gw.url, "team-a", "fast") == (429, "budget_exceeded")
    assert gw.admin_config()["held_reload"] is None


def write_in_place(path: Path, text: str) -> None:
    with path.open("w") as out:
        out.write(text)


def save_by_rename(path: Path, text: str) -> None:
    fresh = path.with_suffix(".tmp")
    fresh.write_text(text)
    os.replace(fresh, path)


def test_a_widening_edit_written_in_place_waits_for_sighup_and_says_so(gw: Gateway) -> None:
    widened = gw.yaml(budget_a=5, extra_keys=("team-c",))
    write_in_place(gw.config, widened)
    wait_for(lambda: gw.admin_config()["held_reload"] is not None, within_s=3)
    time.sleep(1)  # two more polls: still held

    assert ask(gw.url, "team-c", "fast") == (401, "invalid_api_key")
    assert ask(gw.url, "team-a", "fast") == (429, "budget_exceeded")
    held = gw.admin_config()["held_reload"]
    assert isinstance(held, dict)
    assert held["widens"] == ["key team-c added", "key team-a: daily budget raised"]
    log = gw.logged()
    assert "router.yaml was written in place and widens access or money (key team-c added; " \
           "key team-a: daily budget raised): held" in log
    assert "SIGHUP or POST /admin/reload" in log

    gw.process.send_signal(signal.SIGHUP)  # the operator says the file is whole
    wait_for(lambda: ask(gw.url, "team-c", "fast")[0] == 200, within_s=3)
    assert ask(gw.url, "team-a", "fast") == (200, "first")
    assert gw.admin_config()["held_reload"] is None


def test_a_widening_edit_saved_by_rename_applies_within_two_seconds(gw: Gateway) -> None:
    save_by_rename(gw.config, gw.yaml(budget_a=5, extra_keys=("team-c",)))
    elapsed = wait_for(lambda: ask(gw.url, "team-c", "fast")[0] == 200, within_s=2)
    assert ask(gw.url, "team-a", "fast") == (200, "first")
    print(f"applied {elapsed:.2f} s after the rename")


def test_a_narrowing_edit_written_in_place_applies_within_two_seconds(gw: Gateway) -> None:
    narrowed = gw.yaml(tier=("second",))  # team-b loses `first`; team-a goes
    narrowed = narrowed[:narrowed.index("  - name: team-a")]
    write_in_place(gw.config, narrowed)
    elapsed = wait_for(lambda: ask(gw.url, "team-b", "fast") == (200, "second"), within_s=2)
    assert ask(gw.url, "team-a", "fast") == (401, "invalid_api_key")
    assert gw.admin_config()["held_reload"] is None
    print(f"applied {elapsed:.2f} s after the write")
