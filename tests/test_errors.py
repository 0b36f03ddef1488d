"""Refusals: each is OpenAI-shaped, with the status an OpenAI SDK maps, and the process lives on."""

from __future__ import annotations

import socket
import time

import httpx
import openai
import pytest

from gateway.demo.mockprovider import MockProvider
from tests.conftest import KEY_A, KEY_B

HELLO = [{"role": "user", "content": "hi"}]


def post(gateway: str, body: bytes | str, key: str | None = KEY_A,
         headers: dict[str, str] | None = None) -> httpx.Response:
    sent = {"content-type": "application/json", **(headers or {})}
    if key:
        sent["authorization"] = f"Bearer {key}"
    return httpx.post(f"{gateway}/v1/chat/completions", content=body, headers=sent, timeout=10)


def assert_openai_error(response: httpx.Response, status: int, *words: str) -> dict:
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for word in words:
        assert word in error["message"]
    assert response.headers["x-request-id"]
    return error


def test_missing_key_is_401(gateway: str, connect) -> None:
    client = connect("unused")
    with pytest.raises(openai.AuthenticationError):
        client.with_options(default_headers={"Authorization": ""}).chat.completions.create(
            model="fast", messages=HELLO)
    assert_openai_error(post(gateway, b"{}", key=None), 401, "missing API key")


def test_unknown_key_is_401_and_says_nothing_of_other_keys(connect) -> None:
    client = connect("sk-guess")
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="fast", messages=HELLO)
    assert "team-a" not in caught.value.message
    assert "sk-guess" not in caught.value.message


def test_key_may_arrive_as_x_api_key(gateway: str) -> None:
    response = httpx.post(f"{gateway}/v1/chat/completions", headers={"x-api-key": KEY_A},
                          json={"model": "fast", "messages": HELLO}, timeout=10)
    assert response.status_code == 200


def test_tier_not_allowed_for_the_key_is_403(connect, mock: MockProvider) -> None:
    client = connect(KEY_B)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="smart", messages=HELLO)
    assert "may use: fast, gpt" in caught.value.message
    assert mock.calls() == []


