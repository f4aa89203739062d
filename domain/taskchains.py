"""Task-chain definitions: the data a chain is made of, how it is read, written and checked.

A chain is an ordered list of tasks; the first task is the start. ``ChainDefinition.from_json``
decodes the wire form with Go's ``encoding/json`` rules (the reference is a Go server and
clients rely on them): unknown keys are dropped, a known key is matched exactly first and then
case-insensitively, the last duplicate wins (objects given twice merge, as Go decodes into the
value already there), and a value of the wrong type is refused naming its path
(``tasks[2].retry_on_failure: expected an integer``). ``to_json`` writes the stored/returned
form: a few keys always, every other one only when non-empty (notes §1.2).

``validate`` goes beyond the reference (which stores anything with an id and a task): it refuses
what would only fail at run time — unknown handlers, dangling transitions, missing handler
fields, bad timeouts, unreachable tasks — each as a 422 naming the task and the field.

Beyond the reference, a transition branch may carry ``alert_on_match`` (a message): a run that takes
the branch records the message with its step, and the activity read model turns it into an alert
(``GET /activity/alerts``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate
from chainloom.domain.errors import NotFound, Unprocessable

HANDLERS = (
    "raw_string",
    "condition_key",
    "parse_number",
    "parse_score",
    "parse_range",
    "parse_transition",
    "parse_key_value",
    "embedding",
    "raise_error",
    "noop",
    "model_execution",
    "execute_tool_calls",
    "convert_to_openai_chat_response",
    "hook",
)

OPERATORS = ("equals", "contains", "starts_with", "ends_with", ">", "gt", "<", "lt", "in_range", "default")

END = "end"


# --------------------------------------------------------------------------------------------
# The definitions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecuteConfig:
    model: str = ""
    models: tuple[str, ...] = ()
    provider: str = ""
    providers: tuple[str, ...] = ()
    temperature: float | None = None
    hooks: tuple[str, ...] = ()
    hide_tools: tuple[str, ...] = ()
    pass_clients_tools: bool = False


@dataclass(frozen=True)
class HookCall:
    name: str = ""
    tool_name: str = ""
    args: dict[str, str] | None = None


@dataclass(frozen=True)
class Compose:
    with_var: str = ""
    strategy: str = ""


@dataclass(frozen=True)
class Branch:
    operator: str = ""
    when: str = ""
    goto: str = ""
    # Beyond the reference: when a run takes this branch, the step records this message as an alert
    # (``GET /activity/alerts``); empty: no alert (and not written).
    alert_on_match: str = ""


@dataclass(frozen=True)
class Transition:
    on_failure: str = ""
    branches: tuple[Branch, ...] | None = None  # None: absent (written as null); (): an empty list


@dataclass(frozen=True)
class TaskDefinition:
    id: str = ""
    description: str = ""
    handler: str = ""
    system_instruction: str = ""
    valid_conditions: dict[str, bool] | None = None
    execute_config: ExecuteConfig | None = None
    hook: HookCall | None = None
    print: str = ""
    prompt_template: str = ""
    output_template: str = ""
    input_var: str = ""
    compose: Compose | None = None
    transition: Transition = field(default_factory=Transition)
    timeout: str = ""
    retry_on_failure: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "description": self.description, "handler": self.handler}
        if self.system_instruction:
            out["system_instruction"] = self.system_instruction
        if self.valid_conditions:
            out["valid_conditions"] = dict(self.valid_conditions)
        if self.execute_config is not None:
            out["execute_config"] = _execute_config_json(self.execute_config)
        if self.hook is not None:
            out["hook"] = {
                "name": self.hook.name,
                "tool_name": self.hook.tool_name,
                "args": None if self.hook.args is None else dict(self.hook.args),
            }
        if self.print:
            out["print"] = self.print
        out["prompt_template"] = self.prompt_template
        if self.output_template:
            out["output_template"] = self.output_template
        if self.input_var:
            out["input_var"] = self.input_var
        if self.compose is not None:
            compose: dict[str, Any] = {}
            if self.compose.with_var:
                compose["with_var"] = self.compose.with_var
            if self.compose.strategy:
                compose["strategy"] = self.compose.strategy
            out["compose"] = compose
        out["transition"] = {
            "on_failure": self.transition.on_failure,
            "branches": None
            if self.transition.branches is None
            else [_branch_json(branch) for branch in self.transition.branches],
        }
        if self.timeout:
            out["timeout"] = self.timeout
        if self.retry_on_failure:
            out["retry_on_failure"] = self.retry_on_failure
        return out


@dataclass(frozen=True)
class ChainDefinition:
    id: str = ""
    description: str = ""
    debug: bool = False
    tasks: tuple[TaskDefinition, ...] = ()
    token_limit: int = 0

    @classmethod
    def from_json(cls, obj: Any) -> ChainDefinition:
        """Decode a chain with Go's rules; ``Unprocessable`` naming the field path on a type mismatch."""
        if not isinstance(obj, Mapping):
            raise Unprocessable(f"task chain: {_EXPECTED['struct']}, got {_json_kind(obj)}")
        return _build_chain(_decode_struct(obj, _CHAIN_FIELDS, "", {}))

    def to_json(self) -> dict[str, Any]:
        # No task list is written as []: an absent list and an empty one mean the same here.
        return {
            "id": self.id,
            "debug": self.debug,
            "description": self.description,
            "tasks": [task.to_json() for task in self.tasks],
            "token_limit": self.token_limit,
        }

    def task(self, task_id: str) -> TaskDefinition | None:
        """The first task with this id (the reference's lookup), or None."""
        for task in self.tasks:
            if task.id == task_id:
                return task
        return None

    def validate(self) -> None:
        """Refuse, as ``Unprocessable`` naming the task and field, what could never run as meant."""
        if not self.id:
            raise Unprocessable("task chain ID is required", param="id")
        if not self.tasks:
            raise Unprocessable("task chain must contain at least one task", param="tasks")
        first_index: dict[str, int] = {}
        for index, task in enumerate(self.tasks):
            where = f"tasks[{index}]"
            if not task.id:
                raise Unprocessable(f"{where}.id: task ID cannot be empty", param=f"{where}.id")
            if task.id == END:
                raise Unprocessable(
                    f"{where}.id: task ID cannot be '{END}' (a transition to '{END}' finishes the chain)",
                    param=f"{where}.id",
                )
            if task.id in first_index:
                raise Unprocessable(
                    f"task {task.id}: id: duplicate task ID (tasks[{first_index[task.id]}] and {where})",
                    param=f"{where}.id",
                )
            first_index[task.id] = index
        for index, task in enumerate(self.tasks):
            _validate_task(task, f"tasks[{index}]", first_index)
        reachable = self._reachable()
        for index, task in enumerate(self.tasks):
            if task.id not in reachable:
                raise Unprocessable(
                    f"task {task.id}: unreachable: no branch goto or on_failure leads to it from the first task "
                    f"{self.tasks[0].id}",
                    param=f"tasks[{index}]",
                )

    def _reachable(self) -> set[str]:
        by_id = {task.id: task for task in self.tasks}
        seen = {self.tasks[0].id}
        pending = [self.tasks[0]]
        while pending:
            task = pending.pop()
            targets = [task.transition.on_failure] + [branch.goto for branch in task.transition.branches or ()]
            for target in targets:
                if target in by_id and target not in seen:
                    seen.add(target)
                    pending.append(by_id[target])
        return seen


