"""The hook protocol as pure functions: tool names, the tool list, the request a call becomes, the answer,
the hook's own validation and the SSRF guard's address rules."""

from __future__ import annotations

import json

import pytest

from chainloom.domain.errors import Unprocessable
from chainloom.domain.hook_openapi import answer_value, build_request, find_operation, resolve, tool_list, tool_name
from chainloom.domain.hooks import HookSpec, InjectedProperty
from chainloom.infra.hooks import refused_address, refused_host

DOCUMENT = {
    "openapi": "3.0.0",
    "paths": {
        "/health": {"get": {"operationId": "health", "summary": "Health"}},
        "/Metrics": {"get": {"summary": "metrics"}},
        "/echo": {
            "post": {
                "operationId": "echo",
                "summary": "Echo the input",
                "description": "Returns what it gets",
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Echo"}}}},
            },
            "head": {"operationId": "echo_head"},
        },
        "/items/{id}": {
            "parameters": [{"$ref": "#/components/parameters/Id"}],
            "get": {
                "operationId": "get_item",
                "summary": "Get an item",
                "parameters": [
                    {"name": "verbose", "in": "query", "schema": {"type": "boolean"}, "description": "More"},
                    {"name": "X-Trace", "in": "header", "required": True, "schema": {"type": "string"}},
                ],
            },
            "put": {
                "x-tool-name": "replace_item",
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"title": {"type": "string"}, "token": {"type": "string"}},
                                "required": ["title", "token"],
                            }
                        }
                    }
                },
            },
            "delete": {"x-tool-name": "bad name!"},
        },
        "/": {"get": {"summary": "Root"}},
    },
    "components": {
        "parameters": {"Id": {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}},
        "schemas": {
            "Echo": {
                "type": "object",
                "properties": {"input": {"type": "string"}, "param1": {"$ref": "#/components/schemas/Text"}},
                "required": ["input"],
            },
            "Text": {"type": "string", "description": "text"},
        },
    },
}


def _tools(injected: InjectedProperty = InjectedProperty()) -> dict[str, dict]:
    return {tool["function"]["name"]: tool["function"] for tool in tool_list(DOCUMENT, injected)}


@pytest.mark.parametrize(
    ("method", "path", "operation", "expected"),
    [
        ("get", "/a", {"operationId": "op", "x-tool-name": "x"}, "op"),
        ("get", "/a", {"x-tool-name": "my-tool_1"}, "my-tool_1"),
        ("get", "/a", {"x-tool-name": "my tool"}, None),
        ("get", "/a", {"x-tool-name": ""}, None),
        ("POST", "/v1/items/", {}, "items_post"),
        ("get", "/items/{id}", {}, "{id}_get"),
        ("get", "/", {}, "_get"),
    ],
)
def test_tool_names(method, path, operation, expected):
    assert tool_name(method, path, operation) == expected


def test_the_tool_list_skips_health_paths_other_methods_and_bad_names():
    assert sorted(_tools()) == ["_get", "echo", "get_item", "replace_item"]
    assert all(tool["type"] == "function" for tool in tool_list(DOCUMENT))


def test_descriptions_join_description_and_summary_with_a_literal_slash_n():
    tools = _tools()
    assert tools["echo"]["description"] == "Returns what it gets/nEcho the input"
    assert tools["get_item"]["description"] == "Get an item"


def test_parameters_are_path_query_and_body_properties_with_refs_resolved():
    tools = _tools()
    assert tools["echo"]["parameters"] == {
        "type": "object",
        "properties": {"input": {"type": "string"}, "param1": {"type": "string", "description": "text"}},
        "required": ["input"],
    }
    get = tools["get_item"]["parameters"]
    assert get["properties"] == {"id": {"type": "string"}, "verbose": {"type": "boolean", "description": "More"}}
    assert get["required"] == ["id"]  # the header parameter is not exposed
    assert tools["replace_item"]["parameters"]["required"] == ["id", "title", "token"]
    assert tools["_get"]["parameters"] is None


@pytest.mark.parametrize(
    ("injected", "tool", "hidden"),
    [
        (InjectedProperty("token", "s3cret", "body"), "replace_item", "token"),
        (InjectedProperty("token", "s3cret", "header"), "replace_item", "token"),  # anything else: the body
        (InjectedProperty("id", "7", "path"), "get_item", "id"),
        (InjectedProperty("verbose", True, "query"), "get_item", "verbose"),
    ],
)
def test_an_injected_property_is_hidden_where_its_location_matches(injected, tool, hidden):
    parameters = _tools(injected)[tool]["parameters"]
    assert hidden not in parameters["properties"]
    assert hidden not in parameters.get("required", [])
    assert hidden in _tools()[tool]["parameters"]["properties"]
    # A location that does not match hides nothing.
    other = InjectedProperty(injected.name, injected.value, "query" if injected.location == "path" else "path")
    if tool == "replace_item":
        assert hidden in _tools(other)[tool]["parameters"]["properties"]


