"""Clients that go away are not server errors: a body cut short, an SSE client that leaves.

A client that announces more body than it sends and closes the connection (a
crash, a timeout, a user pressing stop) was logged as an unhandled error with
a traceback and a 500 in the access log: aiohttp raises ``ConnectionResetError``
from the body read. It is now logged at info and answered 400 (an incomplete
request; the access log shows 400, nobody reads the answer).

The server here runs as ``chainloom serve`` runs it: aiohttp's test server
cancels a handler whose client leaves, ``web.run_app`` and ``chainloom serve``
do not, and only the latter shows the failure. In this process that is
``ServedAsInProduction``; with CHAINLOOM_TEST_WORKERS it is ``chainloom serve``
itself, logging at INFO, and the records are read from its log.
"""

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.api.helpers import call
from tests.integration.serve_process import LogRecord, ServiceClient
from chainloom.web.keys import EVENT_HUB


class ServedAsInProduction(TestServer):
    """A test server whose handlers run to their end when the client leaves (as with ``web.run_app``)."""

    async def _make_runner(self, **kwargs):
        kwargs["handler_cancellation"] = False
        return await super()._make_runner(**kwargs)


@pytest.fixture
async def served(settings, service_for) -> AsyncIterator[TestClient | ServiceClient]:
    async with service_for(settings, server=ServedAsInProduction, log_level="INFO") as client:
        yield client


def records(served, caplog) -> list[LogRecord]:
    """What the service logged so far: pytest's records in this process, a served service's log otherwise."""
    if isinstance(served, ServiceClient):
        return served.service.log_records()
    return [LogRecord(r.levelno, r.name, r.getMessage(), bool(r.exc_info)) for r in caplog.records]


async def logged(served, caplog, fragment: str) -> list[LogRecord]:
    """The records containing ``fragment``, once there is one (the server notices the lost connection)."""
    for _ in range(50):
        found = [r for r in records(served, caplog) if fragment in r.message]
        if found:
            return found
        await asyncio.sleep(0.05)
    return []


async def cut_body_short(client: TestClient, path: str, announced: int = 100_000, sent: bytes = b'{"event_ty') -> None:
    """Send headers announcing ``announced`` bytes, then ``sent``, then close the connection."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {client.host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {announced}\r\n\r\n".encode() + sent
    )
    await writer.drain()
    await asyncio.sleep(0.1)  # the handler is reading the body by now
    writer.close()
    await writer.wait_closed()


def problems(served, caplog) -> list[str]:
    """Records that would page someone: errors, tracebacks, a 500 in the access log."""
    return [
        r.message for r in records(served, caplog)
        if r.levelno >= logging.ERROR or r.traceback or "unhandled" in r.message
        or (r.name == "aiohttp.access" and '" 500 ' in r.message)
    ]


@pytest.mark.parametrize("path", ["/events", "/ingest?path=/h", "/backends", "/raw-events", "/mappings"])
async def test_a_body_cut_short_is_not_an_unhandled_error(served, caplog, path):
    caplog.set_level(logging.DEBUG)
    await cut_body_short(served, path)
    await logged(served, caplog, "client disconnected")
    assert [r.levelno for r in records(served, caplog) if "client disconnected" in r.message] == [logging.INFO]
    assert not problems(served, caplog)
    status, body = await call(served, "GET", "/health")  # still serving
    assert status == 200, body
    status, body = await call(served, "GET", "/backends")
    assert status == 200, body


async def test_a_chunked_body_cut_short_or_a_reset_connection_is_not_an_error_either(served, caplog):
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection(served.host, served.port)
    writer.write(
        b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'a\r\n{"event_ty\r\n'
    )
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.transport.abort()  # a reset, not an orderly close
    assert await logged(served, caplog, "client disconnected")
    assert not problems(served, caplog)
    status, _ = await call(served, "GET", "/health")
    assert status == 200


async def test_the_body_cut_short_is_not_stored(served, caplog):
    body = b'{"event_type":"cut.short","event_source":"s","aggregate_type":"a","aggregate_id":"x","version":1}'
    await cut_body_short(served, "/events", announced=len(body) + 10, sent=body)
    await asyncio.sleep(0.3)
    status, listed = await call(served, "GET", "/events/type", params={"event_type": "cut.short"})
    assert (status, listed) == (200, [])


async def test_an_sse_client_that_leaves_is_not_an_error(served, caplog):
    caplog.set_level(logging.DEBUG)
    response = await served.get("/events/stream/order.placed")
    assert (await asyncio.wait_for(response.content.readline(), 5)).startswith(b": connected")
    response.close()
    if isinstance(served, ServiceClient):  # its hubs are in the workers: the stream's end is in the access log
        ended = await logged(served, caplog, "GET /events/stream/order.placed ")
        assert [r.name for r in ended] == ["aiohttp.access"]
    else:
        hub = served.server.app[EVENT_HUB]
        for _ in range(100):
            if hub.subscriber_count() == 0:
                break
            await asyncio.sleep(0.05)
        assert hub.subscriber_count() == 0
    body = {"event_type": "order.placed", "event_source": "s", "aggregate_type": "a", "aggregate_id": "x", "version": 1}
    status, _ = await call(served, "POST", "/events", body)  # nobody listens any more: nothing breaks
    assert status == 201
    assert not problems(served, caplog)
