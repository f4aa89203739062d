"""Transition evaluation (notes §6)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chainloom.domain.taskengine.errors import TaskError
from chainloom.domain.taskengine.parsing import lenient_number

END = "end"


def matches(operator: str, response: str, when: str) -> bool:
    if operator == "equals":
        return response == when
    if operator == "contains":
        return when in response
    if operator == "starts_with":
        return response.startswith(when)
    if operator == "ends_with":
        return response.endswith(when)
    if operator in (">", "gt"):
        return lenient_number(response) > lenient_number(when)
    if operator in ("<", "lt"):
        return lenient_number(response) < lenient_number(when)
    if operator == "in_range":
        parts = when.split("-")
        if len(parts) != 2:
            raise TaskError(f"invalid inrange format: {when} (expected 'min-max')")
        lower, upper = lenient_number(parts[0]), lenient_number(parts[1])
        if lower > upper:
            raise TaskError(f"invalid range: lower bound {parts[0]} is greater than upper bound {parts[1]}")
        value = lenient_number(response)
        return lower <= value <= upper
    raise TaskError(f"unsupported operator: {operator}")


def next_task(branches: Sequence[Any] | None, response: str) -> str:
    """The ``goto`` for the handler's transition value ``response``; ``""`` or ``end`` end the chain.
    Branches carry ``operator``, ``when``, ``goto``."""
    branches = branches or ()
    for branch in branches:
        if branch.operator == "default":
            continue
        if matches(branch.operator, response, branch.when):
            return branch.goto
    for branch in branches:
        if branch.operator == "default":
            return branch.goto
    raise TaskError(f"no matching transition found for eval: {response}")


def ends(goto: str) -> bool:
    return goto in ("", END)
