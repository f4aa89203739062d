"""A subset of Go's ``text/template`` (notes §4.4), written here (no dependency).

Supported: text with ``{{ … }}`` actions and ``{{-``/``-}}`` trimming, comments ``{{/* … */}}``, the dot
``.``, fields ``.a.b`` (map keys), ``$`` (the data), string/number/bool/nil literals, parentheses,
pipes ``x | f``, the functions ``index``, ``printf``, ``print``, ``len``, ``not``, ``and``, ``or``,
``eq``, ``ne``, ``lt``, ``le``, ``gt``, ``ge``, and ``if``/``else``/``else if``/``range``/``with``/``end``.
Values print as Go's ``%v`` (``gofmt.value_v``): a missing key or null as ``<no value>``. A task id
holding ``-`` cannot follow a dot (``.my-task`` is a parse error, as in Go); ``index . "my-task"`` works.

``render(source, data)`` parses once per distinct source (cached) and raises ``TemplateError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from chainloom.domain.taskengine.gofmt import float_v, value_v


class TemplateError(Exception):
    pass


# The longest text a template may render, and the widest printf field (a template cannot exhaust memory).
MAX_OUTPUT = 16 * 1024 * 1024
MAX_WIDTH = 10_000


class _Missing:
    def __repr__(self) -> str:
        return "<no value>"


MISSING: Any = _Missing()


# -- lexing -------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<dot>\.)
  | (?P<var>\$[A-Za-z0-9_]*)
  | (?P<declare>:=)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[()|,])
""",
    re.VERBOSE,
)


