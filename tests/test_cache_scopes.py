"""Cache scopes, end to end: which keys share entries, and that no tenant picks another's answer.

Every test runs a real gateway on a real Redis with several keys, talks to it with the
openai SDK, and has the mock provider give each call a different answer, so an answer
served from someone else's entry shows.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import RedisServer, gateway_running, sha

MASTER_KEY = "sk-master-cache-scopes"
PROVIDER_MODEL = "gpt-4o-mini"
NAMES = ("team-a", "team-b", "team-c", "team-d")


def key_of(name: str) -> str:
    return f"sk-test-scopes-{name}-secret"


def router_yaml(mock_url: str, redis_url: str, scope: str | None = None,
                groups: dict[str, str] | None = None) -> str:
    """`scope`: settings.cache.scope (None: not written, the default); `groups`: key ->
    its cache_scope."""
    groups = groups or {}
    keys = [f"  - {{name: {n}, key_sha256: {sha(key_of(n))}"
            + (f", cache_scope: {groups[n]}" if n in groups else "") + "}" for n in NAMES]
    cache = "{enabled: true" + (f", scope: {scope}" if scope else "") + "}"
    return "\n".join([
        "providers:",
        f"  openai: {{api_key: sk-openai-test, api_base: '{mock_url}/v1'}}",
        "models:",
        "  gpt: {provider: openai, model: gpt-4o-mini}",
        "  embed: {provider: openai, model: text-embedding-3-small}",
        "tiers:",
        "  fast: [gpt]",
        "keys:", *keys,
        "settings:",
        f"  redis_url: '{redis_url}'",
        f"  master_key: {MASTER_KEY}",
        "  retry: {max_retries: 0}",
        "  timeouts: {connect_s: 2, first_token_s: 5, total_s: 10}",
        f"  cache: {cache}",
    ]) + "\n"


class Gateway:
    def __init__(self, url: str, config: Path, mock_url: str, redis_url: str):
        self.url, self.config = url, config
        self.mock_url, self.redis_url = mock_url, redis_url
        self.clients: dict[str, openai.OpenAI] = {}

    def yaml(self, **options: Any) -> str:
        return router_yaml(self.mock_url, self.redis_url, **options)

    def client(self, name: str) -> openai.OpenAI:
        if name not in self.clients:
            self.clients[name] = openai.OpenAI(base_url=f"{self.url}/v1", api_key=key_of(name),
                                               max_retries=0)
        return self.clients[name]

    def ask(self, name: str, prompt: str, **options: Any) -> tuple[str | None, str]:
        """The answer `name` is given, and x-gateway-cache."""
        raw = self.client(name).chat.completions.with_raw_response.create(
            model="fast", messages=[{"role": "user", "content": prompt}], **options)
        return raw.parse().choices[0].message.content, raw.headers["x-gateway-cache"]

    def reroll(self, name: str, prompt: str) -> tuple[str | None, str]:
        return self.ask(name, prompt, extra_headers={"Cache-Control": "no-cache"})

    def apply(self, text: str) -> None:
        """Write router.yaml and wait (bounded) until it serves."""
        fresh = self.config.with_suffix(".tmp")
        fresh.write_text(text)
        fresh.replace(self.config)
        digest = hashlib.sha256(text.encode()).hexdigest()
        deadline = time.monotonic() + 5
        while self.admin_config()["sha256"] != digest:
            assert time.monotonic() < deadline, "router.yaml was not reloaded within 5 s"
            time.sleep(0.05)

    def admin_config(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/admin/config",
                             headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=5)
        assert response.status_code == 200, response.text
        shown: dict[str, Any] = response.json()
        return shown

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


@pytest.fixture
def start(mock: MockProvider, redis_server: RedisServer, tmp_path: Path,
          ) -> Iterator[Callable[..., Gateway]]:
    """A gateway on the session's Redis, with the router.yaml `router_yaml(**options)` makes."""
    mock_url: str = mock.base_url  # type: ignore[attr-defined]
    with contextlib.ExitStack() as stack:
        def make(**options: Any) -> Gateway:
            config = tmp_path / "router.yaml"
            config.write_text(router_yaml(mock_url, redis_server.url, **options))
            url = stack.enter_context(gateway_running(config, tmp_path / "gateway.log"))
            gateway = Gateway(url, config, mock_url, redis_server.url)
            stack.callback(gateway.close)
            return gateway

        yield make


