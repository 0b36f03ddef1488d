"""The event loop: uvloop, but accepting every waiting connection on each turn of the loop.

libuv (inside uvloop) accepts one connection per turn since 1.45 (libuv #3696). A
worker whose turns take hundreds of milliseconds under load then accepts a few
connections a second, and the rest wait unaccepted in the kernel's queue, where no
shedding can see them and their clients time out (`bench/soak.py --overload` showed
the worker's whole backlog of 2,048 waiting). Here the listening socket is read by a
reader of ours that accepts up to the backlog on each turn, as asyncio's own loop
does; every request is then counted, and shed past the limits, inside (overload.py).
TLS and the other cases uvicorn may ask for keep uvloop's own server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

import uvloop

log = logging.getLogger("gateway")
ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class Listener:
    """What uvicorn uses of an asyncio.Server: its sockets, close() and wait_closed()."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket):
        self._loop = loop
        self.sockets = [sock]

    def close(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(ValueError, OSError):  # closed already
                self._loop.remove_reader(sock.fileno())
            sock.close()

    async def wait_closed(self) -> None:
        return None


class Loop(uvloop.Loop):
    async def create_server(self, protocol_factory: ProtocolFactory, host: Any = None,
                            port: Any = None, *, sock: socket.socket | None = None,
                            backlog: int = 100, ssl: Any = None, **options: Any) -> Any:
        if ssl is not None or options or (sock is None and port is None):
            return await super().create_server(protocol_factory, host, port, sock=sock,
                                               backlog=backlog, ssl=ssl, **options)
        if sock is None:
            sock = socket.create_server((host or "", port), backlog=backlog)
        sock.setblocking(False)
        sock.listen(backlog)  # a socket bound by the supervisor for its workers is not yet
        self.add_reader(sock.fileno(), self._accept, sock, protocol_factory, backlog)
        return Listener(self, sock)

    def _accept(self, listening: socket.socket, protocol_factory: ProtocolFactory,
                backlog: int) -> None:
        for _ in range(backlog):
            try:
                conn, _ = listening.accept()
            except (BlockingIOError, InterruptedError):
                return  # none left
            except OSError as exc:  # out of descriptors, or a connection reset while queued
                log.warning("accept failed: %s", exc.strerror or exc)
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.create_task(self._serve(protocol_factory, conn))

    async def _serve(self, protocol_factory: ProtocolFactory, conn: socket.socket) -> None:
        try:
            await self.connect_accepted_socket(protocol_factory, conn)
        except OSError:  # gone before its transport was made
            conn.close()


def new_loop() -> asyncio.AbstractEventLoop:
    """uvicorn's loop factory (`loop="gateway.server.accept_loop:new_loop"`)."""
    return Loop()
