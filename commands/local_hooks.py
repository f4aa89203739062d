"""Built-in ("local") hooks: hook tasks the seeded chat chains call, served in this process.

The engine has a slot for in-process hooks beside the remote ones (notes §8.1); these fill it.
``HookRunner`` (``commands.hooks``) looks a hook name up here first, so a chain calls them exactly like
a remote hook — ``{"handler": "hook", "hook": {"name": "chat_commands", "tool_name": "echo"}}`` — and
an operator can rewire or drop them by editing the chain. A remote hook of the same name is shadowed.

* ``chat_commands`` — the chat commands of ``chat_chain`` (platform notes §10.1). Each tool takes the
  chat history (the task input, ``chat_history``):

  - ``echo``: answers the text after ``/echo``;
  - ``help``: answers the list of the three commands;
  - ``search``: answers the documents a knowledge search finds for the text after ``/search``
    (a failed search is answered too: a command's reply, not a failed chat);
  - ``message``: the text of the last user message (``string``), for the rating prompts to quote.

  ``echo``, ``help`` and ``search`` return the history with an ``assistant`` message appended.
* ``knowledge`` — tool ``search``: searches the documents for the last user message and appends the best
  hit's whole file content to the history as a ``system`` message (the search results); the history
  unchanged when nothing is near enough.

The search (``Knowledge``) is ``queries.search.SearchQueries.search`` with the notes' parameters:
top 3, at most ``MAX_DISTANCE`` (0.5) away; the file is read from the blob store as its content type
says (``infra.text_extract``: plain text or a PDF's text).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from chainloom.domain.errors import DomainError
from chainloom.domain.hooks import HookNotUsable
from chainloom.domain.taskengine.values import CHAT_HISTORY, STRING, message
from chainloom.infra.text_extract import UnreadableDocument, decode_text, document_text
from chainloom.queries.files import FileRow
from chainloom.queries.search import SearchRequest

Json = dict[str, Any]

CHAT_COMMANDS = "chat_commands"
KNOWLEDGE = "knowledge"

# The chat chain's knowledge search (platform notes §10.1: top 3, radius 0.03, epsilon 0.01, max distance
# 0.5). The reference's radius tunes an approximate (Vald) search that has no counterpart in the exact one
# here: what bounds the hits is the maximum distance, which is what our search's radius means
# (``SearchRequest.max_distance``, applied when epsilon is given too).
TOP_K = 3
EPSILON = 0.01
MAX_DISTANCE = 0.5
# The most of a file's text appended to a chat history (a history is stored with the chat).
MAX_CONTENT = 64 * 1024

HELP_TEXT = (
    "Commands:\n"
    "/echo <text> - repeats the text\n"
    "/help - lists these commands\n"
    "/search <query> - searches the documents of the knowledge base\n"
    "Anything else is answered by the assistant."
)


class LocalHook(Protocol):
    """A hook served in this process: its tools (OpenAI function tools, names not prefixed) and a call."""

    name: str

    def tools(self) -> list[Json]: ...

    async def call(self, tool_name: str, args: Mapping[str, Any]) -> tuple[Any, str]:
        """(value, type name); ``HookNotUsable`` for an unknown tool or an input it cannot take."""


class LocalHooks:
    """The registry ``HookRunner`` consults before the remote hooks."""

    def __init__(self, *hooks: LocalHook) -> None:
        self._hooks: dict[str, LocalHook] = {}
        for hook in hooks:
            self.add(hook)

    def add(self, hook: LocalHook) -> None:
        self._hooks[hook.name] = hook

    def get(self, name: str) -> LocalHook | None:
        return self._hooks.get(name)

    def names(self) -> list[str]:
        return sorted(self._hooks)


# -- the knowledge search -----------------------------------------------------------------------------------


class Search(Protocol):
    """``queries.search.SearchQueries``."""

    async def search(self, request: SearchRequest, took: dict[str, float] | None = None) -> Json: ...


class Files(Protocol):
    """``queries.files.FileQueries``."""

    async def files_by_ids(self, ids: Iterable[str]) -> dict[str, FileRow]: ...


class Reader(Protocol):
    async def read(self) -> bytes: ...

    async def close(self) -> None: ...


class Blobs(Protocol):
    """``infra.blobs.BlobStore``."""

    async def open(self, digest: str) -> Reader: ...


@dataclass(frozen=True)
class Found:
    file: FileRow
    distance: float


class Knowledge:
    """The documents a chat may draw on: a search, and the text of a file found."""

    def __init__(
        self, search: Search, files: Files, blobs: Blobs, run_blocking: Callable[..., Awaitable[Any]]
    ) -> None:
        self._search = search
        self._files = files
        self._blobs = blobs
        self._run_blocking = run_blocking

    async def find(self, query: str) -> list[Found]:
        """The files nearest ``query`` (at most ``TOP_K``, none farther than ``MAX_DISTANCE``), nearest first."""
        if not query.strip():
            return []
        answer = await self._search.search(SearchRequest(query, topk=TOP_K, radius=MAX_DISTANCE, epsilon=EPSILON))
        hits = [(hit["id"], float(hit["distance"])) for hit in answer["results"] if hit["distance"] <= MAX_DISTANCE]
        rows = await self._files.files_by_ids(file_id for file_id, _ in hits)
        return [Found(rows[file_id], distance) for file_id, distance in hits if file_id in rows]

    async def text(self, file: FileRow) -> str:
        """The file's text (at most ``MAX_CONTENT`` characters)."""
        reader = await self._blobs.open(file.hash)
        try:
            parts = []
            while chunk := await reader.read():
                parts.append(chunk)
        finally:
            await reader.close()
        text: str = await self._run_blocking(_readable, b"".join(parts), file.content_type)
        return text[:MAX_CONTENT]


