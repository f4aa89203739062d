"""POST /events and the /events queries, on SQLite and PostgreSQL through real HTTP."""

import time
import uuid

import pytest
from freezegun import freeze_time

from chainloom.infra.timefmt import format_ns, parse_ns
from tests.api.helpers import assert_error, call, create_backend

MINUTE = 60 * 10**9


def event(**fields) -> dict:
    return {"event_type": "user.created", "event_source": "auth", "aggregate_type": "user", "aggregate_id": "u-1", "version": 1} | fields


async def post(client, **fields) -> dict:
    status, body = await call(client, "POST", "/events", event(**fields))
    assert status == 201, body
    return body


def ago(minutes: float) -> str:
    return format_ns(time.time_ns() - int(minutes * MINUTE))


# -- POST /events ------------------------------------------------------------------------


async def test_an_appended_event_gets_an_id_a_position_a_time_and_defaults(client):
    before = time.time_ns()
    first = await post(client)
    second = await post(client, id="client-id", data={"email": "a@b.c"}, metadata=None, nid=999)
    assert uuid.UUID(first["id"]) and second["id"] == "client-id"
    assert second["nid"] > first["nid"] > 0  # assigned by the log, the client's nid ignored
    assert before <= parse_ns(first["created_at"]) <= time.time_ns() and first["created_at"].endswith("Z")
    assert (first["data"], first["metadata"]) == ({}, {})
    assert (second["data"], second["metadata"]) == ({"email": "a@b.c"}, None)  # explicit null is kept
    status, listed = await call(client, "GET", "/events/type", params={"event_type": "user.created"})
    assert listed == [second, first]


@pytest.mark.in_process(reason="pins the service's clock with freezegun")
async def test_created_at_is_kept_and_normalised_to_utc(client):
    with freeze_time("2031-07-04T12:00:00Z", tick=True):
        body = await post(client, created_at="2031-07-04T14:03:04.123456789+02:00")
        assert body["created_at"] == "2031-07-04T12:03:04.123456789Z"
        status, listed = await call(client, "GET", "/events/type", params={"event_type": "user.created", "to": "2031-07-05T00:00:00Z"})
        assert listed == [body]


@pytest.mark.parametrize(
    "fields, status, fragment",
    [
        ({"event_type": ""}, 422, "missing required field: event_type is required"),
        ({"aggregate_id": ""}, 422, "missing required field: aggregate_id is required"),
        ({"aggregate_type": ""}, 422, "missing required field: aggregate_type is required"),
        ({"version": 0}, 422, "invalid parameter: version must be greater than 0"),
        ({"version": "1"}, 422, "version"),
        ({"version": 1.5}, 422, "version"),
        ({"data": float("nan")}, 422, "NaN"),
        ({"event_source": "chainloom"}, 422, "reserved"),
        ({"created_at": "2025-05-01T10:00:00"}, 422, "created_at"),
        ({"created_at": "yesterday"}, 422, "created_at"),
    ],
)
async def test_invalid_events_are_422(client, fields, status, fragment):
    response_status, body = await call(client, "POST", "/events", event(**fields))
    assert_error(response_status, body, status, fragment)


async def test_events_outside_ten_minutes_are_too_old_or_too_new(client):
    status, body = await call(client, "POST", "/events", event(created_at=ago(11)))
    assert_error(status, body, 422, "event is too old")
    status, body = await call(client, "POST", "/events", event(created_at=ago(-11)))
    assert_error(status, body, 422, "event is too new")
    await post(client, created_at=ago(9))
    await post(client, created_at=ago(-9))


