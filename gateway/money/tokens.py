"""Token counts for budgets: estimates that err high, never low.

Text is counted with OpenAI's cl100k tokenizer (tiktoken, reading the files
litellm bundles, so it works offline without importing litellm). That count
is exact or high for OpenAI's models (newer ones use a larger vocabulary, so
fewer tokens). Other providers' tokenizers cut the same text into more pieces
(Claude's by about 10-30%), so for their models the count is multiplied by
OTHER_TOKENIZERS, and capped at the UTF-8 byte count, which bounds any
byte-level tokenizer.

That byte count is also a bound that needs no tokenizer at all: a request is
first priced on it, and the tokenizer runs (and is loaded, the first time)
only when that bound does not fit in what is left of a budget.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import os
import re
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.config import Model
from gateway.providers import litellm_data

OTHER_TOKENIZERS = 1.35
OPENAI_FAMILIES = ("gpt-", "o1", "o3", "o4", "chatgpt-", "text-embedding-", "davinci", "babbage")
PER_MESSAGE = 4  # role and separators, as OpenAI's chat format adds them
PER_REPLY = 3  # the assistant's turn opened for the answer
PER_IMAGE = 2_000  # above what Claude (about 1,600) and GPT-4o (up to 1,105) bill for one
# The system prompt a provider adds when tools are offered (Claude: 313 to 346 tokens; a
# JSON response_format is sent to Claude as a tool).
PER_TOOLS = 400
ENCODING = "cl100k_base"
# A PDF is billed by the page, whatever its size: Anthropic counts 1,500 to 3,000 tokens a
# page (its text and the page as an image), and takes at most 100 pages a request.
PER_PDF_PAGE = 3_000
MAX_PDF_PAGES = 100
PDF_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")
PDF_SCANNED_B64 = 4 * 1024 * 1024  # a larger PDF is taken as MAX_PDF_PAGES, not read


@functools.cache
def _encoding() -> Any:
    """Loaded once, when first needed (about 0.1 s and 40 MB): see `loaded`."""
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        os.environ["TIKTOKEN_CACHE_DIR"] = str(litellm_data.tokenizer_dir())
    import tiktoken

    return tiktoken.get_encoding(ENCODING)


def loaded() -> bool:
    """Whether counting is cheap now; until it is, count off the event loop."""
    return _encoding.cache_info().currsize > 0


def count_text(text: str) -> int:
    return len(_encoding().encode_ordinary(text)) if text else 0


@dataclass(frozen=True)
class Counted:
    """A request's input as counted once; `for_model` turns it into that model's estimate."""

    text_tokens: int
    text_bytes: int
    fixed_tokens: int  # message framing and images: the same for every tokenizer

    def __add__(self, other: Counted) -> Counted:
        return Counted(self.text_tokens + other.text_tokens, self.text_bytes + other.text_bytes,
                       self.fixed_tokens + other.fixed_tokens)

    def for_model(self, model: Model) -> int:
        if is_openai_family(model):
            text = self.text_tokens
        else:
            text = min(math.ceil(self.text_tokens * OTHER_TOKENIZERS), self.text_bytes)
        return text + self.fixed_tokens


def is_openai_family(model: Model) -> bool:
    return model.provider_model.lower().startswith(OPENAI_FAMILIES)


class Tally:
    """The text of a request, gathered; counting it is the part that takes time."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.fixed = 0

    @property
    def size(self) -> int:
        return sum(len(part) for part in self.parts)

    def text(self, value: Any) -> None:
        if isinstance(value, str):
            self.parts.append(value)
        elif value is not None:
            self.parts.append(orjson.dumps(value).decode())

    def counted(self) -> Counted:
        text = "\n".join(self.parts)
        return Counted(count_text(text), len(text.encode()), self.fixed)

    def bound(self) -> Counted:
        """A count no tokenizer exceeds, without one: every token is at least one byte."""
        size = len("\n".join(self.parts).encode())
        return Counted(size, size, self.fixed)


def chat_tally(body: dict[str, Any]) -> Tally:
    tally = Tally()
    for message in body.get("messages") or ():
        tally.fixed += PER_MESSAGE
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") in ("image_url", "input_image"):
                    tally.fixed += PER_IMAGE
                elif isinstance(part, dict) and (pdf := _file_pdf(part)) is not None:
                    tally.fixed += pdf_tokens(pdf)
                elif isinstance(part, dict) and part.get("type") == "text":
                    tally.text(part.get("text"))
                else:
                    tally.text(part)
        else:
            tally.text(content)
        for name in ("name", "tool_calls", "function_call"):
            tally.text(message.get(name))
    if body.get("tools") or body.get("functions") or body.get("response_format"):
        tally.fixed += PER_TOOLS
    for name in ("tools", "functions", "tool_choice", "response_format"):
        tally.text(body.get(name))
    tally.fixed += PER_REPLY
    return tally


