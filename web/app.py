"""The service: builds the application from settings (the composition root of the web process)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, ExitStack

from aiohttp import web

from chainloom.commands.base import CommandRunner
from chainloom.commands.catalog import CatalogCommands, DefaultModel
from chainloom.commands.eventsource import EventSourceCommands
from chainloom.domain.groups import CHAT_GROUP_ID, EMBED_GROUP_ID, TASKS_GROUP_ID
from chainloom.infra.blocking import BlockingPool
from chainloom.infra.bootstrap import open_resources
from chainloom.infra.eventlog import EventLog
from chainloom.infra.kafka_relay import RelayService, open_relay
from chainloom.infra.readstore import ReadStore
from chainloom.infra.settings import Settings
from chainloom.infra.singleton import Throttled, singleton_lock
from chainloom.projections.live import LiveLog
from chainloom.projections.registry import all_projectors
from chainloom.projections.runner import ProjectionFaulted, ProjectionRunner
from chainloom.projections.tracked import TrackedProjections
from chainloom.projections.waits import ReadModels
from chainloom.queries.cache import ReadCache
from chainloom.queries.catalog import CatalogMemberships, CatalogQueries
from chainloom.queries.eventsource import EventIndex, EventSourceQueries
from chainloom.web import catalog, eventsource, system
from chainloom.web.errors import error_middleware
from chainloom.web.keys import (
    CATALOG_COMMANDS,
    CATALOG_QUERIES,
    EVENT_HUB,
    EVENTSOURCE_COMMANDS,
    EVENTSOURCE_QUERIES,
    PROJECTIONS,
    RELAY,
    SETTINGS,
    SHARED_VERSION,
)
from chainloom.web.middleware import request_id_middleware, token_middleware, url_values_middleware
from chainloom.web.sse import EventHub
from chainloom.web.workers import SharedVersion

logger = logging.getLogger(__name__)

# A worker's projection runner looks at the log this often (writes made through other workers), and
# a standby tries to take the projection lock this often (how soon it takes over from a dead holder).
WORKER_POLL = 0.01
LOCK_RETRY = 0.5


def create_app(settings: Settings, shared: SharedVersion | None = None) -> web.Application:
    """The service; ``shared`` when it is one of several worker processes (``web/workers.py``)."""
    middlewares = [request_id_middleware, error_middleware]
    if settings.api_token:
        middlewares.append(token_middleware(settings.api_token))
    middlewares.append(url_values_middleware)
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    if shared is not None:
        app[SHARED_VERSION] = shared
    app.cleanup_ctx.append(_services)
    app.add_routes(system.routes)
    app.add_routes(catalog.routes)
    app.add_routes(eventsource.routes)
    app[EVENT_HUB] = EventHub(settings.sse_queue_size)
    app.on_shutdown.append(_end_streams)
    return app


async def _end_streams(app: web.Application) -> None:
    """Live streams never end by themselves: end them before the server waits for its handlers."""
    app[EVENT_HUB].close()


def default_models(settings: Settings) -> dict[str, DefaultModel]:
    return {
        EMBED_GROUP_ID: DefaultModel(settings.embed_model, settings.embed_model_context_length),
        TASKS_GROUP_ID: DefaultModel(settings.task_model, settings.task_model_context_length),
        CHAT_GROUP_ID: DefaultModel(settings.chat_model, settings.chat_model_context_length),
    }


async def _services(app: web.Application) -> AsyncIterator[None]:
    """Open the log, the read store and the secrets, follow the log, seed defaults.

    Every resource's cleanup is registered as it is opened, so a start-up that
    fails half-way closes what it had opened; at shutdown all close in reverse
    order, no store call in flight when the stores close.
    """
    settings = app[SETTINGS]
    async with AsyncExitStack() as stack:
        pool = BlockingPool(settings.db_threads)
        stack.push_async_callback(asyncio.to_thread, pool.close)
        # Decisions run one at a time in this process: the log serialises appends
        # anyway, and deciding in turn spares concurrent writers of one aggregate
        # from losing optimistic-concurrency races (other processes still may; the
        # command runner then decides again).
        writer = BlockingPool(1, name="writer")
        stack.push_async_callback(asyncio.to_thread, writer.close)
        opened = ExitStack()
        stack.push_async_callback(asyncio.to_thread, opened.close)
        resources = await pool.run(opened.enter_context, open_resources(settings, secrets=True))
        log, store = resources.log, resources.store

        shared = app.get(SHARED_VERSION)
        runner = _read_models(settings, log, store, pool, shared)
        hub = app[EVENT_HUB]
        live: LiveLog | None = None
        if isinstance(runner, ProjectionRunner) and shared is None:
            runner.add_listener(hub.publish)  # live streams get each batch the runner applies
        else:  # the read models are kept elsewhere (or by whichever worker holds the runner):
            live = LiveLog(log, pool.run, hub.publish, hub.subscriber_count)  # follow the log for the streams
        # With Kafka configured (and no separate `chainloom relay`), this process relays the log too.
        relay: RelayService | None = None
        if settings.kafka_enabled and settings.kafka_relay_in_serve:
            relay = open_relay(settings, log)

        def wait_on(*needs: str) -> Callable[[int | None], Awaitable[None]]:
            """Read-your-writes on the read models a command service answers from (only those can fail it)."""

            async def wait_for(position: int | None) -> None:
                if relay is not None:
                    relay.poke()
                if live is not None:
                    live.poke()
                await runner.wait_for(position, settings.projection_timeout, needs=needs)
                if shared is not None:
                    shared.bump()  # what this command wrote may be in a result another worker remembers

            return wait_for

        await runner.start()
        stack.push_async_callback(runner.stop)
        if live is not None:
            live.start()
            stack.push_async_callback(live.stop)
        if relay is not None:
            relay.start()
            stack.push_async_callback(relay.stop)
            app[RELAY] = relay
        # Live streams begin at the log's head: a client resuming from an earlier position is caught
        # up from the event index (which it waits for), so the events already in the log are not missed.
        hub.publish([], await pool.run(log.head))

        wait_for_catalog = wait_on("catalog")
        wait_for_eventsource = wait_on("eventsource")
        app[PROJECTIONS] = runner
        app[CATALOG_COMMANDS] = CatalogCommands(
            CommandRunner(log, writer.run, wait_for_catalog), CatalogMemberships(store), settings.embed_model
        )
        # Remember query results while the read models stand still (only where this process moves them).
        cache = ReadCache(_cache_stamp(runner, shared))
        app[CATALOG_QUERIES] = CatalogQueries(store, pool.run, cache)
        app[EVENTSOURCE_COMMANDS] = EventSourceCommands(
            CommandRunner(log, writer.run, wait_for_eventsource),
            log,
            pool.run,
            wait_for_eventsource,
            EventIndex(store),
            resources.secrets,
        )
        app[EVENTSOURCE_QUERIES] = EventSourceQueries(store, pool.run)
        try:
            await app[CATALOG_COMMANDS].seed_internal_groups(default_models(settings), settings.tenancy)
        except ProjectionFaulted as error:  # the seeds are stored; serve (degraded) until an operator acts
            logger.warning("start-up seeding is stored but not yet shown: %s", error)
        yield


def _read_models(
    settings: Settings, log: EventLog, store: ReadStore, pool: BlockingPool, shared: SharedVersion | None
) -> ReadModels:
    """Embedded: this process follows the log — the one that holds the projection lock, when it is one
    of several workers. Kafka: projector workers do; this process watches their positions."""
    if settings.projections == "kafka":
        return TrackedProjections(store, all_projectors(), pool.run)
    if shared is None:
        return ProjectionRunner(log, store, all_projectors(), pool.run)
    return ProjectionRunner(
        log,
        store,
        all_projectors(),
        pool.run,
        idle_poll=WORKER_POLL,
        lock=Throttled(singleton_lock(settings, "projections"), LOCK_RETRY),
        on_batch=shared.bump,
    )


def _cache_stamp(runner: ReadModels, shared: SharedVersion | None) -> Callable[[], int] | None:
    """What remembered query results are stamped with: something that moves whenever the read models may
    have (the runner's version, or the version all workers share), or None to remember nothing (the
    read models are kept by workers elsewhere)."""
    if not isinstance(runner, ProjectionRunner):
        return None
    if shared is not None:
        return shared
    return lambda: runner.version
