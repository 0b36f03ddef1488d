"""What the gateway reads of an answer, whatever its wire format: a Form.

The pipeline, the budget, the cache and the relay never read an answer's dict by
key; they ask the request's Form. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from gateway.money.cost import Reported, Usage
from gateway.money.tokens import Tally

if TYPE_CHECKING:
    from gateway.config import Model


class Assembles(Protocol):
    """Fed a stream's items in order; `completion()` is the whole answer they amount to."""

    def add(self, item: dict[str, Any]) -> None: ...

    def completion(self) -> dict[str, Any]: ...


class Ending(Protocol):
    """Follows a stream as it passes; `cut()` is what ends it early, as if the provider had
    reached its output limit (the budget's cut)."""

    def add(self, item: dict[str, Any]) -> None: ...

    def cut(self, output_tokens: int) -> list[dict[str, Any]]:
        """The end, for an answer `output_tokens` long as the budget's watch counted it."""
        ...


class Form(Protocol):
    """One wire format's answers, as the gateway reads them."""

    def input_tally(self, body: dict[str, Any]) -> Tally:
        """The request's input, for counting its tokens."""
        ...

    def with_limit(self, body: dict[str, Any], model: Model, limit: int | None,
                   ) -> dict[str, Any]:
        """The body as `model` is sent it, with the output limit paid for (None: as asked)."""
        ...

    def reported(self, answer: dict[str, Any]) -> Reported:
        """The usage the answer reports; None for counts missing or not believable."""
        ...

    def set_usage(self, answer: dict[str, Any], usage: Usage) -> None:
        """Write the usage charged into the answer, so that the client reads what it paid."""
        ...

    def output_tally(self, answer: dict[str, Any]) -> Tally:
        """The answer's output (text, thinking, tool calls), for counting when unreported."""
        ...

    def choices(self, answer: dict[str, Any]) -> int:
        """How many choices the answer has."""
        ...

    def is_complete(self, answer: dict[str, Any], length_ok: bool) -> bool:
        """Whether the answer is whole, and may be cached; `length_ok` False: one cut at its
        output limit is not (the gateway lowered the limit)."""
        ...

    def same_when_limited(self, body: dict[str, Any], limit: int) -> bool:
        """Whether an answer made with the output limit lowered to `limit` (the budget's
        clamp) answers `body` as sent, when it ended before that limit (and may be cached)."""
        ...

    def shown(self, answer: dict[str, Any]) -> Any:
        """What the usage log keeps of the answer with settings.log_content."""
        ...

    def as_hit(self, encoded: bytes, body: dict[str, Any]) -> bytes:
        """A cached answer (as stored) as the answer to `body`: what the form's API makes a
        response of its own is the asker's, not the first asker's."""
        ...


class StreamForm(Form, Protocol):
    """A Form whose answers may stream, item by item (chunks, or events)."""

    def has_token(self, item: dict[str, Any]) -> bool:
        """Whether the client sees output in this item: a stream falls back until one."""
        ...

    def output_texts(self, item: dict[str, Any]) -> list[str]:
        """The output text this item adds, for the budget's watch."""
        ...

    def searches(self, item: dict[str, Any]) -> int:
        """The web searches this item says the model ran (each billed apart)."""
        ...

    def assembler(self) -> Assembles: ...

    def ending(self, choices: int) -> Ending:
        """For a stream of `choices` choices."""
        ...

    def usage_items(self, answer: dict[str, Any]) -> list[dict[str, Any]]:
        """The items that tell a stream's client the usage of `answer` (charged after the
        budget cut it, so that a client that asked for usage still gets it)."""
        ...

    def replay(self, answer: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The items a provider would have streamed for this whole answer."""
        ...
