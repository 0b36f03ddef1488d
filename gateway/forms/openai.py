"""OpenAI's forms: the chat.completion (and its chunks) and the embeddings list. The gateway's
own form for every provider adapter; completions.py assembles and replays it. Pure."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from gateway import completions, output_limit
from gateway.money import cost, tokens
from gateway.money.cost import Reported, Usage
from gateway.money.tokens import Tally

if TYPE_CHECKING:
    from gateway.config import Model

# A choice that ended for one of these is a whole answer; content_filter is not kept.
COMPLETE_FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "function_call"})


def usage_body(usage: Usage) -> dict[str, Any]:
    """A usage as OpenAI writes it."""
    body: dict[str, Any] = {"prompt_tokens": usage.input_tokens,
                            "completion_tokens": usage.output_tokens,
                            "total_tokens": usage.input_tokens + usage.output_tokens}
    if usage.cached_tokens:
        body["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    return body


class _Answers:
    """What OpenAI's two answer forms share."""

    def reported(self, answer: dict[str, Any]) -> Reported:
        return cost.usage_of(answer)

    def set_usage(self, answer: dict[str, Any], usage: Usage) -> None:
        answer["usage"] = usage_body(usage)

    def output_tally(self, answer: dict[str, Any]) -> Tally:
        return tokens.output_tally(answer)

    def choices(self, answer: dict[str, Any]) -> int:
        return len(answer.get("choices") or ())

    def same_when_limited(self, body: dict[str, Any], limit: int) -> bool:
        return True  # only the limit changed, and the answer ended before it

    def as_hit(self, encoded: bytes, body: dict[str, Any]) -> bytes:
        return encoded  # nothing in it is the asker's own


class Chat(_Answers):
    def input_tally(self, body: dict[str, Any]) -> Tally:
        return tokens.chat_tally(body)

    def with_limit(self, body: dict[str, Any], model: Model, limit: int | None,
                   ) -> dict[str, Any]:
        return output_limit.with_limit(body, model, limit)

    def is_complete(self, answer: dict[str, Any], length_ok: bool) -> bool:
        reasons = COMPLETE_FINISH_REASONS if length_ok else COMPLETE_FINISH_REASONS - {"length"}
        choices = answer.get("choices") or ()
        return bool(choices) and all(c.get("finish_reason") in reasons for c in choices)

    def shown(self, answer: dict[str, Any]) -> Any:
        return answer.get("choices")

    def has_token(self, item: dict[str, Any]) -> bool:
        for choice in item.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content") or delta.get("tool_calls"):
                return True
        return False

    def output_texts(self, item: dict[str, Any]) -> list[str]:
        """Content, reasoning, refusals, tool calls."""
        texts: list[str] = []
        for choice in item.get("choices") or ():
            for name, value in (choice.get("delta") or {}).items():
                if name == "tool_calls":
                    for call in value or ():
                        function = (call.get("function") or {}) if isinstance(call, dict) else {}
                        texts += [v for v in (function.get("name"), function.get("arguments"))
                                  if isinstance(v, str)]
                elif name != "role" and isinstance(value, str):
                    texts.append(value)
        return texts

    def searches(self, item: dict[str, Any]) -> int:
        return 0  # a chat model's searches (web_search_options) are in its token price

    def assembler(self) -> completions.Assembler:
        return completions.Assembler()

    def ending(self, choices: int) -> ChatEnding:
        return ChatEnding(choices)

    def usage_items(self, answer: dict[str, Any]) -> list[dict[str, Any]]:
        if not isinstance(answer.get("usage"), dict):
            return []
        head = {k: answer[k] for k in completions.HEAD_FIELDS if answer.get(k) is not None}
        return [{**head, "object": "chat.completion.chunk", "choices": [],
                 "usage": answer["usage"]}]

    def replay(self, answer: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return completions.replay(answer)


class ChatEnding:
    """Each unfinished choice stops with finish_reason "length", those not yet begun too (a
    provider may stream its choices one after the other)."""

    def __init__(self, choices: int = 1) -> None:
        self.choices = choices
        self.started: set[int] = set()
        self.finished: set[int] = set()
        self.last: dict[str, Any] = {}

    def add(self, item: dict[str, Any]) -> None:
        for choice in item.get("choices") or ():
            index = choice.get("index", 0)
            self.started.add(index)
            if choice.get("finish_reason"):
                self.finished.add(index)
        self.last = item

    def cut(self, output_tokens: int) -> list[dict[str, Any]]:
        head: dict[str, Any] = {k: self.last[k] for k in ("id", "created", "model")
                                if k in self.last}
        return [{**head, "object": "chat.completion.chunk",
                 "choices": [{"index": index, "delta": {}, "finish_reason": "length"}]}
                for index in sorted((self.started | set(range(self.choices))) - self.finished)]


class Embeddings(_Answers):
    def input_tally(self, body: dict[str, Any]) -> Tally:
        return tokens.embeddings_tally(body)

    def with_limit(self, body: dict[str, Any], model: Model, limit: int | None,
                   ) -> dict[str, Any]:
        return body  # no output to limit

    def is_complete(self, answer: dict[str, Any], length_ok: bool) -> bool:
        return bool(answer.get("data"))

    def shown(self, answer: dict[str, Any]) -> Any:
        return None  # vectors: nobody reads them in a log


CHAT = Chat()
EMBEDDINGS = Embeddings()