def _tokens(action: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(action):
        match = _TOKEN.match(action, pos)
        if match is None:
            char = action[pos]
            raise TemplateError(f"bad character U+{ord(char):04X} '{char}'")
        kind = match.lastgroup or ""
        text = match.group()
        if kind == "field" and match.end() < len(action) and action[match.end()] in "-":
            raise TemplateError(f"bad character U+002D '-' after {text}")
        # A field directly after a closing parenthesis or a variable chains on it.
        if kind != "space":
            tokens.append((kind, text))
        pos = match.end()
    return tokens


# -- nodes ----------------------------------------------------------------------------------------------


@dataclass
class _Text:
    text: str


@dataclass
class _Action:
    pipe: Any


@dataclass
class _Branch:
    kind: str  # if | range | with
    pipe: Any
    body: list
    otherwise: list


_FUNCS = {"index", "printf", "print", "println", "len", "not", "and", "or", "eq", "ne", "lt", "le", "gt", "ge", "html", "js", "urlquery"}


class _Parser:
    def __init__(self, source: str) -> None:
        self.items = self._split(source)
        self.pos = 0

    @staticmethod
    def _split(source: str) -> list[tuple[str, str]]:
        """Text and action pieces, trimming applied."""
        items: list[tuple[str, str]] = []
        pos = 0
        trim_next = False
        while True:
            start = source.find("{{", pos)
            if start < 0:
                text = source[pos:]
                items.append(("text", text.lstrip() if trim_next else text))
                return items
            text = source[pos:start]
            if trim_next:
                text = text.lstrip()
            inner_start = start + 2
            if source.startswith("- ", inner_start) or source.startswith("-\t", inner_start) or source.startswith("-\n", inner_start):
                text = text.rstrip()
                inner_start += 2
            items.append(("text", text))
            if source.startswith("/*", inner_start):
                close = source.find("*/", inner_start)
                if close < 0:
                    raise TemplateError("unclosed comment")
                end = source.find("}}", close)
                if end < 0:
                    raise TemplateError("unclosed action")
                trim_next = source[close + 2 : end].strip() == "-"
                pos = end + 2
                continue
            end = _action_end(source, inner_start)
            inner = source[inner_start:end]
            trim_next = False
            if inner.endswith(" -") or inner.endswith("\t-") or inner.endswith("\n-"):
                inner = inner[:-2]
                trim_next = True
            items.append(("action", inner))
            pos = end + 2

    def parse(self) -> list:
        body, stop = self._list()
        if stop is not None:
            raise TemplateError(f"unexpected {{{{{stop[0]}}}}}")
        return body

    def _list(self) -> tuple[list, tuple[str, list] | None]:
        """Nodes until ``else`` or ``end`` (returned as the stop) or the end of the source."""
        nodes: list = []
        while self.pos < len(self.items):
            kind, text = self.items[self.pos]
            self.pos += 1
            if kind == "text":
                if text:
                    nodes.append(_Text(text))
                continue
            tokens = _tokens(text)
            if not tokens:
                raise TemplateError("missing value for command")
            head = tokens[0]
            if head == ("ident", "end") or head == ("ident", "else"):
                return nodes, (head[1], tokens[1:])
            if head[0] == "ident" and head[1] in ("if", "range", "with"):
                nodes.append(self._branch(head[1], tokens[1:]))
                continue
            if head[0] == "ident" and head[1] in ("define", "template", "block", "break", "continue"):
                raise TemplateError(f"unsupported action {head[1]}")
            nodes.append(_Action(_Expr(tokens).pipeline()))
        return nodes, None

    def _branch(self, kind: str, tokens: list) -> _Branch:
        if not tokens:
            raise TemplateError(f"missing value for {kind}")
        pipe = _Expr(tokens).pipeline(allow_declare=kind == "range")
        body, stop = self._list()
        if stop is None:
            raise TemplateError(f"unexpected EOF in {kind}")
        otherwise: list = []
        if stop[0] == "else":
            rest = stop[1]
            if rest and rest[0] == ("ident", "if") and kind == "if":
                otherwise = [self._branch("if", rest[1:])]
                return _Branch(kind, pipe, body, otherwise)
            if rest:
                raise TemplateError("unexpected tokens after else")
            otherwise, stop = self._list()
            if stop is None or stop[0] != "end":
                raise TemplateError(f"expected end; found {stop[0] if stop else 'EOF'}")
        return _Branch(kind, pipe, body, otherwise)


def _action_end(source: str, start: int) -> int:
    """The position of the ``}}`` closing an action (quotes may hold braces)."""
    pos = start
    while True:
        end = source.find("}}", pos)
        if end < 0:
            raise TemplateError("unclosed action")
        quote = None
        i = start
        while i < end:
            c = source[i]
            if quote:
                if c == "\\" and quote == '"':
                    i += 1
                elif c == quote:
                    quote = None
            elif c in "\"`":
                quote = c
            i += 1
        if quote is None:
            return end
        pos = end + 2


# Expression trees: ("lit", v) | ("dot",) | ("field", base, names) | ("var", name) | ("call", fn, args)
#                  | ("pipe", [commands]) where a command is a node


class _Expr:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def pipeline(self, allow_declare: bool = False) -> Any:
        declared: list[str] = []
        if allow_declare:
            # range $i, $e := pipeline
            look = [t for t in self.tokens]
            if ("declare", ":=") in look:
                idx = look.index(("declare", ":="))
                names = [t[1] for t in look[:idx] if t[0] == "var"]
                declared = names
                self.pos = idx + 1
        node = self._pipe()
        if self.pos != len(self.tokens):
            raise TemplateError(f"unexpected {self.tokens[self.pos][1]!r} in command")
        return ("decl", declared, node) if declared else node

    def _pipe(self) -> Any:
        commands = [self._command()]
        while self.pos < len(self.tokens) and self.tokens[self.pos] == ("punct", "|"):
            self.pos += 1
            commands.append(self._command())
        return commands[0] if len(commands) == 1 else ("pipe", commands)

    def _command(self) -> Any:
        operands = []
        while self.pos < len(self.tokens) and self.tokens[self.pos][1] not in ("|", ")"):
            operands.append(self._operand())
        if not operands:
            raise TemplateError("missing value for command")
        head = operands[0]
        if head[0] == "fn":
            return ("call", head[1], operands[1:])
        if len(operands) > 1:
            raise TemplateError("can't give argument to non-function")
        return head

    def _operand(self) -> Any:
        kind, text = self.tokens[self.pos]
        self.pos += 1
        if kind == "string":
            node: Any = ("lit", _unquote(text))
        elif kind == "raw":
            node = ("lit", text[1:-1])
        elif kind == "number":
            node = ("lit", _number(text))
        elif kind == "dot":
            node = ("dot",)
        elif kind == "field":
            node = ("field", ("dot",), tuple(text[1:].split(".")))
        elif kind == "var":
            node = ("var", text)
        elif kind == "ident":
            if text in ("true", "false"):
                node = ("lit", text == "true")
            elif text == "nil":
                node = ("lit", None)
            elif text in _FUNCS:
                return ("fn", text)
            else:
                raise TemplateError(f'function "{text}" not defined')
        elif text == "(":
            node = self._pipe()
            if self.pos >= len(self.tokens) or self.tokens[self.pos] != ("punct", ")"):
                raise TemplateError("unclosed left paren")
            self.pos += 1
        else:
            raise TemplateError(f"unexpected {text!r} in operand")
        # .field chained on a variable or a parenthesised value
        while self.pos < len(self.tokens) and self.tokens[self.pos][0] == "field" and node[0] in ("var", "pipe", "call", "field", "dot") and kind in ("var", "punct"):
            node = ("field", node, tuple(self.tokens[self.pos][1][1:].split(".")))
            self.pos += 1
        return node


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


def _unquote(text: str) -> str:
    body = text[1:-1]
    if "\\" not in body:
        return body
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            n = body[i + 1]
            if n == "u" and i + 5 < len(body) + 0:
                out.append(chr(int(body[i + 2 : i + 6], 16)))
                i += 6
                continue
            if n == "x":
                out.append(chr(int(body[i + 2 : i + 4], 16)))
                i += 4
                continue
            out.append(_ESCAPES.get(n, n))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _number(text: str) -> int | float:
    try:
        return int(text, 0)
    except ValueError:
        return float(text)


# -- execution ---------------------------------------------------------------------------------------------


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, (list, tuple)):
        return "[]interface {}"
    return "interface {}"