def _validate_task(task: TaskDefinition, where: str, ids: Mapping[str, int]) -> None:
    def refuse(path: str, problem: str) -> Unprocessable:
        return Unprocessable(f"task {task.id}: {path}: {problem}", param=f"{where}.{path}")

    if not task.handler:
        raise refuse("handler", f"a handler is required; one of {', '.join(HANDLERS)}")
    if task.handler not in HANDLERS:
        raise refuse("handler", f"unknown handler {task.handler!r}; one of {', '.join(HANDLERS)}")
    if task.handler == "condition_key" and not task.valid_conditions:
        raise refuse("valid_conditions", "handler condition_key needs at least one valid condition")
    if task.handler == "hook":
        if task.hook is None or not task.hook.name:
            raise refuse("hook.name", "handler hook needs the name of a remote hook")
        if not task.hook.tool_name:
            raise refuse("hook.tool_name", "handler hook needs the tool (operation) to call")
    if task.timeout:
        try:
            seconds = parse_duration(task.timeout)
        except ValueError as exc:
            raise refuse("timeout", f"{exc} (Go duration syntax, e.g. 500ms, 30s, 2m, 1h30m)") from None
        if seconds <= 0:
            raise refuse("timeout", f"must be positive (every attempt would time out at once): {task.timeout!r}")
    transition = task.transition
    if transition.on_failure and transition.on_failure not in ids:
        raise refuse("transition.on_failure", f"no task {transition.on_failure!r} in the chain")
    for number, branch in enumerate(transition.branches or ()):
        if branch.operator not in OPERATORS:
            problem = "an operator is required" if not branch.operator else f"unsupported operator {branch.operator!r}"
            raise refuse(f"transition.branches[{number}].operator", f"{problem}; one of {', '.join(OPERATORS)}")
        if branch.goto and branch.goto != END and branch.goto not in ids:
            raise refuse(
                f"transition.branches[{number}].goto",
                f"no task {branch.goto!r} in the chain (use '{END}' or \"\" to finish)",
            )


