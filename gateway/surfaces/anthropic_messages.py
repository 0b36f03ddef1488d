"""Anthropic Messages, inbound (POST /v1/messages): Claude Code's API, and the Anthropic SDK's.

The body stays in Anthropic's form from here to the provider and back: an
Anthropic model is sent it as written (providers/anthropic_api.py), any other
model through a translation onto its chat calls (providers/messages_via_chat.py);
the gateway reads answers through forms/anthropic.py. So parsing checks only
what the gateway itself acts on (the model, the output limit, the stream flag)
and what every model needs; the provider checks the rest, and its refusal of a
field reaches the client with the provider's words.

An answer names the model as the client asked for it (the tier), as Anthropic
echoes the model asked for; `x-gateway-model` says which model served. Claude
Code relies on the echo: it drops its signed thinking from the next turn when the
answer names another model, and Anthropic then refuses the tool result.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from gateway import validation
from gateway.answer import Answer, Events
from gateway.errors import GatewayError, InvalidRequest
from gateway.request import GatewayRequest
from gateway.surfaces import anthropic

ROLES = ("user", "assistant", "system")
# The client's headers of this API that reach an Anthropic provider as sent.
PASSED_HEADERS = ("anthropic-version", "anthropic-beta")


def parse(raw: bytes, headers: Mapping[str, str]) -> GatewayRequest:
    """The body, checked for what the gateway reads of it."""
    body = validation.parse_json_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: a string is required (a tier or a model of the gateway)",
                             param="model")
    limit = body.get("max_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise InvalidRequest("max_tokens: a positive integer is required", param="max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: a non-empty list of messages is required",
                             param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise InvalidRequest(f"messages.{i}.role: must be 'user', 'assistant' or 'system' "
                                 "(a system message mid-conversation)", param="messages")
        if not isinstance(message.get("content"), str | list):
            raise InvalidRequest(f"messages.{i}.content: a string or a list of content blocks "
                                 "is required", param="messages")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise InvalidRequest("stream: must be true or false", param="stream")
    _check_types(body)
    passed = {name: value for name in PASSED_HEADERS if (value := headers.get(name))}
    return GatewayRequest("messages", body, passed)


class AnthropicMessages:
    name = "messages"

    def parse(self, raw: bytes, headers: Mapping[str, str]) -> GatewayRequest:
        return parse(raw, headers)

    def answer(self, request: GatewayRequest, answer: Answer) -> bytes:
        message = answer.data()
        if message.get("model") == request.model:
            return answer.encoded()
        return orjson.dumps({**message, "model": request.model})

    async def events(self, request: GatewayRequest, events: Events) -> AsyncIterator[bytes]:
        try:
            async for batch in events.batches:
                for event in batch:
                    if event.get("type") == "message_start":
                        _as_asked(event.get("message"), request)
                yield b"".join(anthropic.sse_event(event) for event in batch)
        except GatewayError as error:  # after the stream began: one more event says why
            yield anthropic.sse_event(anthropic.error_object(error))
        finally:
            await events.batches.aclose()

    def error(self, error: GatewayError) -> bytes:
        return anthropic.error_json(error)


# Top-level fields every path reads, with the types Anthropic's API gives them: refused here
# with the field named, rather than wherever a translation or a count first trips on them.
TYPES: dict[str, tuple[type, ...]] = {
    "system": (str, list), "tools": (list,), "tool_choice": (dict,), "stop_sequences": (list,),
    "metadata": (dict,), "thinking": (dict,), "temperature": (int, float),
    "top_p": (int, float), "top_k": (int,)}


def _check_types(body: dict[str, Any]) -> None:
    for name, types in TYPES.items():
        value = body.get(name)
        if value is not None and not isinstance(value, types):
            raise InvalidRequest(f"{name}: must be {' or '.join(TYPE_NAMES[t] for t in types)}",
                                 param=name)
    for name in ("system", "tools", "stop_sequences"):
        value = body.get(name)
        if isinstance(value, list):
            wanted: type = str if name == "stop_sequences" else dict
            if not all(isinstance(item, wanted) for item in value):
                raise InvalidRequest(f"{name}: every item must be {TYPE_NAMES[wanted]}",
                                     param=name)
    system = body.get("system")
    if isinstance(system, list) and not all(isinstance(b.get("text", ""), str) for b in system):
        raise InvalidRequest("system: a text block's text must be a string", param="system")
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and not isinstance(choice.get("type"), str):
        raise InvalidRequest("tool_choice.type: must be a string (auto, any, tool or none)",
                             param="tool_choice")


TYPE_NAMES = {str: "a string", list: "a list", dict: "an object", int: "a number",
              float: "a number"}


def _as_asked(message: Any, request: GatewayRequest) -> None:
    if isinstance(message, dict):
        message["model"] = request.model


def count_body(raw: bytes, headers: Mapping[str, str]) -> GatewayRequest:
    """A count_tokens body: a Messages body without max_tokens (none is needed to count)."""
    body = validation.parse_json_object(raw)
    return parse(orjson.dumps({**body, "max_tokens": 1}), headers)


SURFACE = AnthropicMessages()
