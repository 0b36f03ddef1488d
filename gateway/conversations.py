"""Stored responses: what makes `previous_response_id` work on every model of a tier.

Each response a key asks to keep (`store` is not false) is written to the store
with the conversation it answered, before the stream's last event or the body
leaves: the next request, on any replica, can never miss it (LiteLLM rebuilds it
from spend logs written later, and loses turns). A request that continues one
has its input extended with that conversation here, before anything is priced or
sent, so every model of the chain, native or translated, gets the whole of it, the
budget reserves for all of it, and a fallback mid-conversation keeps it. An id the
gateway never stored (one OpenAI made, outside the gateway) is left in the body: an
OpenAI model passes it through, a translation refuses it and the chain moves on. One
it stored for another key is refused: OpenAI would answer it from the operator's
account, whoever asks.

A key reads and deletes only its own responses; entries expire after
settings.responses.ttl_s, each stored whole (its conversation with it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from gateway import untrusted
from gateway.answer import Answer, Events
from gateway.config import ApiKey
from gateway.errors import InvalidRequest, NotReady, PayloadTooLarge
from gateway.forms.responses import GATEWAY_MARK, new_id
from gateway.request import GatewayRequest
from gateway.store import RETRY_DOWN_AFTER_S, Store, StoreDown

PREFIX = "gw:resp:v1"
ENDS = frozenset({"response.completed", "response.incomplete"})  # a response made, stored
ID_PREFIXES = {"message": "msg", "function_call_output": "fco", "function_call": "fc"}


# OpenAI keeps a stored response this long: an id of its making is known to the gateway as
# long as OpenAI could still answer it, whatever settings.responses.ttl_s says.
OPENAI_KEEPS_S = 30 * 86400


def _owner(owner: ApiKey) -> str:
    """The key's name as a fixed-length segment: no name can reach into another's keys (a key
    "acme" and a key "acme:prod")."""
    return hashlib.sha256(owner.name.encode()).hexdigest()[:32]


def _key(owner: ApiKey, response_id: str) -> str:
    return f"{PREFIX}:response:{_owner(owner)}:{response_id}"


def _item_key(owner: ApiKey, item_id: str) -> str:
    return f"{PREFIX}:item:{_owner(owner)}:{item_id}"


def _known_key(made_id: str) -> str:
    """Set for every id the gateway stored, whoever's: an OpenAI id one key stored is never
    passed to OpenAI for another key (OpenAI would answer it from the operator's account)."""
    return f"{PREFIX}:known:{made_id}"


async def _anyones(store: Store, made_ids: list[str]) -> list[str]:
    """Those of `made_ids` the gateway stored for some key."""
    try:
        found = await store.many([_known_key(made_id) for made_id in made_ids])
    except StoreDown as exc:
        raise NotReady(f"{exc}: stored responses cannot be read now; try again") from None
    return [made_id for made_id, mark in zip(made_ids, found, strict=True)
            if mark or _known_key(made_id) in _unmarked]


def as_items(given: Any) -> list[Any]:
    """A request's input as items (a string is one user message)."""
    if isinstance(given, str):
        return [{"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": given}]}]
    return list(given) if isinstance(given, list) else []


def _with_id(item: Any) -> Any:
    """An input item as OpenAI lists it: typed, with an id (the gateway's, if it had none)
    and, for the kinds whose listing requires one, a status."""
    if not isinstance(item, dict):
        return item
    kind = item.get("type") or ("message" if "role" in item else "item")
    out = {**item, "type": kind}
    if not out.get("id"):
        out["id"] = new_id(ID_PREFIXES.get(kind, "item"))
    if kind in ID_PREFIXES:
        out.setdefault("status", "completed")
    if kind == "message" and isinstance(out.get("content"), str):
        part = "output_text" if out.get("role") == "assistant" else "input_text"
        out["content"] = [{"type": part, "text": out["content"]}]
    return out


async def _raw(store: Store, owner: ApiKey, response_id: str) -> bytes | None:
    try:
        return await store.get(_key(owner, response_id))
    except StoreDown as exc:
        raise NotReady(f"{exc}: stored responses cannot be read now; try again") from None


def _record(raw: bytes | None) -> dict[str, Any] | None:
    stored = orjson.loads(raw) if raw is not None else None
    return stored if isinstance(stored, dict) and "response" in stored else None


async def _read(store: Store, owner: ApiKey, response_id: str) -> dict[str, Any] | None:
    return _record(await _raw(store, owner, response_id))


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the conversation this request continues or references is over "
                           f"settings.max_body_mb ({limit / 1024 / 1024:g} MB) once put in "
                           "its input; start a new conversation, or send less of it")