def messages_tally(body: dict[str, Any]) -> Tally:
    """An Anthropic Messages body: the system prompt, every block's text (a tool's input and
    result, thinking, a document's data: all err high), images at PER_IMAGE, and the tools."""
    tally = Tally()
    _blocks_tally(tally, body.get("system"))
    for message in body.get("messages") or ():
        tally.fixed += PER_MESSAGE
        _blocks_tally(tally, message.get("content") if isinstance(message, dict) else message)
    if body.get("tools"):
        tally.fixed += PER_TOOLS
    for name in ("tools", "tool_choice"):
        tally.text(body.get(name))
    tally.fixed += PER_REPLY
    return tally


def pdf_tokens(data: str) -> int:
    """The tokens a base64 PDF may be billed: PER_PDF_PAGE a page it holds, or, where its
    pages cannot be told (compressed object streams, too large to read here), the most."""
    pages = 0
    if len(data) <= PDF_SCANNED_B64:
        try:
            pages = len(PDF_PAGE.findall(base64.b64decode(data)))
        except (binascii.Error, ValueError):
            pages = 0
    return PER_PDF_PAGE * (min(pages, MAX_PDF_PAGES) if pages else MAX_PDF_PAGES)


def _pdf_source(block: dict[str, Any]) -> str | None:
    """The base64 data of a document block that is a PDF."""
    source = block.get("source")
    if (isinstance(source, dict) and source.get("type") == "base64"
            and source.get("media_type") == "application/pdf"
            and isinstance(source.get("data"), str)):
        return str(source["data"])
    return None


def _blocks_tally(tally: Tally, content: Any) -> None:
    if not isinstance(content, list):
        tally.text(content)
        return
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "image":
            tally.fixed += PER_IMAGE
        elif kind == "document" and (pdf := _pdf_source(block)) is not None:
            tally.fixed += pdf_tokens(pdf)
        elif kind == "text":
            tally.text(block.get("text"))
        elif kind == "tool_result":
            _blocks_tally(tally, block.get("content"))
        else:
            tally.text(block)


def _file_pdf(part: dict[str, Any]) -> str | None:
    """The base64 data of an OpenAI `file` part holding a PDF (a data URL)."""
    file = part.get("file") if part.get("type") == "file" else None
    data = file.get("file_data") if isinstance(file, dict) else None
    prefix = "data:application/pdf;base64,"
    return data[len(prefix):] if isinstance(data, str) and data.startswith(prefix) else None


def embeddings_tally(body: dict[str, Any]) -> Tally:
    tally = Tally()
    given = body.get("input")
    for item in given if isinstance(given, list) else [given]:
        if isinstance(item, int):
            tally.fixed += 1  # token ids are tokens already
        elif isinstance(item, list):
            tally.fixed += len(item)
        else:
            tally.text(item)
    return tally


def output_tally(answer: dict[str, Any]) -> Tally:
    """An answer's text and tool calls: for a stream with no usage to go by."""
    tally = Tally()
    for choice in answer.get("choices") or ():
        message = choice.get("message") or {}
        for name in ("content", "refusal", "reasoning_content", "tool_calls"):
            tally.text(message.get(name))
    return tally


def responses_tally(body: dict[str, Any]) -> Tally:
    """An OpenAI Responses body: the instructions, every input item (a message's text parts,
    images at PER_IMAGE, PDFs by the page; a call's name and arguments, its output; anything
    else whole, which errs high), and the tools."""
    tally = Tally()
    tally.text(body.get("instructions"))
    given = body.get("input")
    for item in given if isinstance(given, list) else [given]:
        tally.fixed += PER_MESSAGE
        if not isinstance(item, dict):
            tally.text(item)
            continue
        content = item.get("content", item.get("output"))
        if isinstance(content, list):
            for part in content:
                _response_part(tally, part)
        elif content is not None:
            tally.text(content)
        rest = {k: v for k, v in item.items()
                if k not in ("content", "output", "type", "role", "id", "status", "call_id")}
        if rest:
            tally.text(rest)
    if body.get("tools") or body.get("text"):
        tally.fixed += PER_TOOLS
    for name in ("tools", "tool_choice", "text"):
        tally.text(body.get(name))
    tally.fixed += PER_REPLY
    return tally


def _response_part(tally: Tally, part: Any) -> None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "input_image":
        tally.fixed += PER_IMAGE
    elif kind == "input_file":
        data, prefix = part.get("file_data"), "data:application/pdf;base64,"
        if isinstance(data, str) and data.startswith(prefix):
            tally.fixed += pdf_tokens(data[len(prefix):])
        elif isinstance(data, str):
            tally.text(data)
        else:  # by file_id or file_url: its size cannot be told here, so the most a file bills
            tally.fixed += PER_PDF_PAGE * MAX_PDF_PAGES
    elif kind in ("input_text", "output_text", "summary_text", "reasoning_text"):
        tally.text(part.get("text"))
    else:
        tally.text(part)
