"""Timestamps and cursors through the API with a pinned clock (freezegun, ticking so asyncio runs)."""

import pytest
from freezegun import freeze_time

from chainloom.infra.timefmt import parse_ns
from tests.api.helpers import call, create_group


@pytest.mark.in_process(reason="pins the service's clock with freezegun")
async def test_created_at_comes_from_the_clock_and_cursors_page_by_it(client):
    with freeze_time("2031-07-04T12:00:00Z", tick=True):
        first = await create_group(client, "first", "clocked")
        second = await create_group(client, "second", "clocked")
    start = parse_ns("2031-07-04T12:00:00Z")
    for group in (first, second):
        assert 0 <= parse_ns(group["createdAt"]) - start < 60 * 10**9
    assert parse_ns(second["createdAt"]) > parse_ns(first["createdAt"])
    status, page = await call(client, "GET", "/group-by-purpose/clocked", params={"cursor": second["createdAt"]})
    assert page == [first]
    status, page = await call(client, "GET", "/group-by-purpose/clocked", params={"cursor": "2031-07-04T12:00:00Z"})
    assert page == []
