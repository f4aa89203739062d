"""/openapi.json as a document: valid OpenAPI 3.1, one path per template, every route, every answer typed.

Built from the registered routes without starting the service (no store is opened).
The live service is checked against it by tests/api/test_openapi_schemathesis.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chainloom.infra.settings import Settings
from chainloom.web.app import create_app
from chainloom.web.openapi import describe

_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


@pytest.fixture
def app(tmp_path: Path):
    return create_app(Settings(data_dir=tmp_path / "data", database_url="", api_token=""))


def _routes(app) -> set[tuple[str, str]]:
    """Every route of the API: all but the console's page and assets (for people, not clients)."""
    return {
        (route.method, _PARAM.sub(r"{\1}", route.resource.canonical))
        for route in app.router.routes()
        if route.method not in ("HEAD", "*") and route.resource is not None
        and not route.resource.canonical.startswith("/console")
    }


def _operations(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def test_the_document_is_valid_openapi_3_1(app):
    definitions = pytest.importorskip("schemathesis.specs.openapi.definitions")
    for token_required in (False, True):
        document = describe(app, token_required)
        assert document["openapi"] == "3.1.0"
        errors = [error.message for error in definitions.OPENAPI_31_VALIDATOR.iter_errors(document)]
        assert not errors, errors[:5]


def test_every_registered_route_appears_once_under_one_path_per_template(app):
    document = describe(app, False)
    assert {(method, path) for method, path, _ in _operations(document)} == _routes(app)
    shapes = [re.sub(r"\{[^}]+\}", "{}", path) for path in document["paths"]]
    assert len(shapes) == len(set(shapes)), "two paths differ only in the names of their parameters"
    assert "/models/{id}" in document["paths"] and set(document["paths"]["/models/{id}"]) == {"put", "delete"}


def test_every_operation_answers_typed_content(app):
    document = describe(app, True)
    schemas = document["components"]["schemas"]
    for method, path, operation in _operations(document):
        responses = operation["responses"]
        assert any(status.startswith("2") for status in responses), (method, path)
        assert "default" not in responses, (method, path)
        for status, response in responses.items():
            if not status.startswith("2"):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
            elif (method, path) != ("GET", "/health") and status != "204":  # healthy, or no content: empty
                (media_type,) = response["content"]
                assert response["content"][media_type]["schema"], (method, path, status)
        if operation.get("parameters") or "requestBody" in operation:
            assert "422" in responses, (method, path)
        if "requestBody" in operation:
            assert {"413", "415"} <= set(responses), (method, path)
        for parameter in operation.get("parameters", []):
            assert parameter["in"] in ("path", "query", "header") and "schema" in parameter, (method, path)
            if parameter["in"] == "path":
                assert parameter["required"] is True
    for name in ("Backend", "Model", "Group", "Event", "RawEvent", "Mapping", "IngestAnswer", "Version", "ErrorResponse"):
        assert name in schemas


def test_request_bodies_say_what_is_required(app):
    document = describe(app, False)
    schemas = document["components"]["schemas"]
    for method, path, operation in _operations(document):
        if "requestBody" in operation:
            assert operation["requestBody"]["required"] is True
            ((media_type, content),) = operation["requestBody"]["content"].items()
            assert media_type in ("application/json", "multipart/form-data"), (method, path)
            schema = schemas[content["schema"]["$ref"].rsplit("/", 1)[1]]
            assert schema["type"] == "object", (method, path)
    assert schemas["BackendBody"]["required"] == ["name", "baseUrl", "type"]
    assert schemas["BackendBody"]["properties"]["type"]["enum"] == ["ollama", "vllm"]
    assert set(schemas["EventBody"]["required"]) == {"event_type", "aggregate_id", "aggregate_type", "version"}
    assert "path" in schemas["MappingBody"]["required"] and "path" not in schemas["MappingUpdateBody"]["required"]
    # An upload is a form whose file part is bytes.
    upload = document["paths"]["/files"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    form = schemas[upload.rsplit("/", 1)[1]]
    assert form["required"] == ["file"] and form["properties"]["file"]["format"] == "binary"


def test_query_parameters_are_typed_and_required_where_the_handler_requires_them(app):
    document = describe(app, False)
    parameters = {p["name"]: p for p in document["paths"]["/events/type"]["get"]["parameters"]}
    assert parameters["event_type"]["required"] is True
    assert parameters["limit"]["required"] is False
    limit = parameters["limit"]["schema"]["anyOf"][0]
    assert (limit["type"], limit["minimum"], limit["maximum"]) == ("integer", 1, 1000)
    assert parameters["from"]["schema"]["anyOf"][0]["format"] == "date-time"
    replay = {(p["in"], p["name"]): p["required"] for p in document["paths"]["/replay"]["post"]["parameters"]}
    assert replay == {("query", "nid"): True, ("query", "from"): True, ("query", "to"): True, ("header", "Idempotency-Key"): False}


def test_the_stream_is_text_event_stream_and_resumable(app):
    operation = describe(app, False)["paths"]["/events/stream/{eventType}"]["get"]
    assert set(operation["responses"]["200"]["content"]) == {"text/event-stream"}
    names = {(p["in"], p["name"]) for p in operation["parameters"]}
    assert {("header", "Last-Event-ID"), ("query", "lastEventId"), ("path", "eventType")} <= names


def test_with_a_token_both_schemes_are_declared_and_public_paths_need_none(app):
    document = describe(app, True)
    assert document["components"]["securitySchemes"] == {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "Bearer": {"type": "http", "scheme": "bearer", "description": "The same API key as a bearer token."},
    }
    assert document["security"] == [{"ApiKey": []}, {"Bearer": []}]
    for method, path, operation in _operations(document):
        if path in ("/health", "/ready", "/version"):
            assert operation["security"] == [] and "401" not in operation["responses"]
        else:
            assert "401" in operation["responses"], (method, path)
    assert "securitySchemes" not in describe(app, False)["components"]


def test_with_security_on_each_route_documents_what_its_guard_answers(app):
    from chainloom.web.authz import refusals_of

    document = describe(app, False, refusals_of)
    assert set(document["components"]["securitySchemes"]) == {"ApiKey", "Bearer", "Cookie"}
    assert document["security"] == [{"ApiKey": []}, {"Bearer": []}, {"Cookie": []}]
    operations = {(method, path): operation for method, path, operation in _operations(document)}
    for key in [("GET", "/health"), ("GET", "/openapi.json"), ("POST", "/login"), ("GET", "/permissions")]:
        assert operations[key]["security"] == [], key
    assert "401" not in operations[("GET", "/health")]["responses"]
    assert {"401", "403"} <= set(operations[("GET", "/groups")]["responses"])
    assert "401" in operations[("GET", "/ui/me")]["responses"]
    definitions = pytest.importorskip("schemathesis.specs.openapi.definitions")
    assert not list(definitions.OPENAPI_31_VALIDATOR.iter_errors(document))
