"""The pooled HTTP sessions to providers: one per provider address, shared by its adapters.

Adapters are one per model, but several models usually live at one address
(gpt-4o and gpt-4o-mini at api.openai.com): one session per address lets them
share warm keep-alive connections, so a fallback or another tier on the same
provider does not pay a new TCP and TLS handshake. That is the reuse one
process-wide session gave; a session per model would give less. Two accounts at
one address share too: a connection carries no credentials (they are headers of
each request) and the sessions keep no cookies.

A session is keyed by the address and the connect timeout it was opened with,
and closed when the last adapter holding it lets go.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp

from gateway.providers import upstream
from gateway.schema import TimeoutSettings

Key = tuple[str, str, float]  # scheme, host[:port], connect_s


class Session:
    """One shared session; each adapter holding it calls release() once."""

    def __init__(self, key: Key, http: aiohttp.ClientSession, sessions: Sessions):
        self.key = key
        self.http = http
        self.holders = 0
        self._sessions = sessions

    async def release(self) -> None:
        self.holders -= 1
        if self.holders == 0:
            await self._sessions.discard(self)


class Sessions:
    """The open sessions of one process, by provider address and connect timeout."""

    def __init__(self) -> None:
        self._open: dict[Key, Session] = {}

    def take(self, api_base: str | None, timeouts: TimeoutSettings) -> Session:
        """The session for `api_base`, opened if none is; the caller holds it until release()."""
        url = urlsplit(api_base or "")
        key = (url.scheme.lower(), url.netloc.lower(), timeouts.connect_s)
        session = self._open.get(key)
        if session is None:
            session = self._open[key] = Session(key, upstream.open_session(timeouts), self)
        session.holders += 1
        return session

    async def discard(self, session: Session) -> None:
        """Close a session nobody holds any more."""
        if self._open.get(session.key) is session:
            del self._open[session.key]
        await session.http.close()

    async def close(self) -> None:
        """Every session, held or not: the process is stopping."""
        sessions, self._open = list(self._open.values()), {}
        for session in sessions:
            await session.http.close()
