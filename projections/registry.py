"""Every projector of the service, in the order they are applied."""

from __future__ import annotations

from chainloom.infra.vectors import VectorStore
from chainloom.projections.activity import DEFAULT_RETENTION, ActivityProjector
from chainloom.projections.base import Projector
from chainloom.projections.catalog import CatalogProjector
from chainloom.projections.chats import ChatsProjector
from chainloom.projections.downloads import DownloadsProjector
from chainloom.projections.eventsource import EventSourceProjector
from chainloom.projections.files import FilesProjector
from chainloom.projections.functions import FunctionsProjector
from chainloom.projections.hooks import HooksProjector
from chainloom.projections.identity import IdentityProjector
from chainloom.projections.jobs import JobsProjector
from chainloom.projections.providers import ProvidersProjector
from chainloom.projections.runtime import RuntimeProjector
from chainloom.projections.task_runs import TaskRunsProjector
from chainloom.projections.taskchains import TaskChainsProjector
from chainloom.projections.telegram import TelegramProjector
from chainloom.projections.vectors import VectorsProjector


def all_projectors(vectors: VectorStore | None = None, activity_retention: int = DEFAULT_RETENTION) -> list[Projector]:
    """``vectors``: where the vector read model keeps its embeddings (``infra.vectors``); without it, only
    processes that never apply an indexed chunk (set-up, tests of other read models) may use the list.
    ``activity_retention``: the activity events kept (``CHAINLOOM_ACTIVITY_RETENTION``)."""
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
        FilesProjector(),
        JobsProjector(),
        TelegramProjector(),
        ChatsProjector(),
        VectorsProjector(vectors=vectors),
        ActivityProjector(retention=activity_retention),
    ]
