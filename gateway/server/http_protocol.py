"""The HTTP connection: uvicorn's httptools protocol, with a deadline for a request's head.

uvicorn times out only a keep-alive connection left idle after an answer, and forgets even
that once a byte arrives. A connection that sends nothing, or its head a byte at a time,
would hold a descriptor forever, and enough of them leave the process unable to accept
anyone. Here a request's line and headers must be complete within timeouts.read_head_s
(counted from the connection's opening for its first request, from the first byte for the
next ones); past it, a connection that had sent part of a head gets a 408 and is closed, a
silent one is just closed. Between requests, timeouts.idle_s bounds the wait for the next
(uvicorn's keep-alive timer). A body is bounded by the routes (timeouts.read_body_s), an
answer by timeouts.total_s.

Both are read from the configuration serving when a connection opens, so a reload applies
to new connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.errors import RequestTimeout
from gateway.schema import TimeoutSettings
from gateway.server.event_stream import ON_GONE
from gateway.surfaces import openai

# The lifespan puts a callable here that returns the serving configuration's timeouts.
TIMEOUTS_STATE = "gateway.timeouts"
Timeouts = Callable[[], TimeoutSettings]


def _request_timeout(read_head_s: float, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    error = RequestTimeout(f"the request's line and headers did not arrive within "
                           f"settings.timeouts.read_head_s ({read_head_s:g} s); send them "
                           "whole, or faster")
    body = openai.error_json(error)
    head = [b"HTTP/1.1 408 Request Timeout\r\n"]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]
    head += [b"content-type: application/json\r\n",
             b"content-length: " + str(len(body)).encode() + b"\r\n",
             b"connection: close\r\n\r\n"]
    return b"".join(head) + body


class HeadTimedHttp(HttpToolsProtocol):
    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None):
        super().__init__(config, server_state, app_state, _loop)
        timeouts: Timeouts | None = app_state.get(TIMEOUTS_STATE)
        serving = timeouts() if timeouts else TimeoutSettings()
        self.read_head_s = serving.read_head_s
        # What uvicorn arms after each answer (typed int there; call_later takes a float).
        self.timeout_keep_alive = serving.idle_s  # type: ignore[assignment]
        self.head_deadline: asyncio.TimerHandle | None = None
        self.head_begun = False  # a byte of the head the deadline is for has arrived

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()  # for the first request: a silent connection is closed too

    def data_received(self, data: bytes) -> None:
        if self.head_deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._arm_head_deadline()  # the next request's head begins
        self.head_begun = True
        super().data_received(data)  # calls on_headers_complete once the head is whole

    def on_headers_complete(self) -> None:
        self._disarm_head_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)
        for gone in list(getattr(self.flow, ON_GONE, None) or ()):
            gone()  # a stream being sent stops waiting for its next chunk (event_stream.py)

    def _arm_head_deadline(self) -> None:
        self.head_begun = False
        self.head_deadline = self.loop.call_later(self.read_head_s, self._head_timed_out)

    def _disarm_head_deadline(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _head_timed_out(self) -> None:
        # Armed only while no request is in flight, so no answer is cut here.
        self.head_deadline = None
        if self.transport.is_closing():
            return
        if self.head_begun:
            self.transport.write(_request_timeout(self.read_head_s,
                                                  self.server_state.default_headers))
        self.transport.close()