def samples(mock: MockProvider, count: int = 12) -> None:
    """Every provider call answers differently: `sample 0`, `sample 1`, ..."""
    mock.script(PROVIDER_MODEL, *(Step(text=f"sample {i}") for i in range(count)))


def fresh() -> str:
    return f"What is {uuid.uuid4().hex}?"


def test_by_default_a_key_never_hits_another_keys_entry(
        start: Callable[..., Gateway], mock: MockProvider) -> None:
    gw = start()  # settings.cache.scope not written: the default
    prompt = fresh()
    mock.script(PROVIDER_MODEL, Step(text="team-a's answer"),
                Step(text="team-b's answer", delay_s=0.3))
    assert gw.ask("team-a", prompt) == ("team-a's answer", "miss")
    began = time.monotonic()
    assert gw.ask("team-b", prompt) == ("team-b's answer", "miss")
    # Not even the time taken says that team-a asked the same: team-b waited for its own.
    assert time.monotonic() - began >= 0.3
    assert gw.ask("team-a", prompt) == ("team-a's answer", "hit")
    assert gw.ask("team-b", prompt) == ("team-b's answer", "hit")
    assert len(mock.calls(PROVIDER_MODEL)) == 2


def test_by_default_embeddings_are_not_shared_between_keys(
        start: Callable[..., Gateway], mock: MockProvider) -> None:
    gw = start()
    text = fresh()
    headers = [gw.client(name).embeddings.with_raw_response.create(
        model="embed", input=text).headers["x-gateway-cache"] for name in ("team-a", "team-b")]
    assert headers == ["miss", "miss"]
    assert len(mock.calls("text-embedding-3-small")) == 2


@pytest.mark.parametrize("default", ["key", "shared"])
def test_keys_of_one_group_share_entries_and_no_other_key_sees_them(
        start: Callable[..., Gateway], mock: MockProvider, default: str) -> None:
    gw = start(scope=default, groups={"team-a": "research", "team-b": "research"})
    samples(mock)
    prompt = fresh()
    first, state = gw.ask("team-a", prompt)
    assert state == "miss"
    assert gw.ask("team-b", prompt) == (first, "hit")  # the same group
    c_answer, state = gw.ask("team-c", prompt)  # in no group
    assert state == "miss" and c_answer != first
    d_answer, state = gw.ask("team-d", prompt)
    if default == "shared":  # the keys in no group share the shared scope
        assert (d_answer, state) == (c_answer, "hit")
    else:
        assert state == "miss" and d_answer not in (first, c_answer)
    # ... and the group does not read the shared or the per-key entries either
    other = fresh()
    c_first, _ = gw.ask("team-c", other)
    b_answer, state = gw.ask("team-b", other)
    assert state == "miss" and b_answer != c_first


# Where team-b sits relative to team-a, the attacker, under each scope.
SCOPES: dict[str, dict[str, Any]] = {
    "shared": {"scope": "shared"},
    "group": {"groups": {"team-a": "research", "team-b": "research"}},
    "key": {"scope": "key"},
}


