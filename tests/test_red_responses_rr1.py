"""Red team (rr1): the money promises of /v1/responses, attacked as a hostile tenant would.

Each test drives real gateway processes (two replicas on one real Redis) against the mock
provider with the official `openai` SDK or raw httpx, and asserts what a tenant or the
operator would see on the bill: a key's spend never above its budget, the whole
conversation (previous_response_id, item_reference) priced before it is sent, every
web search and every token made charged, cut streams charged what was made.
Prices: $1 per million input tokens and $2 per million output tokens, so one input token
costs one micro-dollar.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.demo.mockprovider import MockProvider, Step
from tests.conftest import RedisServer, serving, sha, usage_lines_of, wait_for

PRICE = "price: {input_per_mtok: 1, output_per_mtok: 2}"
NOCACHE = {"cache-control": "no-store"}
# One key per attack, so no test spends another's budget: name -> daily budget in USD.
BUDGETS = {"rich": 100.0, "chain": 0.002, "chain2": 0.002, "deleted": 0.002,
           "images": 0.002, "preview": 0.02, "searches": 0.15, "cutsearch": 100.0,
           "cutsaid": 100.0,
           "think": 0.0003, "clamp": 0.0002, "replicas": 0.003, "reference": 0.002,
           "usage": 100.0, "refitem": 0.004, "refitem2": 0.005, "expired": 100.0,
           "parts": 100.0, "hit": 0.01, "fallsearch": 0.02, "newthink": 1.0,
           "dropped": 100.0, "ignored": 0.0002, "pdf": 0.002, "once": 100.0,
           "streamcut": 0.0002, "items": 0.001, "left": 100.0}


def key(name: str) -> str:
    return f"sk-rr1-{name}"


def router_yaml(mock_url: str, redis_url: str, tmp: Path, extra: str = "") -> str:
    keys = [f"  - {{name: rr1-{n}, key_sha256: {sha(key(n))}, daily_budget_usd: {b}}}"
            for n, b in BUDGETS.items()]
    return "\n".join([
        "providers:",
        f"  anthropic: {{api_key: sk-ant-test, api_base: '{mock_url}'}}",
        f"  openai: {{api_key: sk-openai-test, api_base: '{mock_url}/v1'}}",
        "models:",
        f"  claude: {{provider: anthropic, model: claude-sonnet-4-5, {PRICE}}}",
        f"  gpt: {{provider: openai, model: gpt-4o-mini, {PRICE}}}",
        f"  thinker: {{provider: openai, model: gpt-5-mini, {PRICE}}}",
        # a reasoning model newer than litellm's map: only the request's `reasoning` says so
        f"  thinker-new: {{provider: openai, model: gpt-6-preview, {PRICE}}}",
        "tiers:",
        "  fast: [gpt, claude]",
        "  smart: [claude, gpt]",
        "  only-gpt: [gpt]",
        "  only-claude: [claude]",
        "  think: [thinker]",
        "  think-new: [thinker-new]",
        "keys:", *keys,
        "settings:",
        f"  redis_url: '{redis_url}'",
        f"  usage_log: {tmp}/usage.jsonl",
        "  cache: {enabled: true}",
        "  retry: {max_retries: 0}",
        "  cooldown: {after_failures: 1000, for_s: 0}",
        "  timeouts: {connect_s: 2, first_token_s: 5, total_s: 20}",
        extra,
    ]) + "\n"


@pytest.fixture(scope="module")
def replicas(mock: MockProvider, redis_server: RedisServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    tmp, tmp2 = tmp_path_factory.mktemp("rr1"), tmp_path_factory.mktemp("rr1b")
    config = router_yaml(mock.base_url, redis_server.url, tmp)  # type: ignore[attr-defined]
    with serving(tmp, config) as one, serving(tmp2, config) as two:
        yield one, two, tmp


@pytest.fixture
def gateway(replicas: tuple[str, str, Path]) -> str:
    return replicas[0]


def sdk(url: str, name: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key(name), max_retries=0)


def budget(url: str, name: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/v1/budget", headers={"authorization": f"Bearer {key(name)}"})
    body: dict[str, Any] = answer.json()
    return body


def line_of(tmp: Path, request_id: str) -> dict[str, Any]:
    [line] = usage_lines_of(tmp / "usage.jsonl", request_id, 3)
    return line


WORDS = "word " * 1200  # about 1,200 tokens: $0.0012 of input, 60% of a $0.002 budget


@pytest.mark.parametrize("tier", ["only-gpt", "only-claude"])
def test_previous_response_id_conversation_is_priced_before_it_is_sent(
        gateway: str, mock: MockProvider, tier: str) -> None:
    """A second turn whose own input is one word, but whose conversation (1,200 tokens) no
    longer fits what is left, is refused before any provider is called: the README says
    the budget reserves for all of the conversation."""
    name = "chain" if tier == "only-gpt" else "chain2"
    with sdk(gateway, name) as client:
        first = client.responses.create(model=tier, input=WORDS, extra_headers=NOCACHE,
                                        max_output_tokens=16)
        spent = budget(gateway, name)["spent_usd"]
        assert 0.0011 < spent < 0.0018  # the first turn was priced and paid
        mock.reset()
        with pytest.raises(openai.RateLimitError):
            client.responses.create(model=tier, input="again", previous_response_id=first.id,
                                    max_output_tokens=16, extra_headers=NOCACHE)
    assert not mock.calls()
    assert budget(gateway, name)["spent_usd"] <= BUDGETS[name]


def test_an_answer_the_budget_can_pay_is_not_cut_by_the_gateway(gateway: str,
                                                                mock: MockProvider) -> None:
    """A translated (Claude) answer with the client's own max_output_tokens of 16, on a key
    that can pay for it several times over, is the model's answer as it made it: not cut
    early by the gateway, not marked as cut by the budget, charged from Claude's usage."""
    with sdk(gateway, "reference") as client:
        raw = client.responses.with_raw_response.create(
            model="only-claude", input=WORDS, max_output_tokens=16, extra_headers=NOCACHE)
    answer = raw.parse()
    made = mock.last_answer()
    left = budget(gateway, "reference")
    assert left["remaining_usd"] > 0.0003  # it could pay for ten times this output
    assert raw.headers.get("x-gateway-budget-cut") != "true"
    assert answer.output_text == made.text  # every word Claude wrote reached the client
    charged = float(raw.headers["x-gateway-cost-usd"])
    assert charged == pytest.approx((made.input_tokens + 2 * made.output_tokens) / 1e6)


