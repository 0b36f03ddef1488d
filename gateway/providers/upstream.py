"""HTTP to providers: a pooled session, and the boundary where its exceptions become ours."""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import orjson

from gateway.errors import ProviderError
from gateway.schema import TimeoutSettings

# Turns a provider's error response into a ProviderError; one per wire format.
ErrorReader = Callable[[int, Any, dict[str, str]], ProviderError]
ERROR_BODY_LIMIT = 64 * 1024  # an error's body is read for its type and code, no more


def open_session(timeouts: TimeoutSettings) -> aiohttp.ClientSession:
    # No pool limit: the gateway's concurrency is bounded by its clients, not by the pool.
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    timeout = aiohttp.ClientTimeout(total=None, connect=timeouts.connect_s,
                                    sock_connect=timeouts.connect_s)
    # No cookie jar: cookies a provider sets must not ride along on other callers' requests.
    return aiohttp.ClientSession(connector=connector, timeout=timeout,
                                 cookie_jar=aiohttp.DummyCookieJar())


def retry_after_s(headers: dict[str, str]) -> float | None:
    """`retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    if value := headers.get("retry-after-ms"):
        with contextlib.suppress(ValueError):
            return max(0.0, float(value) / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (ValueError, TypeError):
        return None  # unreadable: as if the provider had not said
    return max(0.0, when.timestamp() - time.time())


@contextlib.contextmanager
def translated(model: str) -> Iterator[None]:
    """Translate transport failures into ProviderError, once, most specific first."""
    try:
        yield
    except ProviderError:
        raise
    except TimeoutError as exc:
        raise ProviderError(f"{model} timed out", status=504, kind="transient",
                            timed_out=True) from exc
    except aiohttp.ClientConnectorError as exc:
        raise ProviderError(f"cannot connect to {model}'s provider: {exc.strerror or exc}",
                            status=502, kind="transient") from exc
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
        raise ProviderError(f"{model}'s provider closed the connection mid-answer",
                            status=502, kind="transient") from exc
    except aiohttp.ClientError as exc:
        raise ProviderError(f"{model}'s provider failed: {type(exc).__name__}",
                            status=502, kind="transient") from exc
    except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProviderError(f"{model}'s provider sent a body that is not valid JSON",
                            status=502, kind="transient") from exc


def too_large(model: str, limit: int) -> ProviderError:
    return ProviderError(f"{model}'s provider sent an answer over settings.max_response_mb "
                         f"({limit / 1024 / 1024:g} MB)", status=502, kind="transient")


async def _read(resp: aiohttp.ClientResponse, model: str, limit: int) -> bytes:
    """The whole body, refused as soon as it is known to be over `limit` bytes."""
    if resp.content_length is not None and resp.content_length > limit:
        raise too_large(model, limit)
    parts: list[bytes] = []
    size = 0
    async for part in resp.content.iter_any():
        size += len(part)
        if size > limit:
            raise too_large(model, limit)
        parts.append(part)
    return b"".join(parts)


async def _error_from(resp: aiohttp.ClientResponse, read_error: ErrorReader,
                      model: str) -> ProviderError:
    raw = await _read(resp, model, ERROR_BODY_LIMIT)
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = raw.decode("utf-8", "replace")[:500]
    return read_error(resp.status, body, {k.lower(): v for k, v in resp.headers.items()})


async def post_json(http: aiohttp.ClientSession, url: str, headers: dict[str, str],
                    body: dict[str, Any], model: str, read_error: ErrorReader,
                    limit: int) -> dict[str, Any]:
    """The provider's JSON answer; `limit` bounds its size in bytes."""
    with translated(model):
        async with http.post(url, data=orjson.dumps(body), headers=headers) as resp:
            if resp.status != 200:
                raise await _error_from(resp, read_error, model)
            reply = orjson.loads(await _read(resp, model, limit))
            if not isinstance(reply, dict):
                raise ProviderError(f"{model}'s provider answered with a non-object body",
                                    status=502, kind="transient")
            return reply


async def post_lines(http: aiohttp.ClientSession, url: str, headers: dict[str, str],
                     body: dict[str, Any], model: str, read_error: ErrorReader,
                     limit: int) -> AsyncGenerator[bytes, None]:
    """The response body's non-empty lines, for SSE and NDJSON streams; `limit` bounds the
    whole body in bytes, and so any one line."""
    with translated(model):
        async with http.post(url, data=orjson.dumps(body), headers=headers) as resp:
            if resp.status != 200:
                raise await _error_from(resp, read_error, model)
            # Read as it comes and split in bulk: whatever one network read brings is one
            # await, not one per line (aiohttp's readuntil was a sixth of a long stream).
            size, rest = 0, b""
            while data := await resp.content.readany():
                size += len(data)
                if size > limit:
                    raise too_large(model, limit)
                *lines, rest = (rest + data).split(b"\n")
                for line in lines:
                    if line := line.strip():
                        yield line
            if rest := rest.strip():
                yield rest


async def sse_data(lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The `data:` payloads of an SSE stream (event names are repeated inside the data)."""
    async for line in lines:
        if line.startswith(b"data:"):
            yield line[5:].lstrip()

