"""Go's text forms of values: ``%v`` (fmt) and the JSON encoder's floats (notes §4.4, §4.8)."""

from __future__ import annotations

import math
from typing import Any


def _digits(value: float) -> tuple[bool, str, int]:
    """The shortest round-trip decimal digits of a finite non-zero float: (negative, digits, point), where
    the value is ``0.<digits> × 10**point``."""
    text = repr(value)
    negative = text.startswith("-")
    text = text.lstrip("-")
    mantissa, _, exponent = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    point = len(whole) + (int(exponent) if exponent else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0") or "0"
    return negative, digits, point


def _fixed(digits: str, point: int) -> str:
    if point <= 0:
        return "0." + "0" * (-point) + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def _exponent(digits: str, point: int, min_digits: int) -> str:
    exp = point - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    sign = "-" if exp < 0 else "+"
    return f"{mantissa}e{sign}{abs(exp):0{min_digits}d}"


def float_v(value: float) -> str:
    """``fmt.Sprint(float64)`` (``%v`` is ``%g`` at the shortest precision): the shortest round-trip digits,
    in exponent form when the decimal exponent is < -4 or ≥ 6 (``1.234567e+06``, ``1e-05``, at least two
    exponent digits), otherwise fixed without ``.0`` (``4``, ``0.5``, ``123456``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    negative, digits, point = _digits(value)
    exp = point - 1
    text = _exponent(digits, point, 2) if exp < -4 or exp >= 6 else _fixed(digits, point)
    return ("-" if negative else "") + text


def float_json(value: float) -> str:
    """A float as Go's ``encoding/json`` writes it: fixed without ``.0``, exponent form below 1e-6 and from
    1e21 (``1e-7``, ``1e+21``)."""
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"json: unsupported value: {value!r}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    negative, digits, point = _digits(value)
    magnitude = abs(value)
    text = _exponent(digits, point, 1) if magnitude < 1e-6 or magnitude >= 1e21 else _fixed(digits, point)
    return ("-" if negative else "") + text


def value_v(value: Any, top: bool = True) -> str:
    """``fmt.Sprint`` of a value decoded from JSON (``%v``); a null at the top is ``<no value>`` as
    text/template prints a missing key or a nil value, ``<nil>`` inside a map or list."""
    if value is None:
        return "<no value>" if top else "<nil>"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return float_v(value)
    if isinstance(value, dict):
        items = " ".join(f"{key}:{value_v(value[key], False)}" for key in sorted(value, key=str))
        return f"map[{items}]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(value_v(item, False) for item in value) + "]"
    return str(value)