def _readable(data: bytes, content_type: str) -> str:
    try:
        return document_text(data, content_type)
    except UnreadableDocument:
        return decode_text(data)  # JSON, or a PDF pypdf cannot read: its bytes as UTF-8


# -- the hooks ----------------------------------------------------------------------------------------------


class ChatCommandsHook:
    """``chat_commands``: ``echo``, ``help``, ``search`` answer a command; ``message`` is the user's text."""

    name = CHAT_COMMANDS

    def __init__(self, knowledge: Knowledge | None = None) -> None:
        self._knowledge = knowledge

    def tools(self) -> list[Json]:
        return []  # they take a chat history, not a model's arguments: nothing to offer a model

    async def call(self, tool_name: str, args: Mapping[str, Any]) -> tuple[Any, str]:
        if tool_name == "message":
            return last_user_text(_history(tool_name, args)), STRING
        if tool_name == "echo":
            history = _history(tool_name, args)
            return answered(history, argument(last_user_text(history)) or "Usage: /echo <text>"), CHAT_HISTORY
        if tool_name == "help":
            return answered(_history(tool_name, args), HELP_TEXT), CHAT_HISTORY
        if tool_name == "search":
            history = _history(tool_name, args)
            return answered(history, await self._search(argument(last_user_text(history)))), CHAT_HISTORY
        raise HookNotUsable(f"tool '{tool_name}' not found in the built-in hook {self.name}")

    async def _search(self, query: str) -> str:
        if not query:
            return "Usage: /search <query>"
        if self._knowledge is None:
            return "The knowledge search is not available here."
        try:
            found = await self._knowledge.find(query)
        except DomainError as error:
            return f"The search failed: {error.message}"
        if not found:
            return f'No documents found for "{query}".'
        lines = [f'Documents found for "{query}":']
        lines += [f"{n}. {hit.file.path} (distance {hit.distance:.3f})" for n, hit in enumerate(found, 1)]
        return "\n".join(lines)


class KnowledgeSearch:
    """``knowledge``: tool ``search`` appends the best document for the last user message as search results."""

    name = KNOWLEDGE

    def __init__(self, knowledge: Knowledge) -> None:
        self._knowledge = knowledge

    def tools(self) -> list[Json]:
        return []

    async def call(self, tool_name: str, args: Mapping[str, Any]) -> tuple[Any, str]:
        if tool_name != "search":
            raise HookNotUsable(f"tool '{tool_name}' not found in the built-in hook {self.name}")
        history = _history(tool_name, args)
        found = await self._knowledge.find(last_user_text(history))
        if not found:
            return history, CHAT_HISTORY
        best = found[0]
        content = await self._knowledge.text(best.file)
        results = f"Search results from the knowledge base (document {best.file.path}):\n\n{content}"
        return appended(history, message("system", results)), CHAT_HISTORY


# -- chat histories ------------------------------------------------------------------------------------------


def _history(tool_name: str, args: Mapping[str, Any]) -> Json:
    history = args.get("input")
    if not isinstance(history, dict) or not isinstance(history.get("messages"), list):
        raise HookNotUsable(f"tool '{tool_name}' takes a chat_history input")
    return history


def last_user_text(history: Mapping[str, Any]) -> str:
    """The content of the last user message (of the last message when there is none)."""
    messages = [m for m in history.get("messages") or () if isinstance(m, dict)]
    for item in reversed(messages):
        if item.get("role") == "user":
            return str(item.get("content") or "")
    return str(messages[-1].get("content") or "") if messages else ""


def argument(text: str) -> str:
    """What follows a command: ``/echo  hello there`` → ``hello there``."""
    parts = text.strip().split(None, 1)
    return parts[1].strip() if len(parts) > 1 else ""


def appended(history: Mapping[str, Any], item: Json) -> Json:
    """A copy of ``history`` with ``item`` appended (the input is never changed: it is a variable of the run)."""
    return {**history, "messages": [*history.get("messages", ()), item]}


def answered(history: Mapping[str, Any], text: str) -> Json:
    return appended(history, message("assistant", text))
