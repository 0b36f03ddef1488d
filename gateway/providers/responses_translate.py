"""OpenAI Responses -> OpenAI chat (requests) and chat -> Responses (answers). Pure.

A Responses body for a model that speaks only the gateway's chat form (Claude,
Groq, Ollama, litellm's providers). Requests: `instructions` becomes the first
system message, developer messages system ones; an assistant's text and the
function calls that follow it become one assistant message, each
function_call_output a role "tool" message (what else it returned, images, follows
in a user message, since a tool message takes text only); reasoning items are
dropped, for chat cannot take them back (and their encrypted_content means nothing
to another provider). The tools of a `namespace` (Codex's multi_agent_v1) go as
functions named "<namespace>__<name>", and their calls come back split again.
Hosted tools a chat model cannot run: web_search* is dropped (Codex always offers
it; the model answers without searching) unless tool_choice forces it; any other
is refused, with the path of what to remove, as is all else chat cannot say: the
chain then tries a model that speaks Responses natively.
Answers: a whole `response` object, its reasoning as a `reasoning` item without
encrypted_content; every id made here has "gw" in it, so that the native OpenAI
path knows a reasoning item it was not given by OpenAI and leaves it out.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from gateway import output_limit
from gateway.errors import InvalidRequest
from gateway.forms import responses
from gateway.providers.messages_translate import content_text, reasoning_of, text_of

if TYPE_CHECKING:
    from gateway.config import Model

# Joins a namespace's name and its tool's into one chat function name (chat names are
# [a-zA-Z0-9_-], so the "." OpenAI shows between them cannot be used).
NAMESPACE_JOIN = "__"
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
# A call's arguments when a provider sent none (some do, for a tool without parameters):
# what the client parses must be a JSON object.
NO_ARGUMENTS = "{}"
# What of a Responses body is not sent to chat, and why: store, include, metadata,
# prompt_cache_key, client_metadata, service_tier, safety_identifier (the gateway's
# and OpenAI's bookkeeping), truncation (the history goes as sent), background (false:
# true is refused), stream and stream_options (the adapter is asked to stream when
# the client asked), text.verbosity and reasoning.summary (OpenAI's models' own knobs),
# max_tool_calls and top_logprobs (chat has no such field).


def to_chat(body: dict[str, Any], model: Model) -> dict[str, Any]:
    """The OpenAI chat body that asks `model` what `body` asks, but for `stream`."""
    _refuse_state(body)
    messages = _instructions(body.get("instructions"))
    given = body.get("input")
    if isinstance(given, str):
        messages += [{"role": "user", "content": given}] if given else []
    elif isinstance(given, list):
        messages += _Items(namespaced(body)).messages(given)
    else:
        raise InvalidRequest("input: must be a string or a list of input items", param="input")
    if all(m["role"] == "system" for m in messages):
        raise InvalidRequest("input: no item has any content to send", param="input")
    chat: dict[str, Any] = {"model": model.name, "messages": messages}
    for name in ("temperature", "top_p", "user"):
        if body.get(name) is not None:
            chat[name] = body[name]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]
    tools = _tools(body.get("tools") or (), body.get("tool_choice"))
    if tools:  # OpenAI refuses tool_choice and parallel_tool_calls without tools
        chat["tools"] = tools
        if (choice := _tool_choice(body.get("tool_choice"), body)) is not None:
            chat["tool_choice"] = choice
        if isinstance(body.get("parallel_tool_calls"), bool):
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    if (response_format := _response_format(body.get("text"))) is not None:
        chat["response_format"] = response_format
    limit = body.get("max_output_tokens")
    return output_limit.with_limit(
        chat, model, limit if isinstance(limit, int) and not isinstance(limit, bool) else None)


def _refuse_state(body: dict[str, Any]) -> None:
    """What only OpenAI keeps: the gateway expands its own previous_response_id before
    this, so one still here names a response another provider made."""
    if body.get("previous_response_id"):
        raise InvalidRequest("previous_response_id: not in the gateway's store; only the "
                             "provider that made it can continue it", param="previous_response_id")
    for name, what in (("conversation", "a conversation"), ("prompt", "a prompt template")):
        if body.get(name):
            raise InvalidRequest(f"{name}: {what} is kept by OpenAI, and this model is not "
                                 f"served by OpenAI: send its items in input instead",
                                 param=name)
    if body.get("background"):
        raise InvalidRequest("background: only OpenAI's models answer in the background",
                             param="background")


def _instructions(instructions: Any) -> list[dict[str, Any]]:
    if instructions is None or instructions == "":
        return []
    if isinstance(instructions, str):
        return [{"role": "system", "content": instructions}]
    raise InvalidRequest("instructions: must be a string", param="instructions")


class _Items:
    """The input items, in order, as chat messages. An assistant message under way (its
    text, then its tool calls) is held until an item of another kind ends it; so are the
    files the tool outputs returned, sent after the last of a run of tool messages."""

    def __init__(self, names: dict[tuple[str, str], str]) -> None:
        self._names = names  # (namespace, name) -> the chat function name
        self._out: list[dict[str, Any]] = []
        self._assistant: dict[str, Any] | None = None
        self._attached: list[dict[str, Any]] = []

    def messages(self, items: list[Any]) -> list[dict[str, Any]]:
        for i, item in enumerate(items):
            self._item(item, f"input.{i}")
        self._end_turn()
        return self._out

    def _item(self, item: Any, path: str) -> None:
        if not isinstance(item, dict):
            raise InvalidRequest(f"{path}: an input item must be an object", param=path)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "reasoning":
            return  # chat cannot take reasoning back
        if kind == "function_call_output":
            self._end_assistant()
            self._output(item, path)
            return
        self._end_outputs()
        if kind == "function_call":
            self._call(item)
        elif kind == "message":
            self._message(item, path)
        else:
            raise InvalidRequest(
                f"{path}.type: '{kind}' items can be sent only to OpenAI's models; remove "
                f"the item (input item {path.rsplit('.', 1)[1]}), or ask for a tier of OpenAI "
                "models", param=f"{path}.type")

    def _message(self, item: dict[str, Any], path: str) -> None:
        role = ROLES.get(str(item.get("role")))
        if role is None:
            raise InvalidRequest(f"{path}.role: must be 'user', 'assistant', 'system' or "
                                 "'developer'", param=f"{path}.role")
        content = item.get("content")
        if role == "assistant":
            text = _assistant_text(content, path)
            if text:
                if self._assistant is not None and "tool_calls" in self._assistant:
                    self._end_assistant()  # text after calls: the next message's
                message = self._assistant_message()
                message["content"] = "\n\n".join(filter(None, (message["content"], text)))
            return
        self._end_assistant()
        parts = _parts(content, path)
        if role == "system":
            if any(p["type"] != "text" for p in parts):
                raise InvalidRequest(f"{path}.content: a {item.get('role')} message can hold "
                                     "text only", param=f"{path}.content")
            text = "\n\n".join(p["text"] for p in parts)
            self._out += [{"role": "system", "content": text}] if text else []
        elif len(parts) == 1 and parts[0]["type"] == "text":
            self._out.append({"role": "user", "content": parts[0]["text"]})
        elif parts:
            self._out.append({"role": "user", "content": parts})

    def _call(self, item: dict[str, Any]) -> None:
        name = str(item.get("name") or "")
        namespace = item.get("namespace")
        if isinstance(namespace, str) and namespace:
            name = self._names.get((namespace, name), namespace + NAMESPACE_JOIN + name)
        arguments = item.get("arguments")
        self._assistant_message().setdefault("tool_calls", []).append({
            "id": str(item.get("call_id") or ""), "type": "function", "function": {
                "name": name, "arguments": arguments if isinstance(arguments, str)
                else orjson.dumps(arguments or {}).decode()}})

    def _output(self, item: dict[str, Any], path: str) -> None:
        text, files = _tool_output(item.get("output"), f"{path}.output")
        call_id = item.get("call_id")
        if not call_id:
            # An output no call asked for (Codex's goal_objective, by name): chat has no
            # tool message without a call, so the model reads it as the user's words.
            tool = ".".join(str(item[k]) for k in ("namespace", "name") if item.get(k))
            said = f"Output of the tool {tool or 'call'}:\n{text}"
            self._out.append({"role": "user", "content": [{"type": "text", "text": said},
                                                          *files] if files else said})
            return
        self._out.append({"role": "tool", "tool_call_id": str(call_id), "content": text})
        if files:  # a tool message takes text only: what else it returned follows
            self._attached += [{"type": "text", "text": f"The result of tool call {call_id} "
                                "came with these files:"}, *files]

    def _assistant_message(self) -> dict[str, Any]:
        if self._assistant is None:
            self._assistant = {"role": "assistant", "content": None}
        return self._assistant

    def _end_assistant(self) -> None:
        if self._assistant is not None:
            self._out.append(self._assistant)
            self._assistant = None

    def _end_outputs(self) -> None:
        if self._attached:
            self._out.append({"role": "user", "content": self._attached})
            self._attached = []

    def _end_turn(self) -> None:
        self._end_assistant()
        self._end_outputs()


def _assistant_text(content: Any, path: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"{path}.content: must be a string or a list of content parts",
                             param=f"{path}.content")
    texts = []
    for j, part in enumerate(content):
        kind = _kind(part, f"{path}.content.{j}")
        if kind in ("output_text", "input_text"):
            texts.append(text_of(part.get("text")))
        elif kind == "refusal":
            texts.append(text_of(part.get("refusal")))
        else:
            raise InvalidRequest(f"{path}.content.{j}.type: '{kind}' parts cannot be in an "
                                 "assistant message", param=f"{path}.content.{j}.type")
    return "".join(texts)


def _kind(part: Any, path: str) -> str:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise InvalidRequest(f"{path}: a content part must be an object with a type",
                             param=path)
    return str(part["type"])


def _parts(content: Any, path: str) -> list[dict[str, Any]]:
    """A user, system or developer message's content as chat content parts."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequest(f"{path}.content: must be a string or a list of content parts",
                             param=f"{path}.content")
    return [p for j, part in enumerate(content) for p in _part(part, f"{path}.content.{j}")]