def test_a_deleted_response_cannot_be_continued_unpriced(gateway: str,
                                                        mock: MockProvider) -> None:
    """DELETE takes a response away: a later previous_response_id naming it is not found,
    rather than passed to OpenAI as an id the gateway never stored (OpenAI still holds it,
    and would answer from its whole conversation, which the budget no longer prices)."""
    with sdk(gateway, "deleted") as client:
        first = client.responses.create(model="only-gpt", input=WORDS, max_output_tokens=16,
                                        extra_headers=NOCACHE)
        client.responses.delete(first.id)
        mock.reset()
        with pytest.raises((openai.NotFoundError, openai.BadRequestError)):
            client.responses.create(model="only-gpt", input="again",
                                    previous_response_id=first.id, max_output_tokens=16,
                                    extra_headers=NOCACHE)
    assert not mock.calls()  # no conversation the key deleted reaches a provider


PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNk"
         "YAAAAAYAAjCB0C8AAAAASUVORK5CYII=")


@pytest.mark.parametrize("tier", ["only-gpt", "only-claude"])
def test_input_images_are_reserved_at_2000_tokens_each(gateway: str, mock: MockProvider,
                                                       tier: str) -> None:
    """Twenty input_image parts are 40,000 tokens by the README's count ($0.04): a key with
    $0.002 is refused before any provider is called, not served at a few tokens' price."""
    parts: list[dict[str, Any]] = [{"type": "input_text", "text": "Describe these."}]
    parts += [{"type": "input_image", "image_url": PIXEL, "detail": "high"}] * 20
    with sdk(gateway, "images") as client, pytest.raises(openai.RateLimitError):
        client.responses.create(model=tier, input=[{"role": "user", "content": parts}],
                                max_output_tokens=16, extra_headers=NOCACHE)
    assert not mock.calls()


@pytest.mark.parametrize("tool", ["web_search", "web_search_preview",
                                  "web_search_2025_08_26", "web_search_preview_2025_03_11"])
