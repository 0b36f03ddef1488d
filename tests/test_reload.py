"""Hot reload: edit router.yaml, and a running gateway (same process) reroutes without a restart."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import RedisServer, sha, start_gateway, wait_for

MASTER_KEY = "sk-master-reload"
PROVIDER_SECRET = "sk-provider-secret-reload"
HEADER_SECRET = "header-secret-reload"
ADMIN = {"authorization": f"Bearer {MASTER_KEY}"}
PRICE = "price: {input_per_mtok: 1, output_per_mtok: 2}"


def key_of(name: str) -> str:
    return f"sk-test-reload-{name}"


def router_yaml(mock_url: str, redis_url: str, tier: tuple[str, ...] = ("first", "second"),
                keys: dict[str, float | None] | None = None, settings: str = "",
                watch: bool = True) -> str:
    keys = {"team-a": None, "team-b": None} if keys is None else keys
    key_lines = [f"  - {{name: {name}, key_sha256: {sha(key_of(name))}"
                 + (f", daily_budget_usd: {budget}" if budget is not None else "") + "}"
                 for name, budget in keys.items()]
    return "\n".join([
        "providers:",
        f"  openai: {{api_key: {PROVIDER_SECRET}, api_base: '{mock_url}/v1',",
        f"           headers: {{x-org-token: {HEADER_SECRET}}}}}",
        "models:",
        f"  first: {{provider: openai, model: model-first, {PRICE}}}",
        f"  second: {{provider: openai, model: model-second, {PRICE}}}",
        "tiers:",
        f"  fast: [{', '.join(tier)}]",
        "keys:", *key_lines,
        "settings:",
        f"  redis_url: '{redis_url}'",
        f"  master_key: {MASTER_KEY}",
        f"  watch_config: {'true' if watch else 'false'}",
        "  timeouts: {connect_s: 2, first_token_s: 5, total_s: 20}",
        settings or "  cache: {enabled: false}\n  retry: {max_retries: 0}",
    ]) + "\n"


def write(path: Path, text: str, how: str = "rename") -> None:
    """As editors save: a new file renamed over the old one, or the same file rewritten."""
    if how == "rename":
        fresh = path.with_suffix(".tmp")
        fresh.write_text(text)
        os.replace(fresh, path)
    else:
        with path.open("w") as out:
            out.write(text)


def admin_config(base_url: str) -> dict[str, Any]:
    response = httpx.get(f"{base_url}/admin/config", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()



def served_by(base_url: str, name: str = "team-a", **options: Any) -> str:
    """The router.yaml model that answered a request for the tier `fast`."""
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key=key_of(name), max_retries=0,
                       **options) as client:
        answer = client.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "Who answers?"}])
    return answer.model


class Gateway:
    def __init__(self, config: Path, log: Path, mock_url: str, redis_url: str, workers: int = 1,
                 watch: bool = True):
        self.config, self.log, self.watch = config, log, watch
        self.mock_url, self.redis_url = mock_url, redis_url
        config.write_text(self.yaml())
        self.process, self.url = start_gateway(config, log, workers=workers)

    def yaml(self, **changes: Any) -> str:
        return router_yaml(self.mock_url, self.redis_url, watch=self.watch, **changes)

    def apply(self, text: str) -> None:
        """Write `text` and have it serve: by the watcher, or by POST /admin/reload."""
        write(self.config, text)
        if not self.watch:
            httpx.post(f"{self.url}/admin/reload", headers=ADMIN).raise_for_status()
        digest = hashlib.sha256(text.encode()).hexdigest()
        wait_for(lambda: admin_config(self.url)["sha256"] == digest, within_s=5)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@contextlib.contextmanager
def running(tmp_path_factory: pytest.TempPathFactory, mock: MockProvider,
            redis_server: RedisServer, **options: Any) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("reload")
    gateway = Gateway(tmp / "router.yaml", tmp / "gateway.log", mock.base_url,  # type: ignore[attr-defined]
                      redis_server.url, **options)
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory, mock: MockProvider,
            redis_server: RedisServer) -> Iterator[Gateway]:
    with running(tmp_path_factory, mock, redis_server) as gateway:
        yield gateway


@pytest.fixture
def gw(watched: Gateway) -> Iterator[Gateway]:
    """The watched gateway, back on its original file after the test."""
    yield watched
    watched.apply(watched.yaml())
    assert watched.process.poll() is None, watched.log.read_text()


@pytest.mark.parametrize("how", ["rename", "in_place"])
def test_reordering_a_tier_reroutes_within_two_seconds_without_a_restart(
        gw: Gateway, how: str) -> None:
    pid = admin_config(gw.url)["pid"]
    assert pid == gw.process.pid
    assert served_by(gw.url) == "first"

    write(gw.config, gw.yaml(tier=("second", "first")), how)
    elapsed = wait_for(lambda: served_by(gw.url) == "second", within_s=2)

    assert gw.process.poll() is None
    after = admin_config(gw.url)
    assert after["pid"] == pid
    assert after["config"]["tiers"] == {"fast": ["second", "first"]}
    assert after["last_reload_error"] is None
    assert "reloaded (file changed): tiers changed: fast" in gw.log.read_text()
    print(f"rerouted {elapsed:.2f} s after the edit")


def test_a_stream_started_before_an_edit_finishes_on_the_old_route(
        gw: Gateway, mock: MockProvider) -> None:
    words = [f"word{i}" for i in range(12)]
    mock.script("model-first", Step(text=" ".join(words), chunk_delay_s=0.25))
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key_of("team-a"),
                       max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="fast", stream=True, messages=[{"role": "user", "content": "Say it slowly"}])
        chunks = iter(raw.parse())
        received = [next(chunks) for _ in range(3)]  # the stream is under way

        gw.apply(gw.yaml(tier=("second", "first")))
        assert served_by(gw.url) == "second"  # new requests take the new route

        received += list(chunks)  # ... while this one goes on where it started
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text == " ".join(words)
    assert received[-1].choices[0].finish_reason == "stop"
    assert raw.headers["x-gateway-model"] == "first"
    assert {c.model for c in received} == {"first"}
    assert len(mock.calls("model-first")) == 1


def test_an_invalid_edit_changes_nothing_and_is_reported_until_fixed(gw: Gateway) -> None:
    broken = gw.yaml(tier=("first", "gpt-5")).replace("  master_key:", "  cach: {}\n  master_key:")
    write(gw.config, broken)
    wait_for(lambda: admin_config(gw.url)["last_reload_error"] is not None, within_s=3)

    error = admin_config(gw.url)["last_reload_error"]
    problems = "\n".join(error["problems"])
    assert "tiers.fast[1]: unknown model 'gpt-5'" in problems
    assert "settings.cach: unknown field" in problems
    assert re.match(r"\d{4}-\d\d-\d\dT", error["at"])
    assert served_by(gw.url) == "first"  # the old configuration serves on
    assert httpx.get(f"{gw.url}/ready").status_code == 200
    log = gw.log.read_text()
    assert "not reloaded (file changed): 2 problem(s)" in log
    assert "tiers.fast[1]: unknown model 'gpt-5'" in log

    gw.apply(gw.yaml(tier=("second",)))  # the next valid edit clears the error
    assert admin_config(gw.url)["last_reload_error"] is None
    assert served_by(gw.url) == "second"


def test_a_key_added_or_removed_or_rebudgeted_takes_effect(gw: Gateway) -> None:
    assert served_by(gw.url, "team-b") == "first"
    with pytest.raises(openai.AuthenticationError):
        served_by(gw.url, "team-c")

    gw.apply(gw.yaml(keys={"team-a": 0, "team-c": None}))

    assert served_by(gw.url, "team-c") == "first"
    with pytest.raises(openai.AuthenticationError):
        served_by(gw.url, "team-b")
    with pytest.raises(openai.RateLimitError) as refused:  # team-a's budget is now $0
        served_by(gw.url, "team-a")
    assert refused.value.code == "budget_exceeded"


def test_cache_and_retry_settings_reload(gw: Gateway, mock: MockProvider) -> None:
    gw.apply(gw.yaml(settings="  cache: {enabled: true}\n  retry: {max_retries: 1, "
                              "initial_backoff_s: 0, max_backoff_s: 0}"))
    mock.script("model-first", Step(status=503))
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key_of("team-a"),
                       max_retries=0) as client:
        def ask() -> Any:
            return client.chat.completions.with_raw_response.create(
                model="fast", messages=[{"role": "user", "content": "Cached after a retry?"}])
        first, second = ask(), ask()
    assert first.headers["x-gateway-attempts"] == "2"  # one retry on the same model
    assert first.headers["x-gateway-model"] == "first"
    assert (first.headers["x-gateway-cache"], second.headers["x-gateway-cache"]) == ("miss", "hit")


def test_a_setting_that_needs_a_restart_says_so_and_the_store_serves_on(gw: Gateway) -> None:
    gw.apply(gw.yaml().replace(gw.redis_url, "redis://:store-secret@127.0.0.1:1/0"))

    shown = admin_config(gw.url)
    assert shown["pending_restart"] == ["settings.redis_url"]
    assert shown["config"]["settings"]["redis_url"] == gw.redis_url  # what actually serves
    assert httpx.get(f"{gw.url}/ready").status_code == 200
    assert served_by(gw.url) == "first"
    log = gw.log.read_text()
    assert "settings.redis_url changed in router.yaml" in log
    assert "takes effect when the gateway restarts" in log
    assert "store-secret" not in log


def test_admin_config_shows_the_effective_config_with_every_secret_redacted(
        gw: Gateway) -> None:
    response = httpx.get(f"{gw.url}/admin/config", headers=ADMIN)
    assert response.status_code == 200
    for secret in (PROVIDER_SECRET, HEADER_SECRET, MASTER_KEY, sha(key_of("team-a"))):
        assert secret not in response.text
    shown = response.json()
    assert shown["path"] == str(gw.config)
    assert shown["sha256"] == hashlib.sha256(gw.config.read_bytes()).hexdigest()
    config = shown["config"]
    assert config["providers"]["openai"]["api_key"] == "<redacted>"
    assert config["providers"]["openai"]["headers"] == {"x-org-token": "<redacted>"}
    assert config["settings"]["master_key"] == "<redacted>"
    assert config["models"]["first"]["price"]["input_per_mtok"] == 1
    assert [k["name"] for k in config["keys"]] == ["team-a", "team-b"]
    assert config["settings"]["cache"]["ttl_s"] == 86400  # defaults are shown too


@pytest.mark.parametrize("method, path", [("GET", "/admin/config"), ("POST", "/admin/reload")])
@pytest.mark.parametrize("headers", [{}, {"authorization": f"Bearer {key_of('team-a')}"}])
def test_admin_needs_the_master_key(gw: Gateway, method: str, path: str,
                                    headers: dict[str, str]) -> None:
    response = httpx.request(method, f"{gw.url}{path}", headers=headers)
    assert response.status_code == 401
    assert "master key" in response.json()["error"]["message"]


# Without a master key, /admin answers callers on this machine only: tests/test_operator_access.py


# --- reloads on demand: SIGHUP and POST /admin/reload, with the watcher off ---

@pytest.fixture(scope="module")
def unwatched(tmp_path_factory: pytest.TempPathFactory, mock: MockProvider,
              redis_server: RedisServer) -> Iterator[Gateway]:
    with running(tmp_path_factory, mock, redis_server, watch=False) as gateway:
        yield gateway


@pytest.fixture
def on_demand(unwatched: Gateway) -> Iterator[Gateway]:
    yield unwatched
    unwatched.apply(unwatched.yaml())


def test_sighup_reloads_in_the_same_process(on_demand: Gateway) -> None:
    write(on_demand.config, on_demand.yaml(tier=("second", "first")))
    time.sleep(1.5)  # three polls' worth: watch_config: false leaves the edit alone
    assert served_by(on_demand.url) == "first"

    on_demand.process.send_signal(signal.SIGHUP)
    wait_for(lambda: served_by(on_demand.url) == "second", within_s=2)
    assert on_demand.process.poll() is None
    assert admin_config(on_demand.url)["pid"] == on_demand.process.pid
    assert "reloaded (SIGHUP)" in on_demand.log.read_text()


def test_post_admin_reload_applies_the_file_before_it_answers(on_demand: Gateway) -> None:
    write(on_demand.config, on_demand.yaml(tier=("second",), keys={"team-a": None}))
    response = httpx.post(f"{on_demand.url}/admin/reload", headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "reloaded"
    assert body["changes"] == ["tiers changed: fast", "keys removed: team-b"]
    assert served_by(on_demand.url) == "second"  # at once: no waiting for a poll

    again = httpx.post(f"{on_demand.url}/admin/reload", headers=ADMIN).json()
    assert again["status"] == "unchanged" and again["changes"] == []


def test_post_admin_reload_refuses_an_invalid_file_with_every_problem(
        on_demand: Gateway) -> None:
    write(on_demand.config, on_demand.yaml(tier=("nope",)).replace("max_retries: 0",
                                                                   "max_retries: -1"))
    response = httpx.post(f"{on_demand.url}/admin/reload", headers=ADMIN)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_config"
    assert "tiers.fast[0]: unknown model 'nope'" in error["message"]
    assert "settings.retry.max_retries" in error["message"]
    assert "previous configuration keeps serving" in error["message"]
    assert served_by(on_demand.url) == "first"
    assert len(admin_config(on_demand.url)["last_reload_error"]["problems"]) == 2


# --- several workers: every one reloads, none is replaced ---

def worker_pids(log: Path, within_s: float = 20) -> set[int]:
    pattern = re.compile(r"gateway\[(\d+)\]: gateway ready")
    wait_for(lambda: len(set(pattern.findall(log.read_text()))) == 2, within_s)
    return {int(pid) for pid in pattern.findall(log.read_text())}


def reloaded_pids(log: Path, cause: str, since: int = 0) -> set[int]:
    """The processes that logged a reload for `cause`, after the log's first `since` chars."""
    return {int(pid) for pid in re.findall(rf"gateway\[(\d+)\]: router.yaml reloaded "
                                           rf"\({re.escape(cause)}\)", log.read_text()[since:])}