@pytest.mark.parametrize("scope", SCOPES)
def test_rerolling_with_no_cache_never_changes_what_another_key_is_served(
        start: Callable[..., Gateway], mock: MockProvider, scope: str) -> None:
    gw = start(**SCOPES[scope])
    samples(mock)
    prompt = fresh()
    gw.ask("team-a", prompt)
    served_to_b, _ = gw.ask("team-b", prompt)
    rerolled = [gw.reroll("team-a", prompt) for _ in range(4)]  # until team-a likes one
    assert [state for _, state in rerolled] == ["bypass"] * 4
    assert len({text for text, _ in rerolled} | {served_to_b}) == 5  # fresh answers each time
    assert gw.ask("team-b", prompt) == (served_to_b, "hit")
    assert gw.ask("team-c", prompt)[0] not in {text for text, _ in rerolled}
    # team-a's refresh holds for team-a itself: its own layer answers it from now on.
    assert gw.ask("team-a", prompt) == (rerolled[-1][0], "hit")


@pytest.mark.parametrize("scope", SCOPES)
def test_rerolling_before_anyone_asked_does_not_seed_another_keys_answer(
        start: Callable[..., Gateway], mock: MockProvider, scope: str) -> None:
    gw = start(**SCOPES[scope])
    samples(mock)
    prompt = fresh()
    rerolled = {gw.reroll("team-a", prompt)[0] for _ in range(3)}
    answer, state = gw.ask("team-b", prompt)
    assert state == "miss" and answer not in rerolled
    assert len(mock.calls(PROVIDER_MODEL)) == 4


def test_a_reloaded_scope_takes_effect_on_the_next_request(
        start: Callable[..., Gateway], mock: MockProvider) -> None:
    gw = start()
    samples(mock)
    prompt = fresh()
    gw.ask("team-a", prompt)
    assert gw.ask("team-b", prompt)[1] == "miss"
    shown = gw.admin_config()["config"]
    assert shown["settings"]["cache"]["scope"] == "key"
    assert [k["cache_scope"] for k in shown["keys"]] == [None] * 4

    gw.apply(gw.yaml(scope="shared"))
    assert gw.admin_config()["config"]["settings"]["cache"]["scope"] == "shared"
    shared = fresh()
    first, _ = gw.ask("team-a", shared)
    assert gw.ask("team-b", shared) == (first, "hit")

    gw.apply(gw.yaml(groups={"team-c": "ops", "team-d": "ops"}))
    assert [k["cache_scope"] for k in gw.admin_config()["config"]["keys"]] == [
        None, None, "ops", "ops"]
    assert gw.ask("team-b", fresh())[1] == "miss"  # per key again
    grouped = fresh()
    first, _ = gw.ask("team-c", grouped)
    assert gw.ask("team-d", grouped) == (first, "hit")
    assert gw.ask("team-b", grouped)[1] == "miss"


def test_the_store_holds_no_key_secret_and_versioned_cache_keys(
        start: Callable[..., Gateway], redis_server: RedisServer) -> None:
    gw = start(scope="shared", groups={"team-c": "ops"})
    store = redis.Redis.from_url(redis_server.url)
    try:
        before = set(store.scan_iter("gw:cache:*"))  # other tests' entries
        for name in NAMES:
            gw.ask(name, fresh())
            gw.reroll(name, fresh())
        keys = set(store.scan_iter("gw:cache:*")) - before
        values = [store.get(k) or b"" for k in keys]
    finally:
        store.close()
    assert len(keys) == 2 * len(NAMES) and all(k.startswith(b"gw:cache:v2:") for k in keys)
    for name in NAMES:
        for text in (key_of(name), sha(key_of(name)), name):
            assert not any(text.encode() in blob for blob in [*keys, *values]), text


def test_gateway_check_shows_who_shares_the_cache(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(router_yaml("http://127.0.0.1:9", "redis://127.0.0.1:9/0",
                                  groups={"team-b": "research", "team-c": "research"}))
    checked = subprocess.run([sys.executable, "-m", "gateway", "check", "--config",
                              str(config)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert "cache: per key (settings.cache.scope: key), except group research: team-b, " \
           "team-c" in checked.stdout
