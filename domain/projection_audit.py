"""The audit of an operator's decision about a read model: an event skipped by a projection.

A projection that cannot apply an event (a poison event) stops there until an
operator retries or skips it. Skipping changes what a read model shows, so it
is recorded on the log itself, where every consumer sees it: one aggregate per
skipped event (``<projection>@<nid>``), created by the skip, so skipping the
same event twice records it once.
"""

from __future__ import annotations

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate


class SkippedProjectionEvent(Aggregate):
    aggregate_type = "projection"

    class EventSkipped(Aggregate.Created):
        projection: str
        skipped_nid: int
        event_id: str
        event_type: str
        error: str

    @staticmethod
    def key_for(projection: str, skipped_nid: int) -> str:
        return f"{projection}@{skipped_nid}"

    @classmethod
    def record(
        cls, projection: str, skipped_nid: int, event_id: str, event_type: str, error: str
    ) -> SkippedProjectionEvent:
        return cls._create(
            cls.EventSkipped,
            id=cls.stream_id(cls.key_for(projection, skipped_nid)),
            projection=projection,
            skipped_nid=skipped_nid,
            event_id=event_id,
            event_type=event_type,
            error=error,
        )

    @event(EventSkipped)
    def __init__(self, projection: str, skipped_nid: int, event_id: str, event_type: str, error: str) -> None:
        self.projection = projection
        self.skipped_nid = skipped_nid
        self.event_id = event_id
        self.event_type = event_type
        self.error = error