def _execute_config_json(config: ExecuteConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"model": config.model}
    if config.models:
        out["models"] = list(config.models)
    if config.provider:
        out["provider"] = config.provider
    if config.providers:
        out["providers"] = list(config.providers)
    if config.temperature:
        out["temperature"] = config.temperature
    if config.hooks:
        out["hooks"] = list(config.hooks)
    if config.hide_tools:
        out["hide_tools"] = list(config.hide_tools)
    out["pass_clients_tools"] = config.pass_clients_tools
    return out


def _branch_json(branch: Branch) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if branch.operator:
        out["operator"] = branch.operator
    out["when"] = branch.when
    out["goto"] = branch.goto
    if branch.alert_on_match:
        out["alert_on_match"] = branch.alert_on_match
    return out


# --------------------------------------------------------------------------------------------
# The stored chain
# --------------------------------------------------------------------------------------------


class TaskChain(Aggregate):
    """A stored chain, keyed by its id. Every event but Deleted carries the whole definition (``to_json``)."""

    aggregate_type = "taskchain"

    class Created(Aggregate.Created):
        definition: dict[str, Any]

    class Recreated(Aggregate.Event):
        definition: dict[str, Any]

    class Updated(Aggregate.Event):
        definition: dict[str, Any]

    class Deleted(Aggregate.Event):
        pass

    @classmethod
    def create(cls, chain: ChainDefinition) -> TaskChain:
        chain.validate()
        return cls._create(cls.Created, id=cls.stream_id(chain.id), definition=chain.to_json())

    @event(Created)
    def __init__(self, definition: dict[str, Any]) -> None:
        self.definition = definition
        self.deleted = False

    def ensure_exists(self) -> None:
        if self.deleted:
            raise NotFound("libdb: not found")

    def store(self, chain: ChainDefinition) -> None:
        """The upsert of ``POST /taskchains`` on a chain that existed: created again if it was deleted,
        else replaced."""
        chain.validate()
        if self.deleted:
            self._recreate(definition=chain.to_json())
        else:
            self._update(definition=chain.to_json())

    def replace(self, chain: ChainDefinition) -> None:
        """``PUT /taskchains/{id}``: only a chain that exists."""
        self.ensure_exists()
        chain.validate()
        self._update(definition=chain.to_json())

    def delete(self) -> None:
        self.ensure_exists()
        self._delete()

    @event(Recreated)
    def _recreate(self, definition: dict[str, Any]) -> None:
        self.definition = definition
        self.deleted = False

    @event(Updated)
    def _update(self, definition: dict[str, Any]) -> None:
        self.definition = definition

    @event(Deleted)
    def _delete(self) -> None:
        self.deleted = True


# --------------------------------------------------------------------------------------------
# Go-style decoding
# --------------------------------------------------------------------------------------------
# A struct is decoded into a dict of field values (nested structs as dicts too), so that an
# object given twice (``"transition"`` and ``"Transition"``) merges like Go decoding into the
# value already there; the dataclasses are built at the end.

_INT_MIN, _INT_MAX = -(1 << 63), (1 << 63) - 1

_EXPECTED = {
    "str": "expected a string",
    "int": "expected an integer",
    "bool": "expected a boolean",
    "float": "expected a number",
    "strlist": "expected an array of strings",
    "struct": "expected an object",
    "structlist": "expected an array of objects",
    "map_bool": "expected an object of booleans",
    "map_str": "expected an object of strings",
}

# (json key, kind, nested fields for struct kinds)
_Fields = tuple[tuple[str, str, Any], ...]

