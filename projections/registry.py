"""Every projector of the service, in the order they are applied."""

from __future__ import annotations

from chainloom.projections.base import Projector
from chainloom.projections.catalog import CatalogProjector
from chainloom.projections.eventsource import EventSourceProjector


def all_projectors() -> list[Projector]:
    return [CatalogProjector(), EventSourceProjector()]