async def continued(store: Store, owner: ApiKey, request: GatewayRequest,
                    limit: int) -> GatewayRequest:
    """The request with the conversation it continues in its input, if the store has it, and
    each item_reference to an item the store holds for this key replaced by that item. What
    the store adds is bounded as a body is (`limit` bytes): a small body must not make the
    gateway build and send a huge one."""
    previous = request.body.get("previous_response_id")
    out, added = request, 0
    if isinstance(previous, str):
        raw = await _raw(store, owner, previous)
        added = len(raw or b"")
        if added > limit:
            raise _too_large(limit)
        if (stored := _record(raw)) is None:
            # the gateway's own, which no provider knows, or another key's
            if GATEWAY_MARK in previous or await _anyones(store, [previous]):
                raise InvalidRequest(f"Previous response with id '{untrusted.bounded(previous)}' "
                                     "not found (not "
                                     "stored for this key: sent with store: false, deleted, "
                                     "or expired); send the whole conversation as input "
                                     "instead", param="previous_response_id",
                                     code="previous_response_not_found")
        else:
            history = [*stored["input"], *(stored["response"].get("output") or ())]
            body = {k: v for k, v in request.body.items() if k != "previous_response_id"}
            body["input"] = [*history, *as_items(request.body.get("input"))]
            out = dataclasses.replace(request, body=body, continues=previous)
    return await _referenced(store, owner, out, limit - added)


def _reference(item: Any) -> str | None:
    if isinstance(item, dict) and item.get("type") == "item_reference":
        ref = item.get("id")
        return ref if isinstance(ref, str) else None
    return None


async def _referenced(store: Store, owner: ApiKey, request: GatewayRequest,
                      limit: int) -> GatewayRequest:
    """Item references resolved from the store (the Vercel AI SDK sends its earlier answers
    so): every model can then take them. One the gateway made and no longer holds, or holds
    for another key, is refused; one OpenAI made outside the gateway is left for OpenAI."""
    given = request.body.get("input")
    refs = [ref for item in given if (ref := _reference(item))] if isinstance(given, list) \
        else []
    if not refs:
        return request
    try:
        found = await store.many([_item_key(owner, ref) for ref in refs])
    except StoreDown as exc:
        raise NotReady(f"{exc}: stored items cannot be read now; try again") from None
    if sum(len(raw or b"") for raw in found) > limit:  # each reference counts, repeats too
        raise _too_large(limit)
    items = {ref: orjson.loads(raw) for ref, raw in zip(refs, found, strict=True) if raw}
    unheld = [ref for ref in refs if ref not in items]
    if missing := [ref for ref in unheld if GATEWAY_MARK in ref] or (
            unheld and await _anyones(store, unheld)):
        raise InvalidRequest(f"item_reference: no item with id '{untrusted.bounded(missing[0])}'"
                             " is stored for "
                             "this key (sent with store: false, deleted, or expired); send the "
                             "item itself instead", param="input")
    assert isinstance(given, list)
    body = {**request.body, "input": [items.get(_reference(item) or "", item)
                                      for item in given]}
    return dataclasses.replace(request, body=body)


def _as_asked(response: Any, request: GatewayRequest) -> Any:
    if isinstance(response, dict) and request.continues:
        response["previous_response_id"] = request.continues
    return response


async def _keep(store: Store, ttl_s: int, owner: ApiKey, request: GatewayRequest,
                response: dict[str, Any]) -> None:
    if request.body.get("store") is False or not isinstance(response.get("id"), str):
        return
    record = {"input": [_with_id(item) for item in as_items(request.body.get("input"))],
              "response": response}
    known_s = max(ttl_s, OPENAI_KEEPS_S)
    values = [(_key(owner, response["id"]), orjson.dumps(record), ttl_s),
              (_known_key(response["id"]), b"1", known_s)]
    for item in _items(record):  # each also on its own, for an item_reference to it
        values += [(_item_key(owner, item["id"]), orjson.dumps(item), ttl_s),
                   (_known_key(item["id"]), b"1", known_s)]
    try:
        await store.set_many(values)
    except StoreDown as exc:  # kept is what store: true promises; unkept is a failure
        made = [item["id"] for item in response.get("output") or ()
                if isinstance(item, dict) and isinstance(item.get("id"), str)]
        _forget(store, [_key(owner, response["id"]), *(_item_key(owner, i) for i in made)],
                [(_known_key(i), b"1", known_s) for i in (response["id"], *made)])
        raise NotReady(f"{exc}: the response could not be stored, so it was not sent; try "
                       "again, or send store: false") from None


