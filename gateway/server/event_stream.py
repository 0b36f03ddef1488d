"""A text/event-stream answer, sent without a task of its own to watch for the client leaving.

Starlette's StreamingResponse watches for the client's disconnect with a task
group: two tasks and a cancel scope per stream, a tenth of a short stream's CPU
in a profile. uvicorn says a client has gone as soon as it knows
(`connection_lost`), so the gateway's protocol (http_protocol.py) calls the
callback a stream left on the request's cycle (`ON_GONE`). While the stream
waits for its body's next chunk (the provider's, as a rule), it cancels that
wait, once; a send to a client that has gone returns at once, and the loop
stops after it. Either way the body's own cleanup runs, as under Starlette's
task group (the provider's stream is closed, what was made is charged), but
cancelled only once, so its awaits finish. Under another server,
whose `receive` is no uvicorn cycle, Starlette's StreamingResponse is used.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

ON_GONE = "gateway_on_gone"  # the cycle's attribute: called once its client has gone


class EventStream(Response):
    media_type = "text/event-stream"

    def __init__(self, body: AsyncIterator[bytes], headers: Mapping[str, str]):
        self.body_iterator = body
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cycle = getattr(receive, "__self__", None)
        task = asyncio.current_task()
        if task is None or not hasattr(cycle, "disconnected"):
            await StreamingResponse(self.body_iterator, headers=dict(self.headers),
                                    media_type=self.media_type)(scope, receive, send)
            return
        left = waiting = False

        def gone() -> None:
            nonlocal left
            left = True
            if waiting:  # for the body's next chunk: it ends there, its cleanup runs
                task.cancel()

        setattr(cycle, ON_GONE, gone)
        body = self.body_iterator
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            while not left:  # a send to a client that left returns at once, and says nothing
                waiting = True
                try:
                    chunk = await anext(body)
                except StopAsyncIteration:
                    await send({"type": "http.response.body", "body": b"",
                                "more_body": False})
                    break
                finally:
                    waiting = False
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except asyncio.CancelledError:
            if not left:
                raise  # not ours: the server's shutdown
            task.uncancel()  # ours: the client left while the body waited
        finally:
            setattr(cycle, ON_GONE, None)
            if aclose := getattr(body, "aclose", None):
                await aclose()  # a body left mid-way: its cleanup runs now
