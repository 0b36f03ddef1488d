"""Who may read /metrics (every key's spend) and use /admin/*.

With a master key: whoever sends it. Without one: only callers on the gateway's own machine.
A caller that a reverse proxy on this machine relays (it says so in `X-Forwarded-For`,
`X-Real-IP` or `Forwarded`) is not one of them, though its connection comes from loopback:
that is how the world reaches a gateway behind nginx on the same host.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import KEY_A, ROUTER_YAML, RedisServer, gateway_running, sha

MASTER_KEY = "sk-master-operator-access"
RELAYED = [{"x-forwarded-for": "203.0.113.7"}, {"x-real-ip": "203.0.113.7"},
           {"forwarded": "for=203.0.113.7;proto=https"}]
OPERATOR_PATHS = [("GET", "/metrics"), ("GET", "/admin/spend"), ("GET", "/admin/config"),
                  ("POST", "/admin/reload")]


@pytest.fixture(scope="module")
def with_master_key(mock, redis_server: RedisServer,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("master")
    config = tmp / "router.yaml"
    config.write_text(ROUTER_YAML.format(mock=mock.base_url, digest_a=sha(KEY_A),
                                         digest_b=sha("unused"), tmp=tmp,
                                         redis_url=redis_server.url)
                      + f"  master_key: {MASTER_KEY}\n")
    with gateway_running(config, tmp / "gateway.log",
                         env={"TEST_OPENAI_KEY": "sk-openai-test"}) as base_url:
        yield base_url


def spend_something(base_url: str) -> None:
    reply = httpx.post(f"{base_url}/v1/chat/completions", timeout=10,
                       headers={"authorization": f"Bearer {KEY_A}"},
                       json={"model": "gpt", "messages": [{"role": "user", "content": "Hi"}]})
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(("method", "path"), OPERATOR_PATHS)
def test_without_a_master_key_callers_on_this_machine_are_answered(
        gateway: str, method: str, path: str) -> None:
    spend_something(gateway)
    response = httpx.request(method, f"{gateway}{path}", timeout=10)
    assert response.status_code == 200, response.text
    if path == "/metrics":
        assert 'gateway_cost_usd_total{key="team-a"' in response.text
    if path == "/admin/spend":
        assert [row["key"] for row in response.json()["keys"]][:1] == ["team-a"]


@pytest.mark.parametrize("relayed", RELAYED, ids=lambda h: next(iter(h)))
@pytest.mark.parametrize(("method", "path"), OPERATOR_PATHS)
def test_without_a_master_key_a_caller_relayed_from_elsewhere_gets_403_saying_to_set_one(
        gateway: str, method: str, path: str, relayed: dict[str, str]) -> None:
    spend_something(gateway)
    response = httpx.request(method, f"{gateway}{path}", headers=relayed, timeout=10)
    assert response.status_code == 403
    error = response.json()["error"]  # OpenAI-shaped, like every other refusal
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "master_key_required"
    assert "GATEWAY_MASTER_KEY" in error["message"]
    assert "team-a" not in response.text and "gateway_cost" not in response.text


@pytest.mark.parametrize(("method", "path"), OPERATOR_PATHS)
def test_with_a_master_key_a_relayed_caller_that_sends_it_is_answered(
        with_master_key: str, method: str, path: str) -> None:
    relayed = RELAYED[0]
    refused = httpx.request(method, f"{with_master_key}{path}", headers=relayed, timeout=10)
    assert refused.status_code == 401
    served = httpx.request(method, f"{with_master_key}{path}", timeout=10,
                           headers={**relayed, "authorization": f"Bearer {MASTER_KEY}"})
    assert served.status_code == 200, served.text


def test_a_key_of_a_tenant_is_no_master_key(with_master_key: str) -> None:
    response = httpx.get(f"{with_master_key}/metrics", timeout=10,
                         headers={"authorization": f"Bearer {KEY_A}"})
    assert response.status_code == 401
