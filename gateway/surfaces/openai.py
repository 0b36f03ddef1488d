"""The OpenAI dialect shared by OpenAI's APIs: the error object and server-sent events.

OpenAI's own shape, as its OpenAPI description gives it: `{"error": {"message",
"type", "param", "code"}}`; a stream is `data: <json>` events ended by
`data: [DONE]`, and a failure after the stream began is one more event holding
the error object.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import GatewayError

DONE = b"data: [DONE]\n\n"


def error_object(error: GatewayError) -> dict[str, Any]:
    return {"error": {"message": error.message, "type": error.type, "param": error.param,
                      "code": error.code}}


def error_json(error: GatewayError) -> bytes:
    return orjson.dumps(error_object(error))


def sse_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"