FORGET_TRIES = 30  # a second apart: a store stalled longer than this has dropped the write
_forgetting: set[asyncio.Task[None]] = set()
# Known-markers this process has yet to write (the store refused them): until they land, the
# process itself treats those ids as known, so the second after the store returns is no
# window in which one reaches OpenAI.
_unmarked: set[str] = set()


def _forget(store: Store, keys: list[str], known: list[tuple[str, bytes, int]]) -> None:
    """A write that timed out may still land once a stalled store wakes: the response the
    client was told failed is deleted as soon as the store answers again (a delete sent
    after the write runs after it), and its ids are then marked known: the client saw an
    OpenAI id in the stream's first events, which must not be passed to OpenAI later as one
    the gateway never held (OpenAI would answer from a conversation nothing priced)."""
    _unmarked.update(key for key, _, _ in known)

    async def forget() -> None:
        for _ in range(FORGET_TRIES):
            await asyncio.sleep(RETRY_DOWN_AFTER_S)
            try:
                await store.delete(*keys)
                await store.set_many(known)
            except StoreDown:
                continue
            _unmarked.difference_update(key for key, _, _ in known)
            return
    task = asyncio.get_running_loop().create_task(forget())
    _forgetting.add(task)
    task.add_done_callback(_forgetting.discard)


def _items(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A stored response's items that have an id: the input it answered, then its output."""
    return [item for item in [*record["input"], *(record["response"].get("output") or ())]
            if isinstance(item, dict) and isinstance(item.get("id"), str)]


async def kept(store: Store, ttl_s: int, owner: ApiKey, request: GatewayRequest,
               outcome: Answer | Events) -> Answer | Events:
    """The answer, stored before it is sent (a stream: before its last event)."""
    if isinstance(outcome, Events):
        return _kept_events(store, ttl_s, owner, request, outcome)
    return await _kept_answer(store, ttl_s, owner, request, outcome)


async def _kept_answer(store: Store, ttl_s: int, owner: ApiKey, request: GatewayRequest,
                       answer: Answer) -> Answer:
    response = _as_asked(dict(answer.data()), request)
    await _keep(store, ttl_s, owner, request, response)
    return Answer.of(answer.headers, response)


def _kept_events(store: Store, ttl_s: int, owner: ApiKey, request: GatewayRequest,
                events: Events) -> Events:
    async def batches() -> Any:
        try:
            async for batch in events.batches:
                for event in batch:
                    _as_asked(event.get("response"), request)
                    if event.get("type") in ENDS:
                        await _keep(store, ttl_s, owner, request, event["response"])
                yield batch
        finally:
            await events.batches.aclose()
    return Events(events.headers, batches())


async def fetch(store: Store, owner: ApiKey, response_id: str) -> dict[str, Any] | None:
    """The stored response and the input items it answered, or None."""
    return await _read(store, owner, response_id)


async def delete(store: Store, owner: ApiKey, response_id: str) -> bool:
    """Whether the key had the response; it is gone, with every item of it, so that no
    item_reference brings its words back (a later turn's own record keeps its copy)."""
    if (found := await _read(store, owner, response_id)) is None:
        return False
    made = [item["id"] for item in _items(found)]
    try:
        return await store.delete(_key(owner, response_id),
                                  *(_item_key(owner, item) for item in made))
    except StoreDown as exc:
        raise NotReady(f"{exc}: stored responses cannot be deleted now; try again") from None


PAGE_LIMIT = 20  # OpenAI's default page, and its most (100)
MOST_PER_PAGE = 100


def page(items: list[Any], query: Mapping[str, str]) -> dict[str, Any]:
    """One page of a list, as OpenAI pages input_items: newest first unless order=asc,
    starting after the item `after` names."""
    limit_given = query.get("limit", str(PAGE_LIMIT))
    if not limit_given.isdigit() or not 1 <= int(limit_given) <= MOST_PER_PAGE:
        raise InvalidRequest(f"limit: an integer from 1 to {MOST_PER_PAGE} is required",
                             param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order: must be 'asc' or 'desc'", param="order")
    ordered = items if order == "asc" else items[::-1]
    if after := query.get("after"):
        ids = [item.get("id") if isinstance(item, dict) else None for item in ordered]
        if after not in ids:
            raise InvalidRequest(f"after: no input item with id '{untrusted.bounded(after)}' in "
                                 "this response",
                                 param="after")
        ordered = ordered[ids.index(after) + 1:]
    data = ordered[:int(limit_given)]
    first, last = (data[0].get("id"), data[-1].get("id")) if data else (None, None)
    return {"object": "list", "data": data, "first_id": first, "last_id": last,
            "has_more": len(ordered) > len(data)}
