"""The Go-template subset and Go's %v / JSON text forms (domain/taskengine/templates.py, gofmt.py, state.py)."""

from __future__ import annotations

import pytest

from chainloom.domain.taskengine.gofmt import float_json, float_v, value_v
from chainloom.domain.taskengine.state import go_json
from chainloom.domain.taskengine.templates import TemplateError, render

DATA = {
    "input": "hi",
    "previous_output": 4,
    "a": {"b": 1.5, "c": [1, 2], "d": {"e": "deep"}},
    "my-task": "dashed",
    "big": 1234567.0,
    "small": 0.00001,
    "n": None,
    "t": True,
    "empty": "",
    "list": ["x", "y"],
}


@pytest.mark.parametrize(
    "source, expected",
    [
        ("plain text", "plain text"),
        ("{{.input}}", "hi"),
        ("{{ .input }}", "hi"),
        ("{{.a.b}}", "1.5"),
        ("{{.a.d.e}}", "deep"),
        ("{{.previous_output}}", "4"),
        ("{{.missing}}", "<no value>"),
        ("{{.n}}", "<no value>"),
        ("{{.a.missing}}", "<no value>"),
        ("{{.t}}", "true"),
        ("{{.a}}", "map[b:1.5 c:[1 2] d:map[e:deep]]"),
        ("{{.list}}", "[x y]"),
        ("{{.big}}", "1.234567e+06"),
        ("{{.small}}", "1e-05"),
        ('{{index . "my-task"}}', "dashed"),
        ('{{index .a "b"}}', "1.5"),
        ("{{index .list 1}}", "y"),
        ('{{index . "nope"}}', "<no value>"),
        ("{{if .input}}yes{{else}}no{{end}}", "yes"),
        ("{{if .empty}}yes{{else}}no{{end}}", "no"),
        ("{{if .missing}}yes{{else if .t}}t{{end}}", "t"),
        ("{{range .list}}<{{.}}>{{end}}", "<x><y>"),
        ("{{range .a.c}}{{.}},{{else}}none{{end}}", "1,2,"),
        ("{{range .missing}}x{{else}}none{{end}}", "none"),
        ("{{range $i, $v := .list}}{{$i}}={{$v}} {{end}}", "0=x 1=y "),
        ("{{range $k, $v := .a.d}}{{$k}}:{{$v}}{{end}}", "e:deep"),
        ("{{with .a.d}}{{.e}}{{end}}", "deep"),
        ('{{printf "%s/%d/%.2f/%v/%q" .input 3 2.5 .a.c .input}}', 'hi/3/2.50/[1 2]/"hi"'),
        ('{{printf "%v" .big}}', "1.234567e+06"),
        ('{{.input | printf "[%s]"}}', "[hi]"),
        ('{{if eq .input "hi"}}same{{end}}', "same"),
        ("{{if and .t .input}}both{{end}}", "both"),
        ("{{if not .empty}}empty{{end}}", "empty"),
        ("{{len .list}}", "2"),
        ("a  {{- .input -}}  b", "ahib"),
        ("a {{/* a comment */}}b", "a b"),
        ('{{"{{literal}}"}}', "{{literal}}"),
        ("Anger level {{.previous_output}}/10", "Anger level 4/10"),
    ],
)
def test_render(source, expected):
    assert render(source, DATA) == expected


@pytest.mark.parametrize(
    "source, fragment",
    [
        ("{{.my-task}}", "bad character U+002D"),
        ("{{.input.x}}", "can't evaluate field x in type string"),
        ("{{.missing.x}}", "nil pointer evaluating interface {}.x"),
        ("{{if .t}}open", "unexpected EOF"),
        ("{{end}}", "unexpected {{end}}"),
        ("{{.input", "unclosed action"),
        ("{{nosuch .input}}", 'function "nosuch" not defined'),
        ("{{index .list 5}}", "index out of range: 5"),
    ],
)
def test_render_errors(source, fragment):
    with pytest.raises(TemplateError) as caught:
        render(source, DATA)
    assert fragment in str(caught.value)


def test_output_template_on_a_string():
    assert render("got {{.}}", "text") == "got text"


@pytest.mark.parametrize(
    "value, v, json_text",
    [
        (4.0, "4", "4"),
        (0.5, "0.5", "0.5"),
        (123456.0, "123456", "123456"),
        (1234567.0, "1.234567e+06", "1234567"),
        (0.0001, "0.0001", "0.0001"),
        (0.00001, "1e-05", "0.00001"),
        (1e-7, "1e-07", "1e-7"),
        (1e20, "1e+20", "100000000000000000000"),
        (1e21, "1e+21", "1e+21"),
        (-2.5, "-2.5", "-2.5"),
        (0.1, "0.1", "0.1"),
        (123456789.0, "1.23456789e+08", "123456789"),
        (0.0, "0", "0"),
    ],
)
def test_float_forms(value, v, json_text):
    assert float_v(value) == v
    assert float_json(value) == json_text


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, "<no value>"),
        ("s", "s"),
        (True, "true"),
        (42, "42"),
        ({"b": 1, "a": None}, "map[a:<nil> b:1]"),
        ([1, "a", [2.5]], "[1 a [2.5]]"),
    ],
)
def test_value_v(value, expected):
    assert value_v(value) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("Paris", '"Paris"'),
        (4, "4"),
        ({"output": "hi"}, '{"output":"hi"}'),
        ({"b": [1, 2.0, None], "a": True}, '{"a":true,"b":[1,2,null]}'),
        ("<a&b>", '"\\u003ca\\u0026b\\u003e"'),
        ("é", '"é"'),
        (None, "null"),
    ],
)
def test_go_json(value, expected):
    assert go_json(value) == expected
