"""Every projector of the service, in the order they are applied."""

from __future__ import annotations

from chainloom.projections.base import Projector
from chainloom.projections.catalog import CatalogProjector
from chainloom.projections.downloads import DownloadsProjector
from chainloom.projections.eventsource import EventSourceProjector
from chainloom.projections.functions import FunctionsProjector
from chainloom.projections.hooks import HooksProjector
from chainloom.projections.identity import IdentityProjector
from chainloom.projections.providers import ProvidersProjector
from chainloom.projections.runtime import RuntimeProjector
from chainloom.projections.task_runs import TaskRunsProjector
from chainloom.projections.taskchains import TaskChainsProjector


def all_projectors() -> list[Projector]:
    return [
        CatalogProjector(),
        EventSourceProjector(),
        ProvidersProjector(),
        RuntimeProjector(),
        DownloadsProjector(),
        HooksProjector(),
        TaskChainsProjector(),
        FunctionsProjector(),
        TaskRunsProjector(),
        IdentityProjector(),
    ]