def _truth(value: Any) -> bool:
    if value is None or value is MISSING:
        return False
    if isinstance(value, (bool, int, float, str, list, tuple, dict)):
        return bool(value)
    return True


class _Exec:
    def __init__(self, root: Any) -> None:
        self.vars: dict[str, Any] = {"$": root}
        self.out: list[str] = []

    def run(self, nodes: list, dot: Any) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                self.out.append(node.text)
            elif isinstance(node, _Action):
                self.out.append(_print(self.eval(node.pipe, dot)))
            else:
                self.branch(node, dot)

    def branch(self, node: _Branch, dot: Any) -> None:
        pipe = node.pipe
        declared: list[str] = []
        if pipe[0] == "decl":
            declared, pipe = pipe[1], pipe[2]
        value = self.eval(pipe, dot)
        if node.kind == "if":
            self.run(node.body if _truth(value) else node.otherwise, dot)
        elif node.kind == "with":
            if _truth(value):
                self.run(node.body, value)
            else:
                self.run(node.otherwise, dot)
        else:
            if value is None or value is MISSING:
                items: list[tuple[Any, Any]] = []
            elif isinstance(value, dict):
                items = [(k, value[k]) for k in sorted(value, key=str)]
            elif isinstance(value, (list, tuple)):
                items = list(enumerate(value))
            else:
                raise TemplateError(f"range can't iterate over {_print(value)}")
            if not items:
                self.run(node.otherwise, dot)
                return
            for key, item in items:
                if len(declared) == 1:
                    self.vars[declared[0]] = item
                elif len(declared) >= 2:
                    self.vars[declared[0]] = key
                    self.vars[declared[1]] = item
                self.run(node.body, item)

    def eval(self, node: Any, dot: Any) -> Any:
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "dot":
            return dot
        if kind == "field":
            value = self.eval(node[1], dot)
            for name in node[2]:
                value = _field(value, name)
            return value
        if kind == "var":
            if node[1] not in self.vars:
                raise TemplateError(f"undefined variable: {node[1]}")
            return self.vars[node[1]]
        if kind == "call":
            return self.call(node[1], node[2], dot, ())
        if kind == "pipe":
            piped: Any = self.eval(node[1][0], dot)
            for command in node[1][1:]:
                if command[0] != "call":
                    raise TemplateError("non executable command in pipeline stage")
                piped = self.call(command[1], command[2], dot, (piped,))
            return piped
        raise TemplateError(f"can't evaluate {kind}")

    def call(self, name: str, arg_nodes: list, dot: Any, extra: tuple) -> Any:
        if name in ("and", "or"):
            # Short-circuit: the first falsy (and) / truthy (or) argument, else the last one.
            if not arg_nodes and not extra:
                raise TemplateError(f"wrong number of args for {name}: want at least 1 got 0")
            result: Any = None
            for arg in [*arg_nodes, *(("lit", e) for e in extra)]:
                result = self.eval(arg, dot)
                if _truth(result) != (name == "and"):
                    return result
            return result
        args = [self.eval(arg, dot) for arg in arg_nodes] + list(extra)
        try:
            return _call(name, args)
        except TemplateError:
            raise
        except Exception as error:  # noqa: BLE001 — a function's failure is the template's error
            raise TemplateError(f"error calling {name}: {error}") from None