def test_every_web_search_tool_is_reserved(gateway: str, mock: MockProvider,
                                           tool: str) -> None:
    """OpenAI's web search tool goes by several names; each runs searches at $10 per
    1,000, so each reserves ten searches ($0.10): a key with $0.02 is refused."""
    with sdk(gateway, "preview") as client, pytest.raises(openai.RateLimitError):
        client.responses.create(model="only-gpt", input="Weather?", tools=[{"type": tool}],
                                max_output_tokens=16, extra_headers=NOCACHE)
    assert not mock.calls()


def searched_stream(searches: int, complete: bool = True, said: bool = False) -> bytes:
    """OpenAI's stream for an answer that ran `searches` web searches, then said a word;
    complete=False: the connection ends after the searches (and the message, if said),
    before any response.completed."""
    from gateway.providers.responses_translate import skeleton

    opened = skeleton({"tools": [{"type": "web_search"}]}, "gpt-4o-mini", "resp_rr1", 1)
    calls = [{"type": "web_search_call", "id": f"ws_{i}", "status": "completed",
              "action": {"type": "search", "query": f"weather {i}"}} for i in range(searches)]
    message = {"type": "message", "id": "msg_rr1", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": "Sunny.", "annotations": [],
                         "logprobs": []}]}
    events: list[dict[str, Any]] = [{"type": "response.created", "response": opened}]
    for index, item in enumerate(calls):
        events += [{"type": "response.output_item.added", "output_index": index, "item": item},
                   {"type": "response.output_item.done", "output_index": index, "item": item}]
    if complete or said:
        at = {"item_id": "msg_rr1", "output_index": searches, "content_index": 0}
        events += [{"type": "response.output_item.added", "output_index": searches,
                    "item": {**message, "status": "in_progress", "content": []}},
                   {"type": "response.output_text.delta", **at, "delta": "Sunny.",
                    "logprobs": []},
                   {"type": "response.output_item.done", "output_index": searches,
                    "item": message}]
    if complete:
        events.append({"type": "response.completed", "response": {
            **opened, "status": "completed", "output": [*calls, message],
            "usage": {"input_tokens": 100,
                      "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                      "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": 120}}})
    return b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(
        {**e, "sequence_number": n}).encode()) for n, e in enumerate(events))


def test_searches_past_the_ten_reserved_never_take_spend_over_the_budget(
        gateway: str, mock: MockProvider) -> None:
    """Ten searches ($0.10) are reserved and a $0.15 key can pay for them; a model that
    runs twenty ($0.20) must still not take the key's spend past its budget."""
    mock.script("gpt-4o-mini", Step(raw=searched_stream(20)))
    # refused or ended early: either keeps the promise
    with sdk(gateway, "searches") as client, contextlib.suppress(openai.APIError):
        list(client.responses.create(model="only-gpt", input="Weather?", stream=True,
                                     tools=[{"type": "web_search"}],
                                     max_output_tokens=16, extra_headers=NOCACHE))
    assert budget(gateway, "searches")["spent_usd"] <= BUDGETS["searches"]


@pytest.mark.parametrize("name,said", [("cutsearch", False), ("cutsaid", True)])
def test_a_stream_cut_after_its_searches_is_charged_for_them(
        gateway: str, mock: MockProvider, name: str, said: bool) -> None:
    """OpenAI ran three searches (and bills them) before the connection died, before or
    after its message: the key is charged for the three, as a cut stream is charged what
    was made."""
    mock.script("gpt-4o-mini", Step(raw=searched_stream(3, complete=False, said=said)))
    # a 502 or a response.failed: the stream failed either way
    with sdk(gateway, name) as client, contextlib.suppress(openai.APIError):
        list(client.responses.create(model="only-gpt", input="Weather?", stream=True,
                                     tools=[{"type": "web_search"}], extra_headers=NOCACHE))
    assert len(mock.calls()) == 1  # one call to OpenAI, which ran three searches
    assert budget(gateway, name)["spent_usd"] >= 3 * 10 / 1000


def test_an_unwatchable_answer_is_charged_the_tokens_openai_billed(gateway: str,
                                                                  mock: MockProvider) -> None:
    """gpt-5-mini thinks unseen, so the gateway cannot cut it; on a key with five output
    tokens left it still sends OpenAI's least limit (16). OpenAI bills the 16 it made:
    the key is charged them (so a key that cannot pay them is refused instead), not the
    3 the gateway wished it had clamped to."""
    with sdk(gateway, "clamp") as client:
        try:
            raw = client.responses.with_raw_response.create(
                model="think", input="word " * 185, reasoning={"effort": "low"},
                extra_headers=NOCACHE)
        except openai.RateLimitError:
            assert not mock.calls()  # refused before OpenAI made anything: the promise holds
            return
    billed = mock.last_answer().output_tokens  # what OpenAI made, and bills
    assert raw.parse().usage is not None
    assert raw.parse().usage.output_tokens == billed  # type: ignore[union-attr]
    charged = float(raw.headers["x-gateway-cost-usd"])
    assert charged >= (mock.last_answer().input_tokens + 2 * billed) / 1e6
    assert budget(gateway, "clamp")["spent_usd"] <= BUDGETS["clamp"]


# Redis 6's ACL key patterns only allow: these match every key but gw:resp:*.
EVERY_KEY_BUT_RESPONSES = ("~[^g]*", "~g[^w]*", "~gw[^:]*", "~gw:[^r]*", "~gw:r[^e]*",
                           "~gw:re[^s]*", "~gw:res[^p]*", "~gw:resp[^:]*")


def test_a_response_the_store_cannot_keep_is_still_charged(mock: MockProvider,
                                                           tmp_path: Path) -> None:
    """The store takes budgets but refuses the response (here: an ACL that forbids its
    keys, as a full or misconfigured store would). The request fails with a 503, as the
    README says, but OpenAI answered and bills it: the key is charged for it, not served
    for free as often as it likes."""
    import redis as redis_py

    redis = RedisServer(tmp_path).start()
    try:
        with serving(tmp_path, router_yaml(mock.base_url, redis.url, tmp_path)) as url:  # type: ignore[attr-defined]
            with sdk(url, "rich") as client:
                client.responses.create(model="only-gpt", input="warm up", extra_headers=NOCACHE)
                before = budget(url, "rich")["spent_usd"]
                with redis_py.Redis.from_url(redis.url) as admin:  # every key but responses'
                    admin.execute_command("ACL", "SETUSER", "default", "on", "nopass", "resetkeys",
                                          *EVERY_KEY_BUT_RESPONSES, "+@all")
                mock.reset()
                with pytest.raises(openai.InternalServerError) as failed:
                    client.responses.create(model="only-gpt", input=WORDS,
                                            max_output_tokens=16, extra_headers=NOCACHE)
                assert failed.value.status_code == 503
                assert len(mock.calls()) == 1  # OpenAI was asked, and answered
                made = mock.last_answer()
                with redis_py.Redis.from_url(redis.url) as admin:  # the store whole again
                    admin.execute_command("ACL", "SETUSER", "default", "allkeys")
                owed = (made.input_tokens + 2 * made.output_tokens) / 1e6
                wait_for(lambda: budget(url, "rich").get("spent_usd", 0) - before >= owed, 5)
                spent = budget(url, "rich")["spent_usd"] - before
            assert spent >= owed
    finally:
        redis.kill()


@pytest.mark.parametrize("tier", ["only-gpt", "only-claude"])
def test_an_item_reference_is_priced_as_the_item_it_names(gateway: str, mock: MockProvider,
                                                          tier: str) -> None:
    """An item_reference is a few bytes naming an item of ~1,200 tokens: what it names is
    priced before the call, so a key without the money for it is refused."""
    name = "refitem" if tier == "only-gpt" else "refitem2"
    with sdk(gateway, name) as client:
        mock.script("gpt-4o-mini" if tier == "only-gpt" else "claude-sonnet-4-5",
                    Step(text=WORDS))  # the answer repeats the 1,200 words
        first = client.responses.create(model=tier, input=WORDS, extra_headers=NOCACHE)
        [said] = [item for item in first.output if item.type == "message"]
        assert len(first.output_text.split()) > 1000  # the mock said it all back
        left = budget(gateway, name)["remaining_usd"]
        # less than the item's 1,200 tokens cost (counted at 1.35x for a Claude model)
        assert 0 < left < (0.0012 if tier == "only-gpt" else 0.0016)
        mock.reset()
        with pytest.raises(openai.RateLimitError):
            client.responses.create(model=tier, max_output_tokens=16, extra_headers=NOCACHE,
                                    input=[{"type": "item_reference", "id": said.id}])
    assert not mock.calls()
    assert budget(gateway, name)["spent_usd"] <= BUDGETS[name]


def test_an_expired_response_is_not_continued_by_openai(mock: MockProvider,
                                                       redis_server: RedisServer,
                                                       tmp_path: Path) -> None:
    """Past settings.responses.ttl_s the gateway has forgotten a response, but OpenAI has
    not: the id must not then be passed to OpenAI, where any key could continue another's
    conversation (OpenAI answers anyone of the operator's account), unpriced."""
    config = router_yaml(mock.base_url, redis_server.url, tmp_path,  # type: ignore[attr-defined]
                         "  responses: {ttl_s: 1}")
    with serving(tmp_path, config) as url, sdk(url, "expired") as owner, \
            sdk(url, "rich") as stranger:
        first = owner.responses.create(model="only-gpt", input="My PIN is 4321.",
                                       extra_headers=NOCACHE)
        with pytest.raises(openai.NotFoundError):  # another key: not found, while stored
            stranger.responses.retrieve(first.id)
        wait_for(lambda: _gone(owner, first.id), 5)
        mock.reset()
        with pytest.raises((openai.NotFoundError, openai.BadRequestError)):
            stranger.responses.create(model="only-gpt", input="What is my PIN?",
                                      previous_response_id=first.id, extra_headers=NOCACHE)
    assert not mock.calls()


def _gone(client: openai.OpenAI, response_id: str) -> bool:
    try:
        client.responses.retrieve(response_id)
    except openai.NotFoundError:
        return True
    return False


def test_two_replicas_never_spend_past_the_budget_on_one_conversation(
        replicas: tuple[str, str, Path], mock: MockProvider) -> None:
    """Six continuations of one 1,200-token conversation at once, on two replicas: the
    $0.003 key can pay for one, so the rest are refused and the spend stays within it."""
    from concurrent.futures import ThreadPoolExecutor

    one, two, _ = replicas
    with sdk(one, "replicas") as client:
        first = client.responses.create(model="only-gpt", input=WORDS, max_output_tokens=16,
                                        extra_headers=NOCACHE)
    mock.always["gpt-4o-mini"] = Step(text="ok " * 40, chunk_delay_s=0.01)

    def continue_on(url: str) -> str:
        with sdk(url, "replicas") as each:
            try:
                each.responses.create(model="only-gpt", input="go on", stream=False,
                                      previous_response_id=first.id, extra_headers=NOCACHE)
            except openai.RateLimitError:
                return "refused"
            return "served"

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(continue_on, [one, two] * 3))
    assert "served" in outcomes and "refused" in outcomes
    assert budget(one, "replicas")["spent_usd"] <= BUDGETS["replicas"]


@pytest.mark.parametrize("usage", [
    {"input_tokens": 50, "input_tokens_details": {"cached_tokens": 1_000_000,
                                                  "cache_write_tokens": 0},
     "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 55},
    {"input_tokens": -5_000, "input_tokens_details": {"cached_tokens": 0,
                                                      "cache_write_tokens": 0},
     "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 0},
], ids=["cached-past-input", "negative-input"])
def test_an_input_count_smaller_than_its_parts_is_not_trusted(
        replicas: tuple[str, str, Path], mock: MockProvider, usage: dict[str, Any]) -> None:
    """README: a count smaller than its own parts, or negative, is counted by the gateway
    instead. The charge is then at least the input's ~1,200 tokens at the input price
    (never a refund from the key's spend)."""
    gateway, _, tmp = replicas
    mock.script("gpt-4o-mini", Step(usage=usage))
    with sdk(gateway, "parts") as client:
        before = budget(gateway, "parts")["spent_usd"]
        raw = client.responses.with_raw_response.create(model="only-gpt", input=WORDS,
                                                        extra_headers=NOCACHE)
    line = line_of(tmp, raw.headers["x-request-id"])
    assert line["cost_usd"] >= 1000 / 1e6
    assert budget(gateway, "parts")["spent_usd"] - before >= 1000 / 1e6


def test_an_output_count_smaller_than_its_reasoning_is_not_trusted(
        replicas: tuple[str, str, Path], mock: MockProvider) -> None:
    """output_tokens counts the reasoning tokens in it: 5 output tokens of which 90,000
    were reasoning is smaller than its own part, so the gateway counts the output itself
    (the mock's sentence is about 20 tokens) rather than charge the 5."""
    gateway, _, tmp = replicas
    mock.script("gpt-4o-mini", Step(usage={
        "input_tokens": 50, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 90_000},
        "total_tokens": 55}))
    with sdk(gateway, "parts") as client:
        raw = client.responses.with_raw_response.create(model="only-gpt", input="Hello there",
                                                        extra_headers=NOCACHE)
    said = raw.parse().output_text
    assert len(said.split()) >= 6  # more words than the 5 tokens the usage claims
    line = line_of(tmp, raw.headers["x-request-id"])
    assert line["output_tokens"] > 5


def test_a_fallback_to_openai_does_not_search_unreserved(gateway: str,
                                                         mock: MockProvider) -> None:
    """On `smart` [claude, gpt] a web_search tool reserves nothing (Claude's translation
    drops it); when Claude fails, gpt runs the searches. A $0.02 key cannot pay for ten
    searches, so gpt must not run five ($0.05) on its money."""
    mock.script("claude-sonnet-4-5", Step(status=529))
    mock.script("gpt-4o-mini", Step(raw=searched_stream(5)))
    with sdk(gateway, "fallsearch") as client, contextlib.suppress(openai.APIError):
        list(client.responses.create(model="smart", input="Weather?", stream=True,
                                     tools=[{"type": "web_search"}], max_output_tokens=16,
                                     extra_headers=NOCACHE))
    assert budget(gateway, "fallsearch")["spent_usd"] <= BUDGETS["fallsearch"]


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_an_unlisted_model_bills_unseen_is_charged(
        replicas: tuple[str, str, Path], mock: MockProvider, stream: bool) -> None:
    """A request with `reasoning` to an OpenAI model litellm's map does not know yet: the
    model bills reasoning tokens it never shows. The key is charged what OpenAI's usage
    says it made, not the visible text's bytes."""
    gateway, _, tmp = replicas
    with sdk(gateway, "newthink") as client:
        raw = client.responses.with_raw_response.create(
            model="think-new", input="Hello there", reasoning={"effort": "high"},
            stream=stream, extra_headers=NOCACHE)
        if stream:
            list(raw.parse())
    made = mock.last_answer()
    assert made.thinking_tokens > 0  # it thought, billed as output
    line = line_of(tmp, raw.headers["x-request-id"])
    assert line["output_tokens"] >= made.output_tokens  # reasoning included
    assert line["cost_usd"] >= (made.input_tokens + 2 * made.output_tokens) / 1e6


@pytest.mark.parametrize("tier", ["only-gpt", "only-claude"])
def test_a_stream_the_provider_drops_is_charged_what_it_made(
        replicas: tuple[str, str, Path], mock: MockProvider, tier: str) -> None:
    """The provider's connection dies after some of the text: the key is charged for the
    text the client received (counted), not nothing."""
    gateway, _, tmp = replicas
    model = "gpt-4o-mini" if tier == "only-gpt" else "claude-sonnet-4-5"
    mock.script(model, Step(text="word " * 300, drop_after=150))
    with sdk(gateway, "dropped") as client:
        raw = client.responses.with_raw_response.create(model=tier, input="Talk",
                                                        stream=True, extra_headers=NOCACHE)
        got = ""
        with contextlib.suppress(openai.APIError):
            for event in raw.parse():
                if event.type == "response.output_text.delta":
                    got += event.delta
    words = len(got.split())
    assert words > 50
    line = line_of(tmp, raw.headers["x-request-id"])
    assert line["output_tokens"] >= words
    assert line["cost_usd"] >= 2 * words / 1e6


def test_a_provider_that_ignores_the_limit_is_cut_at_the_budget(gateway: str,
                                                               mock: MockProvider) -> None:
    """A $0.0002 key asks for a long non-streamed answer; OpenAI writes 400 words though it
    was sent a lower max_output_tokens. The gateway cuts it and the spend stays within."""
    mock.script("gpt-4o-mini", Step(text="word " * 400, ignore_limit=True))
    with sdk(gateway, "ignored") as client:
        raw = client.responses.with_raw_response.create(model="only-gpt", input="Long",
                                                        extra_headers=NOCACHE)
    assert raw.headers.get("x-gateway-budget-cut") == "true"
    assert raw.parse().status == "incomplete"
    assert budget(gateway, "ignored")["spent_usd"] <= BUDGETS["ignored"]


def test_a_cache_hit_is_free(gateway: str, mock: MockProvider) -> None:
    """The same request twice: the second is the cache's, costs nothing and calls no one."""
    asked: dict[str, Any] = {"model": "only-gpt", "input": "Cache me, rr1"}
    with sdk(gateway, "hit") as client:
        client.responses.create(**asked)
        spent = budget(gateway, "hit")["spent_usd"]
        mock.reset()
        raw = client.responses.with_raw_response.create(**asked, stream=True)
        list(raw.parse())
    assert raw.headers["x-gateway-cache"] == "hit" and not mock.calls()
    assert budget(gateway, "hit")["spent_usd"] == spent


PDF = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Kids[3 0 R]"
       b"/Count 1>>endobj 3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 3 3]>>endobj\n"
       b"trailer<</Root 1 0 R>>\n%%EOF")


@pytest.mark.parametrize("tier", ["only-gpt", "only-claude"])
def test_an_input_file_is_reserved_at_3000_tokens_a_page(gateway: str, mock: MockProvider,
                                                         tier: str) -> None:
    """A one-page PDF of 200 bytes is 3,000 tokens by the README's count ($0.003): a key
    with $0.002 is refused before any provider is called."""
    import base64

    data = "data:application/pdf;base64," + base64.b64encode(PDF).decode()
    with sdk(gateway, "pdf") as client, pytest.raises(openai.RateLimitError):
        client.responses.create(model=tier, max_output_tokens=16, extra_headers=NOCACHE,
                                input=[{"role": "user", "content": [
                                    {"type": "input_text", "text": "Read it."},
                                    {"type": "input_file", "filename": "a.pdf",
                                     "file_data": data}]}])
    assert not mock.calls()


def test_a_continued_conversation_reaches_openai_once(gateway: str,
                                                      mock: MockProvider) -> None:
    """The gateway sends OpenAI the stored conversation in the input; it must not also send
    previous_response_id, or OpenAI would put the conversation in twice and bill it twice."""
    with sdk(gateway, "once") as client:
        first = client.responses.create(model="only-gpt", input=WORDS, max_output_tokens=16,
                                        extra_headers=NOCACHE)
        mock.reset()
        second = client.responses.create(model="only-gpt", input="again",
                                         previous_response_id=first.id,
                                         max_output_tokens=16, extra_headers=NOCACHE)
    [received] = mock.calls()
    assert "previous_response_id" not in received.body
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens < 1.2 * first.usage.input_tokens  # not twice


def test_a_native_stream_cut_by_the_budget_is_charged_what_its_usage_says(
        replicas: tuple[str, str, Path], mock: MockProvider) -> None:
    """A stream the budget ends closes with response.incomplete and "the usage charged":
    the usage the client reads is what the usage log says the key paid for."""
    gateway, _, tmp = replicas
    mock.script("gpt-4o-mini", Step(text="word " * 400, ignore_limit=True))
    with sdk(gateway, "streamcut") as client:
        raw = client.responses.with_raw_response.create(model="only-gpt", input="Long",
                                                        stream=True, extra_headers=NOCACHE)
        events = list(raw.parse())
    final = events[-1]
    assert final.type == "response.incomplete"
    usage = final.response.usage
    assert usage is not None
    line = line_of(tmp, raw.headers["x-request-id"])
    assert (line["input_tokens"], line["output_tokens"]) == (usage.input_tokens,
                                                             usage.output_tokens)
    assert budget(gateway, "streamcut")["spent_usd"] <= BUDGETS["streamcut"]


CALL = {"type": "function_call", "call_id": "call_rr1", "name": "run", "arguments": "{}"}


@pytest.mark.parametrize("items", [
    [CALL, {"type": "function_call_output", "call_id": "call_rr1", "output": WORDS}],
    [CALL, {"type": "function_call_output", "call_id": "call_rr1",
            "output": [{"type": "input_text", "text": WORDS}]}],
    [{**CALL, "arguments": json.dumps({"text": WORDS})},
     {"type": "function_call_output", "call_id": "call_rr1", "output": "ok"}],
    [{"type": "custom_tool_call", "call_id": "call_rr1", "name": "apply_patch", "input": WORDS},
     {"type": "custom_tool_call_output", "call_id": "call_rr1", "output": "ok"}],
    [{"type": "custom_tool_call", "call_id": "call_rr1", "name": "apply_patch", "input": "x"},
     {"type": "custom_tool_call_output", "call_id": "call_rr1", "output": WORDS}],
    [{"role": "developer", "content": [{"type": "input_text", "text": WORDS}]}],
    [{"type": "message", "role": "assistant",
      "content": [{"type": "output_text", "text": WORDS, "annotations": []}]}],
    [{"type": "reasoning", "id": "rs_rr1", "summary": [{"type": "summary_text", "text": WORDS}]}],
], ids=["call-output", "call-output-parts", "call-arguments", "custom-input", "custom-output",
        "developer-parts", "assistant-output-text", "reasoning-summary"])
def test_every_kind_of_input_item_is_priced(gateway: str, mock: MockProvider,
                                            items: list[dict[str, Any]]) -> None:
    """Codex sends its whole history as items: tool calls and their outputs, patches,
    earlier answers. 1,200 words in any of them is $0.0012 of input: a $0.001 key is
    refused before OpenAI is called, whatever item the words are in."""
    with sdk(gateway, "items") as client, pytest.raises(openai.RateLimitError):
        client.responses.create(model="only-gpt", max_output_tokens=16, extra_headers=NOCACHE,
                                input=[*items, {"role": "user", "content": "Go on."}])
    assert not mock.calls()


def test_a_stream_the_store_could_not_keep_cannot_be_continued_unpriced(
        mock: MockProvider, tmp_path: Path) -> None:
    """A stream whose response the store refuses ends with response.failed, but its
    response.created already told the client OpenAI's id, and OpenAI kept the response.
    Continuing that id later must not be passed to OpenAI as an id the gateway never
    stored: OpenAI would answer from the whole conversation, which nothing priced."""
    import redis as redis_py

    redis = RedisServer(tmp_path).start()
    try:
        with serving(tmp_path, router_yaml(mock.base_url, redis.url, tmp_path)) as url, \
                sdk(url, "rich") as client, redis_py.Redis.from_url(redis.url) as admin:
            client.responses.create(model="only-gpt", input="warm up", extra_headers=NOCACHE)
            admin.execute_command("ACL", "SETUSER", "default", "on", "nopass", "resetkeys",
                                  *EVERY_KEY_BUT_RESPONSES, "+@all")
            with client.responses.stream(model="only-gpt", input=WORDS, max_output_tokens=16,
                                         extra_headers=NOCACHE) as stream:
                events = list(stream)
            assert events[-1].type == "response.failed"
            seen = events[0].response.id  # response.created
            admin.execute_command("ACL", "SETUSER", "default", "allkeys")
            mock.reset()

            def continued() -> bool:  # once the gateway finds its store whole again
                try:
                    client.responses.create(model="only-gpt", input="again",
                                            previous_response_id=seen, max_output_tokens=16,
                                            extra_headers=NOCACHE)
                except openai.APIStatusError as refused:
                    return refused.status_code != 503
                return True

            wait_for(continued, 5)
            sent = [call.body for call in mock.calls()]
            assert not any(body.get("previous_response_id") == seen for body in sent)
    finally:
        redis.kill()


@pytest.mark.parametrize("tier", ["only-gpt", "only-claude"])
def test_a_stream_its_client_leaves_is_charged_what_was_sent(
        replicas: tuple[str, str, Path], mock: MockProvider, tier: str) -> None:
    """The client reads 40 words of a slow stream and hangs up: the key is charged for at
    least what it was sent, not nothing."""
    gateway, _, tmp = replicas
    model = "gpt-4o-mini" if tier == "only-gpt" else "claude-sonnet-4-5"
    mock.script(model, Step(text="word " * 300, chunk_delay_s=0.005))
    got = 0
    with httpx.stream("POST", f"{gateway}/v1/responses", timeout=10, json={
            "model": tier, "input": "Talk", "stream": True},
            headers={"authorization": f"Bearer {key('left')}", **NOCACHE}) as answer:
        request_id = answer.headers["x-request-id"]
        for line in answer.iter_lines():
            if '"response.output_text.delta"' in line:
                got += 1
            if got >= 40:
                break
    line = line_of(tmp, request_id)
    assert line["output_tokens"] >= 40
    assert line["cost_usd"] >= 2 * 40 / 1e6
