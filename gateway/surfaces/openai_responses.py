"""OpenAI Responses, inbound (POST /v1/responses): what `client.responses`, the Vercel AI SDK
and Codex CLI speak.

The body stays in this API's form from here to the provider and back: an OpenAI
model is sent it as written (providers/openai_responses.py), any other model
through a translation onto its chat calls (providers/responses_via_chat.py); the
gateway reads answers through forms/responses.py. Parsing checks what the gateway
acts on (the model, the output limit, the stream and store flags, the conversation)
and the types every path reads; the provider checks the rest.

A stream's events are numbered here, once, in the order sent (`sequence_number`):
native, translated, cut by the budget or replayed from the cache, a client reads
one unbroken count. A failure after the stream began ends it with
`response.failed`, which Codex retries and the SDKs raise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from gateway import validation
from gateway.answer import Answer, Events
from gateway.errors import GatewayError, InvalidRequest
from gateway.request import GatewayRequest
from gateway.surfaces import openai

# Top-level fields every path reads, with the types the API gives them.
TYPES: dict[str, tuple[type, ...]] = {
    "instructions": (str,), "tools": (list,), "tool_choice": (str, dict), "text": (dict,),
    "reasoning": (dict,), "metadata": (dict,), "parallel_tool_calls": (bool,),
    "temperature": (int, float), "top_p": (int, float), "store": (bool,), "stream": (bool,),
    "previous_response_id": (str,), "include": (list,)}
TYPE_NAMES = {str: "a string", list: "a list", dict: "an object", int: "a number",
              float: "a number", bool: "true or false"}
# Asked of OpenAI's own platform only, with nothing the gateway could serve them from.
REFUSED = {
    "conversation": "conversation: the Conversations API is not served by the gateway; "
                    "chain turns with previous_response_id, or send the whole input",
    "background": "background: background responses are not served by the gateway; "
                  "send the request without it (stream it for a long answer)"}


def parse(raw: bytes, headers: Mapping[str, str]) -> GatewayRequest:
    body = validation.parse_json_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: a string is required (a tier or a model of the gateway)",
                             param="model")
    for name, why in REFUSED.items():
        if body.get(name) not in (None, False):
            raise InvalidRequest(why, param=name)
    given = body.get("input")
    if given is None and "previous_response_id" not in body:
        raise InvalidRequest("input: a string or a list of input items is required",
                             param="input")
    if given is not None and not isinstance(given, str | list):
        raise InvalidRequest("input: must be a string or a list of input items", param="input")
    if isinstance(given, list):
        for i, item in enumerate(given):
            if not isinstance(item, dict) or not isinstance(item.get("type", "message"), str):
                raise InvalidRequest(f"input.{i}: must be an input item (an object with a "
                                     "`type`, or a message with `role` and `content`)",
                                     param="input")
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                              or limit < 1):
        raise InvalidRequest("max_output_tokens: a positive integer is required",
                             param="max_output_tokens")
    for name, types in TYPES.items():
        value = body.get(name)
        if (value is not None and not isinstance(value, types)) or (
                isinstance(value, bool) and bool not in types):
            raise InvalidRequest(f"{name}: must be {' or '.join(TYPE_NAMES[t] for t in types)}",
                                 param=name)
    if not all(isinstance(tool, dict) and isinstance(tool.get("type"), str)
               for tool in body.get("tools") or ()):
        raise InvalidRequest("tools: every tool must be an object with a `type`", param="tools")
    return GatewayRequest("responses", body)


def sse_event(event: dict[str, Any]) -> bytes:
    return b"event: " + str(event.get("type")).encode() + b"\ndata: " + orjson.dumps(event) \
        + b"\n\n"


class OpenAIResponses:
    name = "responses"

    def parse(self, raw: bytes, headers: Mapping[str, str]) -> GatewayRequest:
        return parse(raw, headers)

    def answer(self, request: GatewayRequest, answer: Answer) -> bytes:
        return answer.encoded()

    async def events(self, request: GatewayRequest, events: Events) -> AsyncIterator[bytes]:
        number = 0
        last: dict[str, Any] = {}  # the response as last seen, for a failure's event
        try:
            async for batch in events.batches:
                parts = []
                for event in batch:
                    event["sequence_number"] = number
                    number += 1
                    if isinstance(event.get("response"), dict):
                        last = event["response"]
                    parts.append(sse_event(event))
                yield b"".join(parts)
        except GatewayError as error:  # after the stream began: one more event says why
            yield sse_event({"type": "response.failed", "sequence_number": number,
                             "response": failed(last, error)})
        finally:
            await events.batches.aclose()

    def error(self, error: GatewayError) -> bytes:
        return openai.error_json(error)


def failed(response: dict[str, Any], error: GatewayError) -> dict[str, Any]:
    """The response as a failure ends it: status failed, and OpenAI's error object (its code
    one of the API's: a rate limit is `rate_limit_exceeded`, anything else `server_error`)."""
    code = "rate_limit_exceeded" if error.status == 429 else "server_error"
    return {**response, "status": "failed", "error": {"code": code, "message": error.message}}


SURFACE = OpenAIResponses()
