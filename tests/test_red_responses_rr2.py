"""Red team of the Responses API's conversation state: who can read, continue and delete
a stored response, and what a cache hit, an expiry or a store outage does to that.

Real processes: `gateway serve` on a real Redis, the mock provider behind it, driven by
the official `openai` SDK and raw httpx. Each test names the README promise it attacks.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import REDIS_SERVER, RedisServer, serving, usage_lines_of
from tests.test_responses import KEY, OTHER, router_yaml

NOCACHE = {"cache-control": "no-store"}


def sdk(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def redis_cli(redis: RedisServer, *args: str) -> str:
    """One command to the test's Redis, through the redis-cli that ships beside the server."""
    cli = str(Path(REDIS_SERVER).with_name("redis-cli"))
    return subprocess.run([cli, "-p", str(redis.port), *args], capture_output=True,
                          text=True, timeout=10, check=True).stdout


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of this module's own: tests here scan its keys."""
    server = RedisServer(tmp_path_factory.mktemp("red-redis")).start()
    yield server
    server.kill()


def configured(mock: MockProvider, redis: RedisServer, tmp: Path,
               *edits: tuple[str, str]) -> str:
    config = router_yaml(mock.base_url, redis.url, tmp)  # type: ignore[attr-defined]
    for old, new in edits:
        assert old in config, old
        config = config.replace(old, new)
    return config


def sent_to_provider(mock: MockProvider) -> str:
    """Every body the provider received, as one string to search."""
    return json.dumps([call.body for call in mock.calls()])


# --- key names are operator-chosen strings: a colon in one must not open another's store ---