def all_served_by(url: str, count: int = 24) -> set[str]:
    # A new connection per request, so the kernel spreads them over the workers.
    def one(_: int) -> str:
        return served_by(url, http_client=httpx.Client(headers={"connection": "close"}))

    with ThreadPoolExecutor(max_workers=8) as pool:
        return set(pool.map(one, range(count)))


@pytest.mark.parametrize("watch", [True, False], ids=["file-watched", "on-demand"])
def test_every_worker_reloads_and_none_is_replaced(
        tmp_path_factory: pytest.TempPathFactory, mock: MockProvider,
        redis_server: RedisServer, watch: bool) -> None:
    with running(tmp_path_factory, mock, redis_server, workers=2, watch=watch) as gateway:
        workers = worker_pids(gateway.log)
        assert all_served_by(gateway.url) == {"first"}

        write(gateway.config, gateway.yaml(tier=("second",)))
        if watch:
            cause = "file changed"
        else:  # one worker takes the POST; the supervisor passes SIGHUP to the others
            cause = "SIGHUP"
            httpx.post(f"{gateway.url}/admin/reload", headers=ADMIN).raise_for_status()
        wait_for(lambda: reloaded_pids(gateway.log, cause) | reloaded_pids(
            gateway.log, "POST /admin/reload") == workers, within_s=3)
        assert all_served_by(gateway.url) == {"second"}

        if not watch:  # SIGHUP to `gateway serve` itself reaches every worker too
            write(gateway.config, gateway.yaml(tier=("first",)))
            logged = len(gateway.log.read_text())
            gateway.process.send_signal(signal.SIGHUP)
            wait_for(lambda: reloaded_pids(gateway.log, "SIGHUP", logged) == workers, 3)
            assert all_served_by(gateway.url) == {"first"}
        assert gateway.process.poll() is None
        assert worker_pids(gateway.log) == workers  # the same two processes throughout