def _field(value: Any, name: str) -> Any:
    if isinstance(value, dict):
        return value.get(name, MISSING)
    if value is None or value is MISSING:
        raise TemplateError(f"nil pointer evaluating interface {{}}.{name}")
    raise TemplateError(f"can't evaluate field {name} in type {_go_type(value)}")


def _print(value: Any) -> str:
    if value is MISSING:
        return "<no value>"
    return value_v(value)


def _call(name: str, args: list) -> Any:
    if name == "index":
        if not args:
            raise TemplateError("wrong number of args for index: want at least 1 got 0")
        value = args[0]
        for key in args[1:]:
            if isinstance(value, dict):
                value = value.get(key, MISSING) if isinstance(key, str) else MISSING
            elif isinstance(value, (list, tuple, str)):
                if not isinstance(key, int) or isinstance(key, bool):
                    raise TemplateError(f"error calling index: cannot index slice/array with type {_go_type(key)}")
                if not 0 <= key < len(value):
                    raise TemplateError(f"error calling index: index out of range: {key}")
                value = value[key]
            elif value is None or value is MISSING:
                raise TemplateError("error calling index: index of untyped nil")
            else:
                raise TemplateError(f"error calling index: can't index item of type {_go_type(value)}")
        return value
    if name == "len":
        if len(args) != 1:
            raise TemplateError(f"wrong number of args for len: want 1 got {len(args)}")
        if not isinstance(args[0], (str, list, tuple, dict)):
            raise TemplateError(f"error calling len: len of type {_go_type(args[0])}")
        return len(args[0].encode() if isinstance(args[0], str) else args[0])
    if name == "printf":
        if not args or not isinstance(args[0], str):
            raise TemplateError("wrong type for value; expected string")
        return sprintf(args[0], args[1:])
    if name == "print":
        return _sprint(args)
    if name == "println":
        return " ".join(_print(a) for a in args) + "\n"
    if name == "not":
        if len(args) != 1:
            raise TemplateError(f"wrong number of args for not: want 1 got {len(args)}")
        return not _truth(args[0])
    if name in ("eq", "ne", "lt", "le", "gt", "ge"):
        return _compare(name, args)
    if name in ("html", "js", "urlquery"):
        import html
        import urllib.parse

        text = _sprint(args)
        return html.escape(text) if name == "html" else urllib.parse.quote_plus(text) if name == "urlquery" else text
    raise TemplateError(f'function "{name}" not defined')


def _sprint(args: list) -> str:
    out = []
    for i, arg in enumerate(args):
        # Sprint adds spaces between operands when neither is a string.
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(_print(arg))
    return "".join(out)


