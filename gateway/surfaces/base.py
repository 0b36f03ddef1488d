"""What every inbound API provides: a Surface.

A route names its surface; the pipeline in between sees only the gateway's
request (request.py) and gives back data (answer.py). The error layer renders
every refusal through the surface of the route the caller chose, so a client
of one API never gets another API's error shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from gateway.answer import Answer, Events
from gateway.errors import GatewayError
from gateway.request import GatewayRequest


class Surface(Protocol):
    name: str  # the inbound API, as the usage log and the metrics name it

    def parse(self, raw: bytes, headers: Mapping[str, str]) -> GatewayRequest:
        """The body (with the request's headers) as the gateway's request; InvalidRequest
        says what to fix."""
        ...

    def answer(self, request: GatewayRequest, answer: Answer) -> bytes:
        """A whole answer, as the JSON body of a 200."""
        ...

    def events(self, request: GatewayRequest, events: Events) -> AsyncIterator[bytes]:
        """A stream, as the body of a text/event-stream 200, ended with the caller's end
        marker, or with an error event if the stream failed after it began."""
        ...

    def error(self, error: GatewayError) -> bytes:
        """A refusal or failure, as the JSON body sent with `error.status`."""
        ...