_BRANCH_FIELDS: _Fields = (
    ("operator", "str", None), ("when", "str", None), ("goto", "str", None), ("alert_on_match", "str", None),
)
_TRANSITION_FIELDS: _Fields = (("on_failure", "str", None), ("branches", "structlist", _BRANCH_FIELDS))
_COMPOSE_FIELDS: _Fields = (("with_var", "str", None), ("strategy", "str", None))
_HOOK_FIELDS: _Fields = (("name", "str", None), ("tool_name", "str", None), ("args", "map_str", None))
_EXECUTE_FIELDS: _Fields = (
    ("model", "str", None),
    ("models", "strlist", None),
    ("provider", "str", None),
    ("providers", "strlist", None),
    ("temperature", "float", None),
    ("hooks", "strlist", None),
    ("hide_tools", "strlist", None),
    ("pass_clients_tools", "bool", None),
)
_TASK_FIELDS: _Fields = (
    ("id", "str", None),
    ("description", "str", None),
    ("handler", "str", None),
    ("system_instruction", "str", None),
    ("valid_conditions", "map_bool", None),
    ("execute_config", "struct", _EXECUTE_FIELDS),
    ("hook", "struct", _HOOK_FIELDS),
    ("print", "str", None),
    ("prompt_template", "str", None),
    ("output_template", "str", None),
    ("input_var", "str", None),
    ("compose", "struct", _COMPOSE_FIELDS),
    ("transition", "struct", _TRANSITION_FIELDS),
    ("timeout", "str", None),
    ("retry_on_failure", "int", None),
)
_CHAIN_FIELDS: _Fields = (
    ("id", "str", None),
    ("description", "str", None),
    ("debug", "bool", None),
    ("tasks", "structlist", _TASK_FIELDS),
    ("token_limit", "int", None),
)


def _fold(name: str) -> str:
    # Go folds keys with Unicode simple case folding (so "ſ" matches "s" and the Kelvin sign "k"),
    # one character for one: "ß" does not become "ss".
    return "".join(folded if len(folded := char.casefold()) == 1 else char for char in name)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _mismatch(path: str, kind: str, value: Any) -> Unprocessable:
    return Unprocessable(f"{path}: {_EXPECTED[kind]}, got {_json_kind(value)}", param=path)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _decode_struct(obj: Mapping[Any, Any], fields: _Fields, path: str, into: dict[str, Any]) -> dict[str, Any]:
    exact = {name: (name, kind, sub) for name, kind, sub in fields}
    folded: dict[str, tuple[str, str, Any]] = {}
    for name, kind, sub in fields:
        folded.setdefault(_fold(name), (name, kind, sub))
    for raw_key, value in obj.items():
        key = str(raw_key)
        spec = exact.get(key) or folded.get(_fold(key))
        if spec is None:
            continue  # unknown keys are dropped
        name, kind, sub = spec
        field_path = _join(path, name)
        if value is None:
            # null: leaves strings, numbers, booleans and plain structs alone; empties pointers,
            # maps and slices.
            if kind in ("struct", "structlist", "strlist", "map_bool", "map_str", "float") and not (
                kind == "struct" and name == "transition"
            ):
                into[name] = None
            continue
        into[name] = _decode_value(value, kind, sub, field_path, into.get(name))
    return into


def _decode_value(value: Any, kind: str, sub: Any, path: str, current: Any) -> Any:
    if kind == "str":
        if not isinstance(value, str):
            raise _mismatch(path, kind, value)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _mismatch(path, kind, value)
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or not _INT_MIN <= value <= _INT_MAX:
            raise _mismatch(path, kind, value)
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _mismatch(path, kind, value)
        return float(value)
    if kind == "struct":
        if not isinstance(value, Mapping):
            raise _mismatch(path, kind, value)
        return _decode_struct(value, sub, path, dict(current) if isinstance(current, dict) else {})
    if kind == "strlist":
        if not isinstance(value, list | tuple):
            raise _mismatch(path, kind, value)
        items: list[str] = []
        for index, item in enumerate(value):
            if item is None:
                items.append("")
            elif not isinstance(item, str):
                raise _mismatch(f"{path}[{index}]", "str", item)
            else:
                items.append(item)
        return items
    if kind == "structlist":
        if not isinstance(value, list | tuple):
            raise _mismatch(path, kind, value)
        structs: list[dict[str, Any]] = []
        for index, item in enumerate(value):
            if item is None:
                structs.append({})
            elif not isinstance(item, Mapping):
                raise _mismatch(f"{path}[{index}]", "struct", item)
            else:
                structs.append(_decode_struct(item, sub, f"{path}[{index}]", {}))
        return structs
    if kind in ("map_bool", "map_str"):
        if not isinstance(value, Mapping):
            raise _mismatch(path, kind, value)
        merged: dict[str, Any] = dict(current) if isinstance(current, dict) else {}
        element = "bool" if kind == "map_bool" else "str"
        for raw_key, item in value.items():
            key = str(raw_key)
            if item is None:
                merged[key] = False if element == "bool" else ""
            else:
                merged[key] = _decode_value(item, element, None, _join(path, key), None)
        return merged
    raise AssertionError(kind)  # pragma: no cover


