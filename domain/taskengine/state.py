"""CapturedStateUnit (notes §4.8) and Go-style compact JSON (``encoding/json`` output).

Go's encoder sorts map keys, writes no spaces, escapes ``<``, ``>`` and ``&`` as ``\\u003c`` … (and U+2028,
U+2029), and writes floats as ``strconv`` does: integral floats without ``.0``, exponent form below 1e-6 and
from 1e21 on (``1e-07``, ``1e+21``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chainloom.domain.taskengine.gofmt import float_json

_encode_string = json.JSONEncoder(ensure_ascii=False).encode
_HTML = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def go_json(value: Any, *, sort_keys: bool = True) -> str:
    """``value`` as Go's ``json.Marshal`` writes it (compact, sorted keys, HTML-escaped)."""
    parts: list[str] = []
    _write(value, parts, sort_keys)
    return "".join(parts)


def _write(value: Any, out: list[str], sort_keys: bool) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_encode_string(value).translate(_HTML))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(float_json(value))
    elif isinstance(value, dict):
        out.append("{")
        items = sorted(value.items(), key=lambda kv: str(kv[0])) if sort_keys else value.items()
        first = True
        for key, item in items:
            if not first:
                out.append(",")
            first = False
            out.append(_encode_string(str(key)).translate(_HTML))
            out.append(":")
            _write(item, out, sort_keys)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out, sort_keys)
        out.append("]")
    else:
        out.append(_encode_string(str(value)).translate(_HTML))


@dataclass(slots=True)
class CapturedStateUnit:
    """One attempt of one task (notes §4.8); ``to_json`` gives the wire shape."""

    task_id: str
    task_handler: str
    input_type: str
    output_type: str
    transition: str
    duration_ms: float
    error: str
    input: str
    output: str
    input_var: str

    def to_json(self) -> dict[str, Any]:
        return {
            "taskID": self.task_id,
            "taskHandler": self.task_handler,
            "inputType": self.input_type,
            "outputType": self.output_type,
            "transition": self.transition,
            "duration": self.duration_ms,
            "error": {"error": self.error},
            "input": self.input,
            "output": self.output,
            "inputVar": self.input_var,
        }


def debug_text(value: Any) -> str:
    """A task input as the debug state shows it: strings verbatim, other values as compact JSON."""
    if isinstance(value, str):
        return value
    try:
        return go_json(value)
    except ValueError:
        return str(value)
