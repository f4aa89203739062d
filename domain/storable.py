"""What the log can hold: text every store keeps as it is, JSON every reader can take back.

Checked once at the boundary, before anything is written (request bodies, URL
values, webhook payloads and the headers kept with them), and once more by the
log's mapper as a last guard. Without it a value is stored by one store and
refused by the other, or stored and then stops a projector:

- a lone UTF-16 surrogate (``"\\ud800"`` is valid JSON; CESU-8 bytes and
  undecodable header bytes decode to one too) has no UTF-8 form;
- NUL cannot be held by PostgreSQL text (SQLite takes it: the stores would disagree);
- NaN and Infinity are not JSON; nesting deeper than ``MAX_JSON_DEPTH`` could
  not be read back everywhere.
"""

from __future__ import annotations

import math
from typing import Any

from chainloom.domain.errors import Unprocessable

# Deepest nesting of JSON values the log takes.
MAX_JSON_DEPTH = 100


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None."""
    if "\x00" in text:
        return "must not contain NUL characters"
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return "is not valid Unicode text (it holds an unpaired surrogate)"
    return None


def printable(text: str) -> str:
    """``text`` as it can be quoted back in an error message (no NUL, no unpaired surrogate)."""
    return text.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")


def check_storable(value: Any, name: str) -> None:
    """Refuse (422 naming the field) any text or JSON value in ``value`` the log cannot hold.

    ``name`` is the field's name as the client sent it; nested fields are named
    ``name.key`` and ``name[index]``. Keys are checked like values.
    """
    pending: list[tuple[Any, str, int]] = [(value, name, 1)]
    while pending:
        item, path, depth = pending.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                _refuse(path, problem)
        elif isinstance(item, dict):
            if depth > MAX_JSON_DEPTH:
                _refuse(path, f"nested deeper than {MAX_JSON_DEPTH} levels")
            for key, child in item.items():
                child_path = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and (problem := text_problem(key)) is not None:
                    _refuse(child_path, f"its key {problem}")
                pending.append((child, child_path, depth + 1))
        elif isinstance(item, list):
            if depth > MAX_JSON_DEPTH:
                _refuse(path, f"nested deeper than {MAX_JSON_DEPTH} levels")
            pending.extend((child, f"{path}[{index}]", depth + 1) for index, child in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            _refuse(path, "NaN and Infinity are not JSON")


def _refuse(path: str, problem: str) -> None:
    shown = printable(path)
    raise Unprocessable(f"invalid value for '{shown}': {problem}", param=shown)