def _compare(name: str, args: list) -> bool:
    if len(args) < 2:
        raise TemplateError(f"wrong number of args for {name}: want 2 got {len(args)}")
    left: Any = None if args[0] is MISSING else args[0]
    if name == "eq":
        return any(left == (None if b is MISSING else b) for b in args[1:])
    right: Any = None if args[1] is MISSING else args[1]
    if name == "ne":
        return left != right
    numeric = isinstance(left, (int, float)) and isinstance(right, (int, float)) and not isinstance(left, bool) and not isinstance(right, bool)
    if not (numeric or (isinstance(left, str) and isinstance(right, str))):
        raise TemplateError(f"error calling {name}: incompatible types for comparison")
    return {"lt": left < right, "le": left <= right, "gt": left > right, "ge": left >= right}[name]


_VERB = re.compile(r"%([-+# 0]*)(\*|\d+)?(?:\.(\*|\d+))?([a-zA-Z%])")


def sprintf(fmt: str, args: list) -> str:
    """Go's ``fmt.Sprintf`` for the common verbs: %v %s %d %f %e %g %t %q %x %X %c %%."""
    out: list[str] = []
    pos = 0
    index = 0
    for match in _VERB.finditer(fmt):
        out.append(fmt[pos : match.start()])
        pos = match.end()
        flags, width, precision, verb = match.groups()
        if verb == "%":
            out.append("%")
            continue
        if index >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[index]
        index += 1
        if (width and width != "*" and int(width) > MAX_WIDTH) or (precision and precision != "*" and int(precision) > MAX_WIDTH):
            raise TemplateError(f"printf: a width or precision above {MAX_WIDTH}")
        text = _verb(verb, arg, precision, flags)
        if width and width != "*":
            size = int(width)
            if "-" in flags:
                text = text.ljust(size)
            elif "0" in flags and verb in "dfeEgGxX":
                sign = text[0] if text[:1] in "+-" else ""
                text = sign + text[len(sign) :].rjust(size - len(sign), "0")
            else:
                text = text.rjust(size)
        out.append(text)
    out.append(fmt[pos:])
    if index < len(args):
        extra = ", ".join(f"{_go_type(a)}={_print(a)}" for a in args[index:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _verb(verb: str, arg: Any, precision: str | None, flags: str) -> str:
    value = None if arg is MISSING else arg
    bad = f"%!{verb}({_go_type(value)}={_print(value) if value is not None else '<nil>'})"
    if verb == "v":
        return "<nil>" if value is None else value_v(value, False) if not isinstance(value, float) else float_v(value)
    if verb == "s":
        if value is None:
            return "%!s(<nil>)"
        return value if isinstance(value, str) else value_v(value, False)
    if verb == "q":
        if isinstance(value, str):
            import json

            return json.dumps(value, ensure_ascii=False)
        return bad
    if verb == "t":
        return ("true" if value else "false") if isinstance(value, bool) else bad
    if verb in "dxXoc":
        if not isinstance(value, int) or isinstance(value, bool):
            return bad
        if verb == "d":
            return ("+" if "+" in flags and value >= 0 else "") + str(value)
        if verb == "c":
            return chr(value)
        return format(value, {"x": "x", "X": "X", "o": "o"}[verb])
    if verb in "feEgG":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return bad
        if isinstance(value, int):
            return f"%!{verb}(int={value})"
        if verb in "gG" and precision is None:
            return float_v(value)
        spec = ("+" if "+" in flags else "") + "." + (precision if precision is not None else "6") + verb
        return format(value, spec)
    return bad


@lru_cache(maxsize=512)
def parse(source: str) -> list:
    return _Parser(source).parse()


def render(source: str, data: Any) -> str:
    """``source`` executed against ``data`` (Go ``text/template``, the subset above)."""
    if "{{" not in source:
        return source
    try:
        nodes = parse(source)
        executor = _Exec(data)
        executor.run(nodes, data)
    except TemplateError:
        raise
    except (ValueError, IndexError, TypeError, KeyError, OverflowError, RecursionError, MemoryError) as error:
        raise TemplateError(f"{type(error).__name__}: {error}") from None
    text = "".join(executor.out)
    if len(text) > MAX_OUTPUT:
        raise TemplateError(f"the rendered text exceeds {MAX_OUTPUT} characters")
    return text
