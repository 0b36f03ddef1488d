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
    validation.require_model(body)
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
    _check_values(body)
    if isinstance(given, list):
        for i, item in enumerate(given):
            _check_item(item, f"input.{i}")
    return GatewayRequest("responses", body)


def _refuse(where: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{where}: {why}", param=where)


# Settings with a closed set of values, as the API defines them.
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
CHOICES = ("auto", "none", "required")
FORMATS = ("text", "json_schema", "json_object")


def _check_values(body: dict[str, Any]) -> None:
    """The settings every path reads, with the values the API allows: refused here, naming
    the field, rather than dropped by a translation or sent on to a provider."""
    choice = body.get("tool_choice")
    if isinstance(choice, str) and choice not in CHOICES:
        raise _refuse("tool_choice", "must be 'auto', 'none', 'required' or an object")
    if isinstance(choice, dict) and (not isinstance(choice.get("type"), str) or (
            choice["type"] == "function" and not isinstance(choice.get("name"), str))):
        raise _refuse("tool_choice", "an object needs a `type` (and a function's `name`)")
    text = body.get("text")
    wanted = text.get("format") if isinstance(text, dict) else None
    if wanted is not None and not (isinstance(wanted, dict) and wanted.get("type") in FORMATS):
        raise _refuse("text.format", "must be an object whose type is 'text', 'json_schema' "
                                     "or 'json_object'")
    if isinstance(wanted, dict) and wanted.get("type") == "json_schema" and not (
            isinstance(wanted.get("name"), str) and isinstance(wanted.get("schema"), dict)):
        raise _refuse("text.format", "a json_schema format needs a `name` and a `schema` object")
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    if effort is not None and effort not in EFFORTS:
        raise _refuse("reasoning.effort", f"must be one of {', '.join(EFFORTS)}")
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and not all(isinstance(v, str) for v in metadata.values()):
        raise _refuse("metadata", "every value must be a string")
    for name, most in (("temperature", 2), ("top_p", 1)):
        value = body.get(name)
        if isinstance(value, int | float) and not 0 <= value <= most:
            raise _refuse(name, f"must be from 0 to {most}")
    if body.get("truncation") not in (None, "auto", "disabled"):
        raise _refuse("truncation", "must be 'auto' or 'disabled'")
    for i, tool in enumerate(body.get("tools") or ()):
        if tool["type"] == "function" and not (
                isinstance(tool.get("name"), str) and tool["name"]
                and isinstance(tool.get("parameters", {}), dict | None)):
            raise _refuse(f"tools.{i}", "a function tool needs a `name` string and "
                                        "`parameters` as a JSON schema object")


def _check_item(item: dict[str, Any], where: str) -> None:
    """An input item has the fields its type requires, with their types: the translation
    and the store read them (a malformed item is the client's to fix, not a reason for the
    chain to try another model)."""
    kind = item.get("type", "message")
    if kind == "message":
        content = item.get("content")
        if not isinstance(content, str | list):
            raise _refuse(f"{where}.content", "a string or a list of content parts is required")
        for j, part in enumerate(content if isinstance(content, list) else ()):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _refuse(f"{where}.content.{j}", "a content part needs a `type`")
            if part["type"] in ("input_text", "output_text") and not isinstance(
                    part.get("text"), str):
                raise _refuse(f"{where}.content.{j}.text", "a string is required")
    elif kind == "function_call":
        for name in ("call_id", "name", "arguments"):
            if not isinstance(item.get(name), str):
                raise _refuse(f"{where}.{name}", "a string is required")
    elif kind == "function_call_output":
        if not isinstance(item.get("call_id", item.get("name")), str):
            raise _refuse(f"{where}.call_id", "a string is required (the call it answers)")
        if not isinstance(item.get("output"), str | list):
            raise _refuse(f"{where}.output", "a string or a list of content parts is required")
    elif kind == "item_reference" and not isinstance(item.get("id"), str):
        raise _refuse(f"{where}.id", "a string is required (the item it refers to)")


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


# ResponseError.code, as OpenAI's API defines it.
ERROR_CODES = frozenset({
    "server_error", "rate_limit_exceeded", "invalid_prompt", "data_residency_mismatch",
    "bio_policy", "misalignment_policy_violation", "vector_store_timeout", "invalid_image",
    "invalid_image_format", "invalid_base64_image", "invalid_image_url", "image_too_large",
    "image_too_small", "image_parse_error", "image_content_policy_violation",
    "invalid_image_mode", "image_file_too_large", "unsupported_image_media_type",
    "empty_image_file", "failed_to_download_image", "image_file_not_found"})


def failed(response: dict[str, Any], error: GatewayError) -> dict[str, Any]:
    """The response as a failure ends it: status failed, and OpenAI's error object, its code
    one of the API's: the provider's own when it is one (Codex retries a server_error, and
    should not retry an invalid_prompt), else by the status."""
    code = (error.code if error.code in ERROR_CODES
            else "rate_limit_exceeded" if error.status == 429 else "server_error")
    return {**response, "status": "failed", "error": {"code": code, "message": error.message}}


SURFACE = OpenAIResponses()