def test_serve_with_workers_stops_on_sigterm(tmp_path_factory: pytest.TempPathFactory,
                                             mock: MockProvider,
                                             redis_server: RedisServer) -> None:
    with running(tmp_path_factory, mock, redis_server, workers=2) as gateway:
        workers = worker_pids(gateway.log)
        gateway.process.send_signal(signal.SIGTERM)
        assert gateway.process.wait(15) == 0
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_new_provider_address_takes_new_requests_while_a_stream_ends_on_the_old(
        gw: Gateway, mock: MockProvider) -> None:
    moved = MockProvider()  # where the edit moves the provider to
    moved_url = moved.start_in_thread()
    words = [f"word{i}" for i in range(12)]
    mock.script("model-first", Step(text=" ".join(words), chunk_delay_s=0.25))
    with openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key_of("team-a"),
                       max_retries=0) as client:
        chunks = iter(client.chat.completions.create(
            model="fast", stream=True, messages=[{"role": "user", "content": "Say it slowly"}]))
        received = [next(chunks) for _ in range(3)]  # the stream is under way

        gw.apply(router_yaml(moved_url, gw.redis_url, watch=gw.watch))
        assert served_by(gw.url) == "first"
        assert len(moved.calls("model-first")) == 1  # new requests go to the new address

        received += list(chunks)  # ... while this one ends where it started, uncut
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text == " ".join(words)
    assert received[-1].choices[0].finish_reason == "stop"
    assert len(mock.calls("model-first")) == 1
    assert "reloaded (file changed): providers changed: openai" in gw.log.read_text()
