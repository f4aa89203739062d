"""``CHAINLOOM_LOG_FORMAT=json``: every line a JSON object; the access log's fields, through real HTTP; no secret."""

from __future__ import annotations

import io
import json
import logging

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from chainloom.infra.logformat import TEXT_FORMAT, JsonFormatter, formatter
from chainloom.web.access_log import JsonAccessLogger
from chainloom.web.middleware import RequestIdLogFilter, request_id_middleware

SECRETS = ("hunter2", "cookie-value", "key-value", "id-in-path", "body-secret")


def _capture(*names: str) -> tuple[io.StringIO, logging.Handler]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RequestIdLogFilter())
    handler.setFormatter(formatter("json"))
    for name in names:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return out, handler


async def test_the_access_log_and_the_records_of_a_request_are_json_lines_without_secrets():
    async def thing(request: web.Request) -> web.Response:
        await request.read()
        logging.getLogger("chainloom.test").warning("looked at a thing")
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[request_id_middleware])
    app.router.add_post("/things/{id}", thing)
    out, handler = _capture("aiohttp.access", "chainloom.test")
    try:
        server = TestServer(app)
        await server.start_server(access_log_class=JsonAccessLogger)  # as chainloom serve's runner is made
        async with TestClient(server) as client:
            async with client.post(
                "/things/id-in-path?token=hunter2",
                data=b'{"password": "body-secret"}',
                headers={"X-API-Key": "key-value", "Cookie": "auth_token=cookie-value", "X-Request-ID": "req-1"},
            ) as response:
                assert response.status == 200
            async with client.get("/no/such/id-in-path") as response:
                assert response.status == 404
    finally:
        for name in ("aiohttp.access", "chainloom.test"):
            logging.getLogger(name).removeHandler(handler)
    text = out.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    inside, access, unmatched = lines
    assert inside["message"] == "looked at a thing" and inside["request_id"] == "req-1", inside
    assert (inside["level"], inside["logger"]) == ("WARNING", "chainloom.test")
    assert inside["time"].endswith("Z") and "T" in inside["time"]
    assert access["logger"] == "aiohttp.access" and access["level"] == "INFO"
    assert {k: access[k] for k in ("request_id", "actor", "method", "route", "status")} == {
        "request_id": "req-1", "actor": "anonymous", "method": "POST", "route": "/things/{id}", "status": 200,
    }  # fmt: skip
    assert isinstance(access["duration_ms"], float) and access["duration_ms"] >= 0
    assert (unmatched["route"], unmatched["status"]) == ("unmatched", 404)
    assert len(unmatched["request_id"]) == 32  # one made for it
    assert not [secret for secret in SECRETS if secret in text], text


def test_only_the_known_fields_of_a_record_reach_its_line():
    record = logging.LogRecord("chainloom.x", logging.ERROR, __file__, 1, "failed %s", ("once",), None)
    record.request_id = "-"  # outside a request
    record.headers = {"Authorization": "Bearer hunter2"}  # what a careless extra= would carry
    record.status = 503
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(record))
    assert set(line) == {"time", "level", "logger", "message", "status", "exception"}, line
    assert line["message"] == "failed once" and line["status"] == 503
    assert "ValueError: boom" in line["exception"]
    assert formatter("text")._fmt == TEXT_FORMAT  # the default stays the text lines (tests parse them)