def _part(part: Any, path: str) -> list[dict[str, Any]]:
    kind = _kind(part, path)
    if kind in ("input_text", "output_text"):
        return [{"type": "text", "text": part["text"]}] if part.get("text") else []
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        image: dict[str, Any] = {"url": part["image_url"]}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return [{"type": "image_url", "image_url": image}]
    if kind == "input_file" and isinstance(part.get("file_data"), str):
        file = {"file_data": part["file_data"],
                "filename": str(part.get("filename") or "document.pdf")}
        return [{"type": "file", "file": file}]
    if kind in ("input_image", "input_file"):
        raise InvalidRequest(
            f"{path}: a file kept by OpenAI (file_id) or fetched by it (file_url) can be read "
            f"only by OpenAI's models; send the {kind} as data (images also as an image_url)",
            param=path)
    raise InvalidRequest(f"{path}.type: '{kind}' is not a content part a message can "
                         "hold", param=f"{path}.type")


def _tool_output(output: Any, path: str) -> tuple[str, list[dict[str, Any]]]:
    """A function_call_output's text, and its images and files as content parts."""
    if isinstance(output, str):
        return output, []
    if not isinstance(output, list):
        raise InvalidRequest(f"{path}: must be a string or a list of content parts",
                             param=path)
    texts: list[str] = []
    files: list[dict[str, Any]] = []
    for j, part in enumerate(output):
        for p in _part(part, f"{path}.{j}"):
            if p["type"] == "text":
                texts.append(p["text"])
            else:
                files.append(p)
    return "\n".join(texts), files