def test_local_refs_are_resolved_external_and_recursive_ones_left():
    document = {"components": {"schemas": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/components/schemas/Node"}}}}}}
    resolved = resolve(document, {"$ref": "#/components/schemas/Node"})
    assert resolved["type"] == "object"
    assert resolve(document, {"$ref": "other.yaml#/X"}) == {"$ref": "other.yaml#/X"}
    assert resolve(document, {"$ref": "#/components/schemas/Missing"}) == {"$ref": "#/components/schemas/Missing"}


def _spec(**changes) -> HookSpec:
    values = dict(name="h", endpoint_url="http://hook:8080/", timeout_ms=1000, headers={"X-Key": "k"})
    values.update(changes)
    return HookSpec(**values)


def test_a_call_sends_the_remaining_arguments_as_a_flat_json_body():
    request = build_request(_spec(), find_operation(DOCUMENT, "echo"), {"input": "Trigger hook", "param1": "v1"})
    assert (request.method, request.url) == ("POST", "http://hook:8080/echo")
    assert json.loads(request.body) == {"input": "Trigger hook", "param1": "v1"}
    assert request.headers == {"X-Key": "k", "Accept": "application/json", "Content-Type": "application/json"}


def test_path_and_query_parameters_are_placed_and_removed_from_the_body():
    operation = find_operation(DOCUMENT, "get_item")
    request = build_request(_spec(), operation, {"input": None, "id": "a b/c", "verbose": True, "X-Trace": "t"})
    assert request.url == "http://hook:8080/items/a%20b%2Fc?verbose=true"
    assert request.body is None and "Content-Type" not in request.headers  # GET: no body, header dropped
    put = build_request(_spec(), find_operation(DOCUMENT, "replace_item"), {"id": 7, "title": "T"})
    assert put.url == "http://hook:8080/items/7" and json.loads(put.body) == {"title": "T"}


@pytest.mark.parametrize(
    ("injected", "url", "body"),
    [
        (InjectedProperty("token", "s3cret", "body"), "http://hook:8080/items/1", {"title": "T", "token": "s3cret"}),
        (InjectedProperty("token", 42, "header"), "http://hook:8080/items/1", {"title": "T", "token": "42"}),
        (InjectedProperty("key", "k v", "query"), "http://hook:8080/items/1?key=k+v", {"title": "T"}),
        # Declared by the spec too (the reference's `<nil>` quirk): the injected value wins.
        (InjectedProperty("id", "9", "path"), "http://hook:8080/items/9", {"title": "T"}),
        (InjectedProperty("", "ignored", "query"), "http://hook:8080/items/1", {"title": "T"}),
    ],
)
def test_injection_overwrites_arguments_and_goes_where_it_says(injected, url, body):
    request = build_request(_spec(properties=injected), find_operation(DOCUMENT, "replace_item"), {"id": "1", "title": "T", "token": "mine"} if injected.name == "token" else {"id": "1", "title": "T"})
    assert request.url == url
    assert json.loads(request.body) == body


def test_a_body_is_sent_only_when_the_operation_declares_one_and_arguments_remain():
    put = find_operation(DOCUMENT, "replace_item")
    assert build_request(_spec(), put, {"id": "1"}).body is None
    document = {"paths": {"/go": {"post": {"operationId": "go"}}}}
    assert build_request(_spec(), find_operation(document, "go"), {"input": "x"}).body is None


@pytest.mark.parametrize(
    ("status", "content_type", "body", "expected"),
    [
        (200, "application/json; charset=utf-8", b'{"a": [1, 2]}', ({"a": [1, 2]}, "json")),
        (201, "text/plain", b"hello", ("hello", "string")),
        (204, "application/json", b"", (None, "any")),
        (200, "", b"null", ("null", "string")),
    ],
)
def test_answers(status, content_type, body, expected):
    assert answer_value(status, content_type, body) == expected


def test_failed_and_undecodable_answers_are_errors():
    with pytest.raises(ValueError, match="API request failed with status 503: down"):
        answer_value(503, "text/plain", b"down")
    with pytest.raises(ValueError, match="decode"):
        answer_value(200, "application/json", b"{nope")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": ""}, "invalid remote hook data serverops: unprocessable entity: name is required"),
        ({"endpoint_url": ""}, "invalid remote hook data serverops: unprocessable entity: endpoint URL is required"),
        ({"endpoint_url": "ftp://x"}, "endpoint URL must be an absolute http or https URL"),
        ({"timeout_ms": 0}, "invalid remote hook data serverops: unprocessable entity: timeout must be positive"),
        ({"headers": {"": "v"}}, "invalid remote hook data serverops: unprocessable entity: header name cannot be empty"),
        ({"headers": {"X-A": ""}}, "invalid remote hook data serverops: unprocessable entity: header value for X-A cannot be empty"),
        ({"headers": {"X A": "v"}}, "not a valid HTTP header name"),
        ({"headers": {"X-A": "a\r\nb"}}, "line break"),
        ({"properties": InjectedProperty("p", {"no": 1}, "query")}, "property value must be a scalar"),
    ],
)
def test_hook_validation_messages(changes, message):
    with pytest.raises(Unprocessable, match=message.replace("(", r"\(")):
        _spec(**changes).validate()


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("169.254.169.254", True),
        ("169.254.1.1", True),
        ("::ffff:169.254.169.254", True),
        ("fe80::1%eth0", True),
        ("fd00:ec2::254", True),
        ("100.100.100.200", True),
        ("127.0.0.1", False),
        ("10.0.0.5", False),
        ("192.168.1.2", False),
        ("::1", False),
        ("93.184.216.34", False),
    ],
)
def test_the_ssrf_guard_refuses_link_local_and_metadata_addresses(address, refused):
    assert refused_address(address) is refused


def test_the_ssrf_guard_refuses_metadata_host_names():
    assert refused_host("metadata.google.internal.") and refused_host("METADATA.GOOGLE.INTERNAL")
    assert not refused_host("hooks.internal")