async def test_too_deeply_nested_values_are_refused(client):
    nested: dict = {}
    for _ in range(150):
        nested = {"a": nested}
    status, body = await call(client, "POST", "/events", event(data=nested))
    assert_error(status, body, 422, "nested deeper than 100 levels")
    status, body = await call(client, "POST", "/events", b'{"data":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert_error(status, body, 422)
    await post(client, data={"a": {"b": [[[1]]]}})


async def test_bodies_that_are_not_json_objects_are_refused(client):
    status, body = await call(client, "POST", "/events", b"{not json")
    assert_error(status, body, 422)
    status, body = await call(client, "POST", "/events", b"[1, 2]")
    assert_error(status, body, 422)
    status, body = await call(client, "POST", "/events", b"a: b", headers={"Content-Type": "text/csv"})
    assert_error(status, body, 415)
    status, listed = await call(client, "GET", "/events/types")
    assert "user.created" not in listed


async def test_a_repeated_identity_is_409_and_nothing_else_collides(client):
    first = await post(client, id="dup")
    status, body = await call(client, "POST", "/events", event(id="dup", aggregate_id="other", version=9))
    assert_error(status, body, 409, "unique constraint violation")
    await post(client, id="dup", event_type="user.deleted")  # another type
    await post(client, id="dup", event_source="billing")  # another source
    # the same aggregate id and version, other ids: both kept (no optimistic concurrency for external events)
    a, b = await post(client, aggregate_id="agg", version=3), await post(client, aggregate_id="agg", version=3)
    assert a["nid"] != b["nid"]
    status, listed = await call(client, "GET", "/events/type", params={"event_type": "user.created"})
    assert sorted(e["event_source"] for e in listed if e["id"] == "dup") == ["auth", "billing"] and first in listed


@pytest.mark.in_process(reason="pins the service's clock with freezegun")
async def test_the_identity_day_is_the_utc_day_of_created_at(client):
    with freeze_time("2031-07-05T00:04:00Z", tick=True):
        late = await post(client, id="midnight", created_at="2031-07-04T23:58:00Z")
        early = await post(client, id="midnight", created_at="2031-07-05T00:01:00Z")
        status, body = await call(client, "POST", "/events", event(id="midnight", created_at="2031-07-05T01:59:00+02:00"))
        assert_error(status, body, 409)  # 2031-07-04T23:59Z: the 4th again
    assert late["nid"] != early["nid"]


async def test_internal_events_are_listed_with_the_external_ones(client):
    backend = await create_backend(client, "ollama-a")
    status, created = await call(client, "GET", "/events/type", params={"event_type": "backend.created"})
    assert status == 200 and len(created) == 1
    [record] = created
    assert (record["aggregate_type"], record["aggregate_id"], record["event_source"]) == ("backend", backend["id"], "chainloom")
    assert record["data"]["name"] == "ollama-a" and record["version"] == 1 and record["nid"] > 0
    status, sources = await call(
        client, "GET", "/events/source", params={"event_type": "backend.created", "event_source": "chainloom"}
    )
    assert sources == created


async def test_a_forged_internal_event_is_listed_but_never_projected(client):
    await post(client, event_type="backend.created", event_source="mallory", aggregate_type="backend",
               aggregate_id="fake", data={"name": "fake", "baseUrl": "http://x", "type": "ollama"})
    status, backends = await call(client, "GET", "/backends")
    assert backends == []
    status, listed = await call(client, "GET", "/events/type", params={"event_type": "backend.created"})
    assert [e["aggregate_id"] for e in listed] == ["fake"]


# -- the queries ----------------------------------------------------------------------------


async def test_lists_are_newest_first_inclusive_and_limited(client):
    times = [ago(m) for m in (8, 6, 4, 2)]
    posted = [await post(client, created_at=t, aggregate_id=f"u{i}") for i, t in enumerate(times)]
    status, listed = await call(client, "GET", "/events/type", params={"event_type": "user.created"})
    assert [e["aggregate_id"] for e in listed] == ["u3", "u2", "u1", "u0"]
    status, listed = await call(client, "GET", "/events/type", params={"event_type": "user.created", "limit": "+2"})
    assert [e["aggregate_id"] for e in listed] == ["u3", "u2"]
    params = {"event_type": "user.created", "from": times[1], "to": times[2]}  # both ends inclusive
    status, listed = await call(client, "GET", "/events/type", params=params)
    assert [e["nid"] for e in listed] == [posted[2]["nid"], posted[1]["nid"]]
    status, listed = await call(client, "GET", "/events/type", params={"event_type": "user.created", "from": ago(-1)})
    assert_error(status, listed, 422, "cannot be after 'to'")


async def test_future_events_are_hidden_until_to_includes_them(client):
    future = await post(client, created_at=ago(-5))
    status, listed = await call(client, "GET", "/events/type", params={"event_type": "user.created"})
    assert listed == []
    status, listed = await call(client, "GET", "/events/type", params={"event_type": "user.created", "to": ago(-6)})
    assert listed == [future]


async def test_events_of_an_aggregate_and_of_a_source(client):
    at = ago(3)
    v2 = await post(client, aggregate_id="u-7", version=2, created_at=at)  # appended first,
    v1 = await post(client, aggregate_id="u-7", version=1, created_at=at)  # listed after: same time, lower version
    v3 = await post(client, aggregate_id="u-7", version=3)
    await post(client, aggregate_id="u-8")
    await post(client, aggregate_id="u-7", aggregate_type="admin")
    await post(client, aggregate_id="u-7", event_source="other")
    params = {"event_type": "user.created", "aggregate_type": "user", "aggregate_id": "u-7"}
    status, listed = await call(client, "GET", "/events/aggregate", params=params)
    ours = [e for e in listed if e["event_source"] == "auth"]
    assert [e["nid"] for e in ours] == [v3["nid"], v2["nid"], v1["nid"]]  # same created_at: version descending
    assert {e["aggregate_id"] for e in listed} == {"u-7"} and {e["aggregate_type"] for e in listed} == {"user"}
    status, listed = await call(client, "GET", "/events/source", params={"event_type": "user.created", "event_source": "other"})
    assert [(e["aggregate_id"], e["event_source"]) for e in listed] == [("u-7", "other")]
    status, listed = await call(client, "GET", "/events/aggregate", params=params | {"aggregate_id": "U-7"})
    assert listed == []  # exact, case-sensitive


async def test_event_types_are_distinct_newest_first_and_capped(client):
    for event_type in ("zeta.done", "alpha.done", "Beta.done", "alpha.done"):
        await post(client, event_type=event_type)
    status, types = await call(client, "GET", "/events/types")
    # by last occurrence, newest first: alpha.done was posted again last
    assert [t for t in types if t.endswith(".done")] == ["alpha.done", "Beta.done", "zeta.done"]
    assert types[:3] == ["alpha.done", "Beta.done", "zeta.done"] and len(types) == len(set(types))
    status, types = await call(client, "GET", "/events/types", params={"limit": "2"})
    assert types == ["alpha.done", "Beta.done"]  # what a client just posted is within any limit
    status, types = await call(client, "GET", "/events/types", params={"from": ago(-1), "to": ago(-2)})
    assert types == []
    status, types = await call(client, "GET", "/events/types", params={"from": "0001-01-01T00:00:00Z", "to": "9999-01-01T00:00:00Z"})
    assert status == 200 and "zeta.done" in types


@pytest.mark.parametrize(
    "path, params, fragment",
    [
        ("/events/type", {}, "event_type is required"),
        ("/events/type", {"event_type": ""}, "event_type is required"),
        ("/events/source", {"event_type": "x"}, "event_source is required"),
        ("/events/aggregate", {"aggregate_id": "a", "aggregate_type": "t"}, "event_type is required"),
        ("/events/aggregate", {"event_type": "x", "aggregate_id": "a"}, "aggregate_type is required"),
        ("/events/aggregate", {"event_type": "x", "aggregate_type": "t"}, "aggregate_id is required"),
        ("/events/type", {"event_type": "x", "limit": "0"}, "invalid limit, must be positive integer"),
        ("/events/type", {"event_type": "x", "limit": "ten"}, "invalid limit, must be positive integer"),
        ("/events/type", {"event_type": "x", "limit": "1001"}, "limit cannot exceed 1000, got 1001"),
        ("/events/types", {"limit": "99999999999999999999999"}, "limit cannot exceed 1000"),
        ("/events/type", {"event_type": "x", "from": "2025-01-01"}, "invalid 'from' time format, expected RFC3339"),
        ("/events/type", {"event_type": "x", "to": "2025-01-01T00:00:00"}, "invalid 'to' time format"),
        ("/events/types", {"from": "2025-01-02T00:00:00Z", "to": "2025-01-01T00:00:00Z"}, "cannot be after 'to'"),
    ],
)
async def test_bad_query_parameters_are_422_naming_them(client, path, params, fragment):
    status, body = await call(client, "GET", path, params=params)
    assert_error(status, body, 422, fragment)


async def test_empty_results_are_empty_lists(client):
    for path, params in [
        ("/events/type", {"event_type": "nothing"}),
        ("/events/source", {"event_type": "nothing", "event_source": "x"}),
        ("/events/aggregate", {"event_type": "nothing", "aggregate_type": "x", "aggregate_id": "y"}),
        ("/events/types", {"from": "2001-01-01T00:00:00Z", "to": "2001-01-02T00:00:00Z"}),
    ]:
        status, body = await call(client, "GET", path, params=params)
        assert (status, body) == (200, []), path
