"""The one event-envelope mapper and the RFC 3339 helpers."""

from datetime import datetime, timezone

import pytest
from eventsourcing.persistence import Notification

from chainloom.domain.backends import Backend
from chainloom.domain.groups import AffinityGroup
from chainloom.domain.errors import BadRequest, Unprocessable
from chainloom.infra.envelope import EnvelopeMapper
from chainloom.infra.timefmt import format_ns, parse_ns, to_ns
from chainloom.queries.pagination import DEFAULT_LIMIT, Page


def test_internal_events_get_the_public_envelope_and_come_back_equal():
    mapper = EnvelopeMapper(new_event_id=lambda: "event-1")
    group = AffinityGroup.create("g1", "Chat", "Internal Chat")
    group.assign_backend("b1")
    created, assigned = group.collect_events()

    stored = mapper.to_stored_event(assigned, {"actor": "tester", "request_id": "r1"})
    public = mapper.to_public(Notification(id=7, **vars(stored)))
    assert public == {
        "id": "event-1",
        "nid": 7,
        "created_at": public["created_at"],
        "event_type": "group.backend_assigned",
        "event_source": "chainloom",
        "aggregate_type": "group",
        "aggregate_id": "g1",
        "version": 2,
        "data": {"backendId": "b1"},
        "metadata": {"actor": "tester", "request_id": "r1"},
    }
    assert mapper.to_domain_event(stored) == assigned
    assert mapper.to_domain_event(mapper.to_stored_event(created)) == created


def test_created_events_rebuild_their_aggregate():
    mapper = EnvelopeMapper()
    backend = Backend.create("b1", "n", "http://u", "ollama")
    (created,) = backend.collect_events()
    rebuilt = mapper.to_domain_event(mapper.to_stored_event(created)).mutate(None)
    assert (rebuilt.key, rebuilt.name, rebuilt.base_url, rebuilt.type) == ("b1", "n", "http://u", "ollama")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2025-03-01T10:04:05Z", "2025-03-01T10:04:05Z"),
        ("2025-03-01T10:04:05.120000Z", "2025-03-01T10:04:05.12Z"),
        ("2025-03-01T10:04:05.123456789Z", "2025-03-01T10:04:05.123456789Z"),
        ("2025-03-01T12:04:05.5+02:00", "2025-03-01T10:04:05.5Z"),
    ],
)
def test_rfc3339_round_trip_in_utc_with_trimmed_fraction(text, expected):
    assert format_ns(parse_ns(text)) == expected


@pytest.mark.parametrize("text", ["2025-03-01T10:04:05", "2025-03-01", "yesterday", "2025-03-01T10:04:05.1234567891Z"])
def test_times_without_zone_or_garbage_are_refused(text):
    with pytest.raises(ValueError):
        parse_ns(text)


def test_nanoseconds_of_a_datetime():
    moment = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    assert format_ns(to_ns(moment)) == "2025-01-02T03:04:05.678901Z"


class TestPage:
    def test_defaults(self):
        assert Page.parse(None, None).limit == DEFAULT_LIMIT
        assert Page.parse("", "").limit == DEFAULT_LIMIT

    def test_limit_and_cursor(self):
        page = Page.parse("5", "2025-03-01T10:04:05.000000001Z")
        assert page.limit == 5 and page.before_ns == parse_ns("2025-03-01T10:04:05.000000001Z")

    @pytest.mark.parametrize(
        "limit, cursor, error, fragment",
        [
            ("x", None, Unprocessable, "invalid limit format, expected integer"),
            ("0", None, Unprocessable, "limit must be positive"),
            ("-3", None, Unprocessable, "limit must be positive"),
            ("1001", None, BadRequest, "limit exceeds maximum allowed value"),
            ("10", "2025-03-01", Unprocessable, "invalid cursor format, expected RFC3339Nano"),
        ],
    )
    def test_bad_values(self, limit, cursor, error, fragment):
        with pytest.raises(error, match=fragment):
            Page.parse(limit, cursor)