def _build(values: Mapping[str, Any] | None, build: Callable[[Mapping[str, Any]], Any]) -> Any:
    return None if values is None else build(values)


def _build_chain(values: Mapping[str, Any]) -> ChainDefinition:
    return ChainDefinition(
        id=values.get("id", ""),
        description=values.get("description", ""),
        debug=values.get("debug", False),
        tasks=tuple(_build_task(task) for task in values.get("tasks") or ()),
        token_limit=values.get("token_limit", 0),
    )


def _build_task(values: Mapping[str, Any]) -> TaskDefinition:
    transition = values.get("transition") or {}
    branches = transition.get("branches")
    return TaskDefinition(
        id=values.get("id", ""),
        description=values.get("description", ""),
        handler=values.get("handler", ""),
        system_instruction=values.get("system_instruction", ""),
        valid_conditions=values.get("valid_conditions"),
        execute_config=_build(
            values.get("execute_config"),
            lambda config: ExecuteConfig(
                model=config.get("model", ""),
                models=tuple(config.get("models") or ()),
                provider=config.get("provider", ""),
                providers=tuple(config.get("providers") or ()),
                temperature=config.get("temperature"),
                hooks=tuple(config.get("hooks") or ()),
                hide_tools=tuple(config.get("hide_tools") or ()),
                pass_clients_tools=config.get("pass_clients_tools", False),
            ),
        ),
        hook=_build(
            values.get("hook"),
            lambda hook: HookCall(name=hook.get("name", ""), tool_name=hook.get("tool_name", ""),
                                  args=hook.get("args")),
        ),
        print=values.get("print", ""),
        prompt_template=values.get("prompt_template", ""),
        output_template=values.get("output_template", ""),
        input_var=values.get("input_var", ""),
        compose=_build(
            values.get("compose"),
            lambda compose: Compose(with_var=compose.get("with_var", ""), strategy=compose.get("strategy", "")),
        ),
        transition=Transition(
            on_failure=transition.get("on_failure", ""),
            branches=None
            if branches is None
            else tuple(
                Branch(
                    operator=b.get("operator", ""), when=b.get("when", ""), goto=b.get("goto", ""),
                    alert_on_match=b.get("alert_on_match", ""),
                )
                for b in branches
            ),
        ),
        timeout=values.get("timeout", ""),
        retry_on_failure=values.get("retry_on_failure", 0),
    )


# --------------------------------------------------------------------------------------------
# Go durations
# --------------------------------------------------------------------------------------------

_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 micro sign
    "μs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def parse_duration_ns(text: str) -> int:
    """Go's ``time.ParseDuration``, in integer nanoseconds; ``ValueError`` on bad syntax or overflow."""
    original = text
    negative = False
    if text[:1] in ("-", "+"):
        negative = text[0] == "-"
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise ValueError(f"invalid duration {original!r}")
    total = 0
    while text:
        index = 0
        while index < len(text) and text[index].isascii() and text[index].isdigit():
            index += 1
        whole_digits, text = text[:index], text[index:]
        fraction_digits = ""
        if text[:1] == ".":
            text = text[1:]
            index = 0
            while index < len(text) and text[index].isascii() and text[index].isdigit():
                index += 1
            fraction_digits, text = text[:index], text[index:]
        if not whole_digits and not fraction_digits:
            raise ValueError(f"invalid duration {original!r}")
        index = 0
        while index < len(text) and text[index] != "." and not (text[index].isascii() and text[index].isdigit()):
            index += 1
        unit, text = text[:index], text[index:]
        if not unit:
            raise ValueError(f"missing unit in duration {original!r}")
        if unit not in _UNIT_NS:
            raise ValueError(f"unknown unit {unit!r} in duration {original!r}")
        scale = _UNIT_NS[unit]
        whole = int(whole_digits or "0")
        if whole > (1 << 63):
            raise ValueError(f"invalid duration {original!r}")
        nanos = whole * scale
        if fraction_digits:
            # Go truncates the fractional part to whole nanoseconds.
            nanos += int(fraction_digits) * scale // 10 ** len(fraction_digits)
        total += nanos
        if total > (1 << 63):
            raise ValueError(f"invalid duration {original!r}")
    if negative:
        return -total
    if total > _INT_MAX:
        raise ValueError(f"invalid duration {original!r}")
    return total


def parse_duration(text: str) -> float:
    """Go duration syntax (``500ms``, ``30s``, ``2m``, ``1h30m``; units ns, us, µs, ms, s, m, h) in seconds."""
    return parse_duration_ns(text) / 1e9