def namespaced(body: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(namespace, tool name) -> the chat function name, for the namespaces of `body`."""
    return {(str(tool.get("name")), str(inner.get("name"))):
            f"{tool.get('name')}{NAMESPACE_JOIN}{inner.get('name')}"
            for tool in body.get("tools") or () if isinstance(tool, dict)
            and tool.get("type") == "namespace"
            for inner in tool.get("tools") or () if isinstance(inner, dict)}


def _tools(tools: Any, choice: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        path = f"tools.{i}"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "function":
            out.append(_function(tool, path))
        elif kind == "namespace":
            for j, inner in enumerate(tool.get("tools") or ()):
                inner_path = f"{path}.tools.{j}"
                if not isinstance(inner, dict) or inner.get("type") != "function":
                    raise InvalidRequest(f"{inner_path}: only function tools of a namespace "
                                         "can be translated", param=inner_path)
                function = _function(inner, inner_path)["function"]
                function["name"] = f"{tool.get('name')}{NAMESPACE_JOIN}{function['name']}"
                about = " ".join(filter(None, (tool.get("description"),
                                               function.get("description"))))
                if about:
                    function["description"] = about
                out.append({"type": "function", "function": function})
        elif isinstance(kind, str) and kind.startswith("web_search"):
            if isinstance(choice, dict) and str(choice.get("type")).startswith("web_search"):
                raise InvalidRequest(f"tool_choice: forces {kind}, which only OpenAI's models "
                                     "can run; do not force it, or ask for a tier of OpenAI "
                                     "models", param="tool_choice")
        else:
            raise InvalidRequest(
                f"{path}: a tool of type '{kind}' runs only with OpenAI's models; remove it, "
                "or ask for a tier of OpenAI models", param=path)
    return out


def _function(tool: dict[str, Any], path: str) -> dict[str, Any]:
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise InvalidRequest(f"{path}.name: a function tool must have a name",
                             param=f"{path}.name")
    function: dict[str, Any] = {
        "name": tool["name"],
        "parameters": tool.get("parameters") or {"type": "object", "properties": {}}}
    if tool.get("description"):
        function["description"] = tool["description"]
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, body: dict[str, Any]) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = str(choice.get("name"))
        namespace = choice.get("namespace")
        if isinstance(namespace, str) and namespace:
            name = namespaced(body).get((namespace, name), name)
        return {"type": "function", "function": {"name": name}}
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise InvalidRequest(f"tool_choice: '{kind}' cannot be translated; use auto, none, "
                         "required or a function", param="tool_choice")


def _response_format(text: Any) -> dict[str, Any] | None:
    given = text.get("format") if isinstance(text, dict) else None
    if not isinstance(given, dict) or given.get("type") in (None, "text"):
        return None
    if given["type"] == "json_object":
        return {"type": "json_object"}
    if given["type"] == "json_schema" and isinstance(given.get("schema"), dict):
        schema: dict[str, Any] = {"name": str(given.get("name") or "output"),
                                  "schema": given["schema"]}
        for name in ("description", "strict"):
            if given.get(name) is not None:
                schema[name] = given[name]
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequest("text.format: only text, json_object and json_schema (with a schema) "
                         "can be translated", param="text.format")


# --- answers ---------------------------------------------------------------------------

def from_chat(completion: dict[str, Any], model_name: str,
              body: dict[str, Any]) -> dict[str, Any]:
    """A chat.completion as the Responses `response` object it amounts to."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    if reasoning := reasoning_of(message):
        output.append(reasoning_item(new_id("rs"), reasoning))
    content = []
    if text := content_text(message.get("content")):
        content.append(text_part(text))
    if refusal := text_of(message.get("refusal")):
        content.append(refusal_part(refusal))
    if content:
        output.append(message_item(new_id("msg"), content))
    names = {chat: key for key, chat in namespaced(body).items()}
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if not isinstance(arguments, str):  # an object (Ollama's), or none
            arguments = orjson.dumps(arguments or {}).decode()
        output.append(function_call_item(
            new_id("fc"), str(call.get("id") or new_id("call")), str(function.get("name") or ""),
            arguments if arguments.strip() else NO_ARGUMENTS, names))
    return response(skeleton(body, model_name, new_id("resp"), int(time.time())), output,
                    choice.get("finish_reason"), completion.get("usage"))


new_id = responses.new_id  # every id the gateway makes carries its mark


def skeleton(body: dict[str, Any], model_name: str, response_id: str,
             created_at: int) -> dict[str, Any]:
    """The response as it is before any output: in progress, with the request's settings
    echoed as OpenAI echoes them."""
    given = body.get("text")
    text: dict[str, Any] = given if isinstance(given, dict) else {}
    out: dict[str, Any] = {
        "id": response_id, "object": "response", "created_at": created_at,
        "status": "in_progress", "background": False, "error": None,
        "incomplete_details": None, "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {}, "model": model_name, "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None, "reasoning": body.get("reasoning"),
        "store": body.get("store", True), "temperature": body.get("temperature"),
        "text": {**text, "format": text.get("format") or {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": [_echoed(tool) for tool in body.get("tools") or ()],
        "top_p": body.get("top_p"), "truncation": body.get("truncation") or "disabled"}
    if isinstance(body.get("user"), str):
        out["user"] = body["user"]
    return out


def _echoed(tool: Any) -> Any:
    """A function tool as OpenAI echoes it, its optional fields filled: `strict` is false
    unless asked (the translation sends chat no strict mode the client did not ask for)."""
    if isinstance(tool, dict) and tool.get("type") == "function":
        return {"description": None, "strict": False, **tool}
    return tool


def response(opened: dict[str, Any], output: list[dict[str, Any]], finish_reason: Any,
             chat_usage: Any) -> dict[str, Any]:
    """The finished response: `opened` (the skeleton) with its output and usage."""
    cut = INCOMPLETE.get(str(finish_reason))
    return {**opened, "status": "incomplete" if cut else "completed",
            "incomplete_details": {"reason": cut} if cut else None,
            "output": output, "usage": usage(chat_usage)}


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id,
            "summary": [{"type": "summary_text", "text": text}]}


def message_item(item_id: str, content: list[dict[str, Any]],
                 status: str = "completed") -> dict[str, Any]:
    return {"type": "message", "id": item_id, "role": "assistant", "status": status,
            "content": content}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def refusal_part(refusal: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": refusal}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str,
                       names: dict[str, tuple[str, str]],
                       status: str = "completed") -> dict[str, Any]:
    """A function_call item; a namespaced tool's chat name (in `names`) split back."""
    item = {"type": "function_call", "id": item_id, "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}
    if name in names:
        item["namespace"], item["name"] = names[name]
    return item


def usage(chat_usage: Any) -> dict[str, Any]:
    """OpenAI chat's usage as Responses': input_tokens counts the cached ones too,
    output_tokens the reasoning ones too, as in chat."""
    given = chat_usage if isinstance(chat_usage, dict) else {}
    prompt_details = given.get("prompt_tokens_details")
    prompt_details = prompt_details if isinstance(prompt_details, dict) else {}
    completion_details = given.get("completion_tokens_details")
    completion_details = completion_details if isinstance(completion_details, dict) else {}
    prompt = _count(given.get("prompt_tokens"))
    completion = _count(given.get("completion_tokens"))
    cached = min(_count(prompt_details.get("cached_tokens")), prompt)
    return {"input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": min(
                _count(prompt_details.get("cache_creation_tokens")), prompt - cached)},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": min(
                _count(completion_details.get("reasoning_tokens")), completion)},
            "total_tokens": prompt + completion}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