@pytest.fixture(scope="module")
def colon_named(mock: MockProvider, private_redis: RedisServer,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Keys named `acme` and `acme:prod`, as an operator naming keys per environment would."""
    tmp = tmp_path_factory.mktemp("colon")
    config = configured(mock, private_redis, tmp,
                        ("name: resp-team,", "name: acme,"),
                        ("name: resp-other,", "name: 'acme:prod',"))
    with serving(tmp, config) as url:
        yield url


@pytest.mark.parametrize("tier", ["fast", "smart"])
def test_a_key_named_like_the_prefix_of_another_cannot_read_its_responses(
        colon_named: str, mock: MockProvider, tier: str) -> None:
    """README: "A key reads, continues and deletes only its own responses: another key's id
    is not found." Key `acme` asks for `prod:<id>` of a response key `acme:prod` stored."""
    with sdk(colon_named, OTHER) as prod, sdk(colon_named, KEY) as acme:
        theirs = prod.responses.create(model=tier, input="The prod secret is 4711.",
                                       extra_headers=NOCACHE)
        [said] = [item for item in theirs.output if item.type == "message"]
        forged = f"prod:{theirs.id}"
        with pytest.raises(openai.NotFoundError):
            acme.responses.retrieve(forged)
        with pytest.raises(openai.NotFoundError):
            acme.responses.input_items.list(forged)
        mock.reset()
        with pytest.raises(openai.BadRequestError):
            acme.responses.create(model=tier, input="What is the secret?",
                                  previous_response_id=forged, extra_headers=NOCACHE)
        with pytest.raises(openai.NotFoundError):  # nor one of its items, read as a response
            acme.responses.retrieve(f"prod:item:{said.id}")
        assert "4711" not in sent_to_provider(mock)
        with pytest.raises(openai.NotFoundError):
            acme.responses.delete(forged)
        assert prod.responses.retrieve(theirs.id).output_text == theirs.output_text


# --- an OpenAI id another key stored is never passed to OpenAI, also once it expired ---

def test_an_expired_openai_id_of_another_key_is_not_passed_to_openai(
        mock: MockProvider, private_redis: RedisServer, tmp_path: Path) -> None:
    """README: "an OpenAI id another key stored is never passed to OpenAI (it would answer
    from the operator's account)". OpenAI keeps a stored response 30 days; an operator who
    keeps them shorter (settings.responses.ttl_s) must not open them to every key once the
    gateway's copy expired."""
    config = configured(mock, private_redis, tmp_path,
                        ("  cache: {enabled: true}",
                         "  cache: {enabled: false}\n  responses: {ttl_s: 1}"))
    with serving(tmp_path, config) as url, sdk(url) as team:
        mine = team.responses.create(model="fast", input="The secret is 4711.")
        [said] = [item for item in mine.output if item.type == "message"]
        assert not mine.id.startswith("resp_gw_")  # OpenAI's own id: OpenAI holds it too
        time.sleep(2.1)
        mock.reset()
        statuses = []
        for attempt in ({"previous_response_id": mine.id, "input": "What is the secret?"},
                        {"input": [{"type": "item_reference", "id": said.id}]}):
            answer = httpx.post(f"{url}/v1/responses", json={"model": "fast", **attempt},
                                headers={"authorization": f"Bearer {OTHER}"}, timeout=10)
            statuses.append(answer.status_code)
        forwarded = sent_to_provider(mock)
        assert mine.id not in forwarded and said.id not in forwarded
        assert statuses == [400, 400]


# --- a cache hit is a response of its own: its own id, its own stored fields ---

@pytest.fixture(scope="module")
def cached_files(mock: MockProvider, private_redis: RedisServer,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The cache on, per key (the shipped default); its URL and its files' directory."""
    tmp = tmp_path_factory.mktemp("cached")
    with serving(tmp, configured(mock, private_redis, tmp)) as url:
        yield url, tmp


@pytest.fixture
def cached(cached_files: tuple[str, Path]) -> str:
    return cached_files[0]


@pytest.mark.parametrize("tier", ["fast", "smart"])
def test_a_cache_hit_is_stored_as_a_response_of_its_own(cached: str, tier: str) -> None:
    """README: "A response is stored unless the request says store: false: the input it
    answered ... and its output". Two requests are two responses: deleting the first must
    not delete the second, and the second's metadata is its own."""
    with sdk(cached) as client:
        first = client.responses.create(model=tier, input=f"Twice {tier}", metadata={"n": "1"})
        raw = client.responses.with_raw_response.create(model=tier, input=f"Twice {tier}",
                                                        metadata={"n": "2"})
        assert raw.headers["x-gateway-cache"] == "hit"
        second = raw.parse()
        assert second.metadata == {"n": "2"}
        assert client.responses.retrieve(second.id).metadata == {"n": "2"}
        client.responses.delete(first.id)
        assert client.responses.retrieve(second.id).output_text == first.output_text


@pytest.mark.parametrize("tier", ["fast", "smart"])
def test_store_false_on_a_cache_hit_stores_nothing(cached: str, tier: str) -> None:
    """README: a response is stored "unless the request says store: false". A store: false
    request served from an entry a stored response made must not hand back a response that
    can be retrieved (and its body must say store: false)."""
    with sdk(cached) as client:
        kept = client.responses.create(model=tier, input=f"Kept {tier}")
        raw = client.responses.with_raw_response.create(model=tier, input=f"Kept {tier}",
                                                        store=False)
        assert raw.headers["x-gateway-cache"] == "hit"
        unkept = raw.parse()
        assert unkept.store is False
        client.responses.delete(kept.id)  # the stored one is gone: nothing may be left
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(unkept.id)


@pytest.fixture(scope="module")
def shared_cache(mock: MockProvider, private_redis: RedisServer,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """settings.cache.scope: shared, the choice README offers for keys that share answers."""
    tmp = tmp_path_factory.mktemp("shared")
    config = configured(mock, private_redis, tmp, ("  cache: {enabled: true}",
                                                   "  cache: {enabled: true, scope: shared}"))
    with serving(tmp, config) as url:
        yield url


@pytest.mark.parametrize("tier", ["fast", "smart"])
def test_a_shared_hit_carries_none_of_the_first_askers_bookkeeping(shared_cache: str,
                                                                    tier: str) -> None:
    """README: "store, metadata, user and the prompt-cache fields are bookkeeping" (not in
    the cache key), and a shared hit tells a key only "that another key of that scope asked
    the same". Another key's metadata, user and safety_identifier are not the answer."""
    with sdk(shared_cache) as alice, sdk(shared_cache, OTHER) as bob:
        theirs = alice.responses.create(
            model=tier, input=f"Shared question {tier}", metadata={"customer": "alice@corp"},
            user="alice-4711", safety_identifier="alice-hash", prompt_cache_key="alice-pck")
        raw = bob.responses.with_raw_response.create(model=tier, input=f"Shared question {tier}")
        assert raw.headers["x-gateway-cache"] == "hit"
        body = raw.text
        for private in ("alice@corp", "alice-4711", "alice-hash", "alice-pck"):
            assert private not in body, private
        assert json.loads(body)["id"] != theirs.id  # nor the id of another key's response


@pytest.mark.parametrize("tier", ["fast", "smart"])
def test_a_key_named_known_keeps_its_responses_and_reads_no_others(
        mock: MockProvider, private_redis: RedisServer, tmp_path: Path, tier: str) -> None:
    """A key's name is the operator's choice; `known` is as good a name as any. Its responses
    are its own (retrieved whole), and another key's id is not found for it."""
    config = configured(mock, private_redis, tmp_path, ("name: resp-team,", "name: known,"))
    with serving(tmp_path, config) as url, sdk(url) as known, sdk(url, OTHER) as other:
        theirs = other.responses.create(model=tier, input="Other's words", extra_headers=NOCACHE)
        mine = known.responses.create(model=tier, input="Known's words", extra_headers=NOCACHE)
        assert known.responses.retrieve(mine.id).output_text == mine.output_text
        assert "Known's words" in json.dumps(
            [item.model_dump() for item in known.responses.input_items.list(mine.id).data])
        answer = httpx.get(f"{url}/v1/responses/{theirs.id}",
                           headers={"authorization": f"Bearer {KEY}"}, timeout=10)
        assert answer.status_code == 404, answer.text


# --- log_content off: no prompt or stored content in the logs ---

@pytest.mark.parametrize("tier,model", [("fast", "gpt-4o-mini"), ("smart", "claude-sonnet-4-5")])
def test_a_provider_error_quoting_the_prompt_leaves_no_prompt_in_the_usage_log(
        cached_files: tuple[str, Path], mock: MockProvider, tier: str, model: str) -> None:
    """README (Operations): the usage log has "No prompt or answer text unless
    settings.log_content: true". Providers quote what they refuse (OpenAI's "Invalid value:
    '...'"): that quote is the prompt, and stays out of the log like the prompt itself."""
    mock.script(model, Step(status=400, error_message="Invalid value: 'PATIENT-4711 is ill'"))
    url, tmp = cached_files
    with sdk(url) as client, pytest.raises(openai.BadRequestError) as refused:
        client.responses.with_raw_response.create(model=tier, input="PATIENT-4711 is ill",
                                                  extra_headers=NOCACHE)
    request_id = refused.value.response.headers["x-request-id"]
    [line] = usage_lines_of(tmp / "usage.jsonl", request_id)
    assert line["surface"] == "responses" and line["status"] == 400
    assert "PATIENT-4711" not in json.dumps(line)
    assert "PATIENT-4711" not in (tmp / "gateway.log").read_text()


# --- store: false stores nothing; a store too slow to take a response ---

@pytest.mark.parametrize("tier", ["fast", "smart"])
def test_store_false_leaves_nothing_of_the_conversation_in_the_store(
        cached: str, private_redis: RedisServer, tier: str) -> None:
    """README: "store: false (as Codex sends) costs none" of the store's memory; with the
    cache skipped too (no-store), nothing of the words may be in Redis at all."""
    with sdk(cached) as client:
        first = client.responses.create(model=tier, input=f"ZEBRA-{tier} one", store=False,
                                        extra_headers=NOCACHE)
        assert first.status == "completed"
    keys = redis_cli(private_redis, "--scan", "--pattern", "gw:resp:*").split()
    values = [redis_cli(private_redis, "get", key) for key in keys
              if redis_cli(private_redis, "type", key).strip() == "string"]
    assert not [key for key in keys if first.id in key]
    assert not [value for value in values if f"ZEBRA-{tier}" in value]


@pytest.mark.parametrize("tier,model", [("fast", "gpt-4o-mini"), ("smart", "claude-sonnet-4-5")])
def test_a_response_failed_for_a_slow_store_is_not_then_found_completed(
        mock: MockProvider, tmp_path: Path, tier: str, model: str) -> None:
    """README: "if the store cannot take it, the request fails (a 503, or response.failed in
    a stream)". The client was told the response failed: it must not then be retrievable
    (and continuable) as a completed response, on any replica."""
    redis = RedisServer(tmp_path, debug=True).start()
    config = configured(mock, redis, tmp_path, ("daily_budget_usd: 100}", "}"),
                        ("  cache: {enabled: true}", "  cache: {enabled: false}"))
    try:
        with serving(tmp_path, config) as url, sdk(url) as client:
            mock.script(model, Step(chunk_delay_s=0.1))
            stall = None
            with client.responses.stream(model=tier, input="Stall the store") as stream:
                for event in stream:
                    if event.type == "response.output_text.delta" and stall is None:
                        stall = subprocess.Popen(  # Redis stalls just before the write
                            [str(Path(REDIS_SERVER).with_name("redis-cli")), "-p",
                             str(redis.port), "debug", "sleep", "4"],
                            stdout=subprocess.DEVNULL)
                    last = event
            assert stall is not None and stall.wait(15) == 0
            time.sleep(1.2)  # past the second in which the gateway does not try the store
            if last.type == "response.completed":  # it waited the stall out: then it is kept
                assert client.responses.retrieve(last.response.id).status == "completed"
                return
            assert last.type == "response.failed"
            try:
                found = client.responses.retrieve(last.response.id)
            except openai.NotFoundError:
                return
            assert found.status != "completed", "told failed, stored as completed"
    finally:
        redis.kill()


# --- the cache never answers one conversation with another's turn (held; coverage) ---

@pytest.mark.parametrize("tier,model", [("fast", "gpt-4o-mini"), ("smart", "claude-sonnet-4-5")])
def test_the_cache_keeps_conversations_and_keys_apart(
        shared_cache: str, mock: MockProvider, tier: str, model: str) -> None:
    """README: "The cache keys a Responses request on its whole conversation, so two
    conversations never share an entry", and a key continues only its own: even with the
    cache shared, another key's continuation of a cached turn is refused, not served."""
    with sdk(shared_cache) as alice, sdk(shared_cache, OTHER) as bob:
        mock.script(model, Step(text=f"RED-{tier}"), Step(text=f"BLUE-{tier}"),
                    Step(text=f"after red {tier}"), Step(text=f"after blue {tier}"))
        fresh = {"cache-control": "no-cache"}
        red = alice.responses.create(model=tier, input=f"A colour {tier}", extra_headers=fresh)
        blue = alice.responses.create(model=tier, input=f"A colour {tier}", extra_headers=fresh)
        assert (red.output_text, blue.output_text) == (f"RED-{tier}", f"BLUE-{tier}")
        after_red = alice.responses.create(model=tier, input="Which?",
                                           previous_response_id=red.id)
        after_blue = alice.responses.create(model=tier, input="Which?",
                                            previous_response_id=blue.id)
        assert after_red.output_text == f"after red {tier}"
        assert after_blue.output_text == f"after blue {tier}"
        again = alice.responses.with_raw_response.create(model=tier, input="Which?",
                                                         previous_response_id=red.id)
        assert again.headers["x-gateway-cache"] == "hit"
        assert again.parse().output_text == f"after red {tier}"
        mock.reset()
        with pytest.raises(openai.BadRequestError):
            bob.responses.create(model=tier, input="Which?", previous_response_id=red.id)
        assert not mock.calls()


# --- ids are the client's strings: an odd one is a 4xx, never another record read ---

@pytest.mark.parametrize("tier", ["fast", "smart"])
def test_an_item_id_dressed_as_a_response_id_is_not_found(cached: str, tier: str) -> None:
    """README: "a stored response that is not there is a 404"; continuing one that is not
    there is previous_response_not_found. `item:<id of an output item>` is no response."""
    with sdk(cached) as client:
        mine = client.responses.create(model=tier, input="Items are not responses",
                                       extra_headers=NOCACHE)
        [said] = [item for item in mine.output if item.type == "message"]
        dressed = f"item:{said.id}"
        headers = {"authorization": f"Bearer {KEY}", **NOCACHE}
        got = httpx.get(f"{cached}/v1/responses/{dressed}", headers=headers, timeout=10)
        assert got.status_code == 404, got.text
        listed = httpx.get(f"{cached}/v1/responses/{dressed}/input_items", headers=headers,
                           timeout=10)
        assert listed.status_code == 404, listed.text
        continued = httpx.post(f"{cached}/v1/responses", headers=headers, timeout=10, json={
            "model": tier, "input": "Go on", "previous_response_id": dressed})
        assert continued.status_code == 400, continued.text  # the gateway's, or OpenAI's
        assert "previous_response_not_found" in continued.text  # (it is not OpenAI's id)


def test_a_dead_store_is_a_503_for_every_read_not_a_missing_response(
        mock: MockProvider, tmp_path: Path) -> None:
    """README: a response "not there is a 404". One the store cannot be asked about now is
    not known to be missing: retrieve, input_items, delete and a continuation answer 503,
    so that no client drops a conversation it still has (held: coverage for reads)."""
    redis = RedisServer(tmp_path, durable=True).start()  # what it kept survives the kill
    config = configured(mock, redis, tmp_path, ("daily_budget_usd: 100}", "}"),
                        ("  cache: {enabled: true}", "  cache: {enabled: false}"))
    try:
        with serving(tmp_path, config) as url, sdk(url) as client:
            kept = client.responses.create(model="smart", input="Kept before the outage")
            redis.kill()
            for attempt in (lambda: client.responses.retrieve(kept.id),
                            lambda: client.responses.input_items.list(kept.id),
                            lambda: client.responses.delete(kept.id),
                            lambda: client.responses.create(
                                model="smart", input="Go on", store=False,
                                previous_response_id=kept.id)):
                with pytest.raises(openai.InternalServerError) as refused:
                    attempt()
                assert refused.value.status_code == 503
            redis.start()
            time.sleep(1.2)  # the gateway tries the store again a second after a failure
            assert client.responses.retrieve(kept.id).id == kept.id
    finally:
        redis.kill()


@pytest.mark.parametrize("tier", ["fast", "smart"])
def test_a_deleted_response_leaves_none_of_its_words_behind(
        cached: str, private_redis: RedisServer, mock: MockProvider, tier: str) -> None:
    """DELETE is how a client takes its words back (OpenAI deletes a response with its input
    items). Once the only response that held a prompt is deleted, the prompt is neither
    referable by the ids input_items listed nor left in the store."""
    with sdk(cached) as client:
        mine = client.responses.create(model=tier, input=f"ERASE-ME-{tier}",
                                       extra_headers=NOCACHE)
        [prompt] = client.responses.input_items.list(mine.id).data
        client.responses.delete(mine.id)
        mock.reset()
        with pytest.raises(openai.BadRequestError):
            client.responses.create(model=tier, extra_headers=NOCACHE, input=[
                {"type": "item_reference", "id": prompt.id}])
        assert f"ERASE-ME-{tier}" not in sent_to_provider(mock)
    keys = redis_cli(private_redis, "--scan", "--pattern", "gw:resp:*").split()
    assert not [key for key in keys if key.endswith(str(prompt.id))
                and f"ERASE-ME-{tier}" in redis_cli(private_redis, "get", key)]


# --- a small body may not make a huge request: item_reference is expanded from the store ---

def test_item_references_cannot_amplify_a_small_body_past_max_body_mb(
        mock: MockProvider, private_redis: RedisServer, tmp_path: Path) -> None:
    """README: bodies over settings.max_body_mb are refused, and the gateway's memory stays
    bounded. A 10 KB body naming one stored 400 KB item 100 times asks the gateway to build
    (and send) a 40 MB request: a tenant could so take the process, and every other
    tenant's traffic, down. It is refused instead, before any provider is sent it."""
    config = configured(mock, private_redis, tmp_path, ("daily_budget_usd: 100}", "}"),
                        ("  cache: {enabled: true}", "  cache: {enabled: false}\n"
                                                     "  max_body_mb: 1"))
    with serving(tmp_path, config) as url, sdk(url) as client:
        big = client.responses.create(model="smart", input=[
            {"role": "user", "content": "word " * 80_000}, {"role": "user", "content": "ok"}])
        [held] = [item.id for item in client.responses.input_items.list(big.id).data
                  if len(json.dumps(item.model_dump())) > 100_000]
        mock.reset()
        body = {"model": "smart", "store": False,
                "input": [{"type": "item_reference", "id": held}] * 100}
        assert len(json.dumps(body)) < 10_000
        answer = httpx.post(f"{url}/v1/responses", json=body, timeout=60,
                            headers={"authorization": f"Bearer {KEY}"})
        sent = [len(json.dumps(call.body)) for call in mock.calls()]
        assert not sent, f"requests of {[f'{size / 1e6:.0f} MB' for size in sent]} were sent"
        assert 400 <= answer.status_code < 500, answer.text[:300]
