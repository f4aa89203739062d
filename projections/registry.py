"""Every projector of the service, in the order they are applied."""

from __future__ import annotations

from projections.base import Projector
from projections.catalog import CatalogProjector
from projections.eventsource import EventSourceProjector


def all_projectors() -> list[Projector]:
    return [CatalogProjector(), EventSourceProjector()]