def test_unknown_model_is_404_naming_what_exists(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-5", messages=HELLO)
    assert "unknown model or tier 'gpt-5'" in caught.value.message
    assert "fast" in caught.value.message


def test_models_lists_what_the_key_may_use(connect) -> None:
    as_b = connect(KEY_B)
    assert [m.id for m in as_b.models.list()] == ["fast", "gpt"]
    as_a = connect(KEY_A)
    names = [m.id for m in as_a.models.list()]
    assert names[:3] == ["fast", "smart", "resilient"] and "claude" in names


@pytest.mark.parametrize(("body", "words"), [
    (b"{not json", ["not valid JSON"]),
    (b"[1, 2]", ["must be a JSON object"]),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', ["'model' is required"]),
    (b'{"model": "fast", "messages": []}', ["non-empty array"]),
    (b'{"model": "fast"}', ["non-empty array"]),
    (b'{"model": "fast", "messages": [{"role": "robot", "content": "hi"}]}', ["role must be"]),
    (b'{"model": "fast", "messages": [{"role": "user", "content": 5}]}', ["string or an array"]),
    (b'{"model": "fast", "messages": [{"role": "user"}]}', ["content is required"]),
    (b'{"model": "fast", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}',
     ["'stream' must be"]),
    (b'{"model": "fast", "max_tokens": -3, "messages": [{"role": "user", "content": "x"}]}',
     ["'max_tokens' must be a positive integer"]),
    (b'{"model": "fast", "max_tokens": 1.5, "messages": [{"role": "user", "content": "x"}]}',
     ["'max_tokens' must be a positive integer"]),
    (b"\xff\xfe{}", ["not valid JSON"]),
    # shapes found by tests/test_fuzz.py that the Claude translation could not take
    (b'{"model": "smart", "messages": [{"role": "robot"}], "tools": [null]}', ["role must be"]),
    (b'{"model": "smart", "messages": [{"role": [], "content": "x"}]}', ["role must be"]),
    (b'{"model": "smart", "tools": [null], "messages": [{"role": "user", "content": "x"}]}',
     ["tools[0] must be"]),
    (b'{"model": "smart", "tool_choice": {"function": 5}, '
     b'"messages": [{"role": "user", "content": "x"}]}', ["'tool_choice' must be"]),
    (b'{"model": "smart", "stop": 5, "messages": [{"role": "user", "content": "x"}]}',
     ["'stop' must be"]),
    (b'{"model": "smart", "messages": [{"role": "user", "content": [{"type": "text", '
     b'"text": 1.0}]}]}', ["content[0].text must be a string"]),
    (b'{"model": "smart", "messages": [{"role": "assistant", "tool_calls": [null]}]}',
     ["tool_calls must be"]),
])
def test_bad_body_is_400_saying_what_to_fix(gateway: str, mock: MockProvider, body: bytes,
                                            words: list[str]) -> None:
    assert_openai_error(post(gateway, body), 400, *words)
    assert mock.calls() == []


def test_body_over_max_body_mb_is_413(gateway: str) -> None:
    big = b'{"model": "fast", "messages": [{"role": "user", "content": "' + b"a" * (1_100_000) \
        + b'"}]}'
    assert_openai_error(post(gateway, big), 413, "max_body_mb")


def test_body_over_limit_without_content_length_is_413(gateway: str) -> None:
    def chunks():
        yield b'{"model": "fast", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"a" * 100_000
        yield b'"}]}'

    response = httpx.post(f"{gateway}/v1/chat/completions", content=chunks(),
                          headers={"authorization": f"Bearer {KEY_A}"}, timeout=10)
    assert_openai_error(response, 413)


def test_headers_over_32_kb_are_431(gateway: str, client: openai.OpenAI) -> None:
    response = post(gateway, b"{}", headers={"x-padding": "x" * 40_000})
    assert_openai_error(response, 431, "32 KB")
    many = {f"x-h{i}": "v" * 10 for i in range(3_000)}
    assert_openai_error(post(gateway, b"{}", headers=many), 431)
    assert client.chat.completions.create(model="fast", messages=HELLO).choices


def test_a_client_that_never_finishes_its_body_gets_408_and_holds_nothing(
        gateway: str, mock: MockProvider) -> None:
    host, port = gateway.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
                     b"Authorization: Bearer " + KEY_A.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                     b'{"model": "fast", "mess')
        started = time.monotonic()
        head = b""  # the head and the body may come in two reads
        while b"read_body_s" not in head and (part := conn.recv(65536)):
            head += part
        waited = time.monotonic() - started
    assert head.startswith(b"HTTP/1.1 408"), head[:200]
    assert b"read_body_s" in head and 0.8 < waited < 5  # settings.timeouts.read_body_s: 1
    assert mock.calls() == []


@pytest.mark.parametrize("value", [b"1e30", b"99999999999999999999999999", b"-1", b"true"])
def test_absurd_max_tokens_is_400_naming_it(gateway: str, mock: MockProvider,
                                            value: bytes) -> None:
    body = b'{"model": "fast", "messages": [{"role": "user", "content": "x"}], "max_tokens": '
    assert_openai_error(post(gateway, body + value + b"}"), 400, "max_tokens")
    assert mock.calls() == []


def test_unknown_path_and_wrong_method_are_openai_shaped(gateway: str) -> None:
    assert_openai_error(httpx.get(f"{gateway}/v1/nothing"), 404, "/v1/nothing")
    assert_openai_error(httpx.get(f"{gateway}/v1/chat/completions"), 405, "GET")


def test_every_response_has_its_own_request_id(gateway: str) -> None:
    ids = {httpx.get(f"{gateway}/health").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


def test_process_serves_after_every_refusal(gateway: str, client: openai.OpenAI) -> None:
    for body in (b"{", b"null", b'{"model": 1}', b"\x00" * 10):
        post(gateway, body)
    assert httpx.get(f"{gateway}/health").status_code == 200
    assert httpx.get(f"{gateway}/ready").json()["status"] == "ready"
    assert client.chat.completions.create(model="fast", messages=HELLO).choices


def test_provider_error_reaches_the_client_without_the_provider_key(
        client: openai.OpenAI, mock: MockProvider, gateway_files) -> None:
    from gateway.demo.mockprovider import Step

    mock.script("gpt-4o-mini", Step(status=422, error_message="bad 'logprobs'"))
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(model="gpt", messages=HELLO)
    assert "bad 'logprobs'" in caught.value.message
    log = (gateway_files / "gateway.log").read_text()
    for secret in ("sk-openai-test", "sk-ant-test", KEY_A, KEY_B, "gsk-test"):
        assert secret not in log
        assert secret not in caught.value.response.text
