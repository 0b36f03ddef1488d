"""Anthropic's dialect: its error object and its server-sent events.

As the Messages API writes them: an error is `{"type": "error", "error": {"type",
"message"}}` with an error type per status (the Anthropic SDK picks its exception
class by the status); a stream is `event: <type>` / `data: <json>` pairs, and a
failure after the stream began is one more `error` event.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import GatewayError

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               402: "billing_error", 403: "permission_error", 404: "not_found_error",
               408: "timeout_error", 409: "conflict_error", 413: "request_too_large",
               429: "rate_limit_error", 504: "timeout_error", 529: "overloaded_error"}


def error_type(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_object(error: GatewayError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(error.status),
                                       "message": error.message}}


def error_json(error: GatewayError) -> bytes:
    return orjson.dumps(error_object(error))


def sse_event(payload: dict[str, Any]) -> bytes:
    return b"event: " + str(payload.get("type")).encode() + b"\ndata: " + orjson.dumps(
        payload) + b"\n\n"
