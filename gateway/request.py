"""One request as every layer sees it: what it asks for (a thin view), what happened (the trace).

A surface (surfaces/) parses an inbound body into a GatewayRequest: the kind of
request and the body in the gateway's own form (an OpenAI chat or embeddings
body). The body stays a dict, passed on to the provider whole, since fields the
gateway does not know are a provider's own parameters; the view reads the few
fields the gateway acts on, in one place, so that no other module reads them by
string key. Pure: no I/O.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway import output_limit
from gateway.config import Model
from gateway.errors import Attempt, ProviderError
from gateway.forms import anthropic, openai, responses
from gateway.forms.base import Form, StreamForm

Kind = Literal["chat", "embeddings", "messages", "responses"]
FORMS: dict[Kind, Form] = {"chat": openai.CHAT, "embeddings": openai.EMBEDDINGS,
                           "messages": anthropic.MESSAGES, "responses": responses.RESPONSES}
DEFAULT_SEARCHES = 10  # reserved for a web_search tool without max_uses
CLIENT_LEFT = 499  # a request's status, as nginx logs it, when the client closed first


@dataclass(frozen=True)
class GatewayRequest:
    """What one inbound call asks for; `body` is the gateway's form of it, unknown fields kept."""

    kind: Kind
    body: dict[str, Any]
    # Headers the provider is sent as the client sent them, on a native pass-through
    # (anthropic-version, anthropic-beta); the surface chose them.
    headers: dict[str, str] = field(default_factory=dict)
    # A Responses request's previous_response_id, when the gateway's store held it: the body's
    # input then holds that conversation, and the field is no longer in the body.
    continues: str | None = None

    @property
    def form(self) -> Form:
        """How the gateway reads this request's answers."""
        return FORMS[self.kind]

    @property
    def stream_form(self) -> StreamForm:
        """The form of a request whose answers stream (not embeddings)."""
        form = FORMS[self.kind]
        assert isinstance(form, openai.Chat | anthropic.Messages | responses.Responses), self.kind
        return form

    @property
    def model(self) -> str:
        """The router.yaml name asked for: a tier or a model (the surface checked it is a str)."""
        name: str = self.body["model"]
        return name

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def include_usage(self) -> bool:
        """Whether a streaming client asked for the usage chunk (stream_options)."""
        return (self.kind == "chat" and self.stream
                and bool((self.body.get("stream_options") or {}).get("include_usage")))

    @property
    def output_limit(self) -> int | None:
        """The output limit the client set, as the provider will read it."""
        if self.kind == "messages":
            limit = self.body.get("max_tokens")  # required: the surface checked it
            return limit if isinstance(limit, int) else None
        if self.kind == "responses":
            limit = self.body.get("max_output_tokens")
            return limit if isinstance(limit, int) and not isinstance(limit, bool) else None
        return output_limit.asked(self.body)

    @property
    def n(self) -> int:
        """How many choices are asked for (the surface checked a given `n` is a positive int)."""
        if self.kind != "chat":
            return 1
        given = self.body.get("n")
        return given if isinstance(given, int) and not isinstance(given, bool) else 1

    @property
    def writes_cache(self) -> bool:
        """Whether the body marks a block for the provider's prompt cache (`cache_control`,
        Anthropic's), whose writes are billed above the input price."""
        body = self.body
        if "cache_control" in body:
            return True
        for name in ("system", "tools"):
            if _marked(body.get(name)):
                return True
        return any(isinstance(m, dict) and _marked(m.get("content"))
                   for m in body.get("messages") or ())

    @property
    def web_searches(self) -> int:
        """The most web searches the model may run for this request (its web_search tool's
        max_uses; DEFAULT_SEARCHES when it sets none), each billed apart."""
        most = 0
        for tool in self.body.get("tools") or ():
            if isinstance(tool, dict) and str(tool.get("type", "")).startswith("web_search"):
                uses = tool.get("max_uses")
                most += uses if isinstance(uses, int) and uses > 0 else DEFAULT_SEARCHES
        return most

    @property
    def content(self) -> Any:
        """What the usage log keeps of the request with settings.log_content."""
        if self.kind == "messages":
            return {"system": self.body.get("system"), "messages": self.body.get("messages")}
        if self.kind == "responses":
            return {"instructions": self.body.get("instructions"), "input": self.body.get("input")}
        return self.body.get("messages") if self.kind == "chat" else self.body.get("input")


def _marked(blocks: Any) -> bool:
    return isinstance(blocks, list) and any(
        isinstance(b, dict) and ("cache_control" in b or _marked(b.get("content")))
        for b in blocks)


@dataclass
class Trace:
    """What happened to one request, for headers, errors and the usage log."""

    requested: str
    deadline: float  # loop time by which the whole request must be done
    request_id: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[ProviderError] = field(default_factory=list)
    cooled: list[str] = field(default_factory=list)  # models whose cooldown this request began

    def record(self, model: Model, started: float, error: ProviderError | None) -> None:
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        if error is None:
            self.attempts.append(Attempt(model.name, 200, None, latency_ms))
        else:
            self.attempts.append(Attempt(model.name, error.status, error.message, latency_ms))
            self.failures.append(error)

    def remaining_s(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()
