"""A text/event-stream answer, sent without a task of its own to watch for the client leaving.

Starlette's StreamingResponse watches for the client's disconnect with a task
group: two tasks and a cancel scope per stream, a tenth of a short stream's CPU
in a profile. uvicorn says a client has gone as soon as it knows
(`connection_lost`), so the gateway's protocol (http_protocol.py) calls the
callbacks its streams left on the connection (`ON_GONE`, on the connection's
flow control, which every request of a connection shares, pipelined ones too).
While the stream waits for its body's next chunk (the provider's, as a rule), it
cancels that wait, once; a send to a client that has gone returns at once, and
the loop stops after it. A client that left before the stream began (while the
provider thought) is seen at its start. Either way the body's own cleanup runs,
as under Starlette's task group (the provider's stream is closed, what was made
is charged), but cancelled only once, so its awaits finish.

A stream also ends at its `deadline` (the request's total_s, and a second's
grace for the body's own timeout to end it with an error event first): a client
that reads too slowly to take the stream in time holds its sends, which the
body's timeout does not see; past the deadline the connection is closed.

Under another server, whose `receive` is no uvicorn cycle, Starlette's
StreamingResponse is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

# The attribute of a connection's flow control: the callbacks of its streams, each called
# once the client has gone.
ON_GONE = "gateway_on_gone"
GRACE_S = 1.0  # past the deadline, the body's own timeout has had its chance


class EventStream(Response):
    media_type = "text/event-stream"

    def __init__(self, body: AsyncIterator[bytes], headers: Mapping[str, str],
                 deadline: float | None = None):
        """`deadline`: the loop time by which the stream must have ended."""
        self.deadline = None if deadline is None else deadline + GRACE_S
        self.body_iterator = body
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cycle: Any = getattr(receive, "__self__", None)
        task = asyncio.current_task()
        if task is None or not hasattr(cycle, "disconnected"):
            await StreamingResponse(self.body_iterator, headers=dict(self.headers),
                                    media_type=self.media_type)(scope, receive, send)
            return
        left = waiting = False

        def gone() -> None:
            nonlocal left
            left = True
            cycle.disconnected = True  # a pipelined request's cycle is not told by uvicorn
            if waiting:  # for the body's next chunk: it ends there, its cleanup runs
                task.cancel()

        streams: set[Callable[[], None]] = getattr(cycle.flow, ON_GONE, None) or set()
        setattr(cycle.flow, ON_GONE, streams)
        streams.add(gone)
        body = self.body_iterator
        try:
            left = cycle.disconnected  # it left while the provider thought
            async with asyncio.timeout_at(self.deadline):
                await send({"type": "http.response.start", "status": self.status_code,
                            "headers": self.raw_headers})
                while not left:  # a send to a client that left returns at once, silently
                    waiting = True
                    try:
                        chunk = await anext(body)
                    except StopAsyncIteration:
                        await send({"type": "http.response.body", "body": b"",
                                    "more_body": False})
                        break
                    finally:
                        waiting = False
                    await send({"type": "http.response.body", "body": chunk,
                                "more_body": True})
        except asyncio.CancelledError:
            if not left:
                raise  # not ours: the server's shutdown
            task.uncancel()  # ours: the client left while the body waited
        except TimeoutError:  # the client could not take the stream within the deadline
            _reset(cycle.transport)
            await asyncio.sleep(0)  # uvicorn learns of it (connection_lost) before we return
        finally:
            streams.discard(gone)
            if aclose := getattr(body, "aclose", None):
                await aclose()  # a body left mid-way: its cleanup runs now


def _reset(transport: Any) -> None:
    """Closed at once, what the kernel still holds for the client dropped with it (a reset):
    a client too slow to take the stream must not go on reading megabytes of it."""
    with contextlib.suppress(OSError, AttributeError):
        transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
