"""Event times come from the clock: pinned with freezegun."""

from freezegun import freeze_time
from eventsourcing.persistence import Notification

from chainloom.domain.backends import Backend
from chainloom.infra.envelope import EnvelopeMapper


@freeze_time("2025-03-01T10:04:05.123456Z")
def test_events_are_stamped_with_the_clock_in_rfc3339_utc():
    backend = Backend.create("b1", "n", "http://u", "ollama")
    (created,) = backend.collect_events()
    mapper = EnvelopeMapper()
    public = mapper.to_public(Notification(id=1, **vars(mapper.to_stored_event(created))))
    assert public["created_at"] == "2025-03-01T10:04:05.123456Z"
    assert backend.created_on.isoformat() == "2025-03-01T10:04:05.123456+00:00"
