"""Typed application state: what handlers may reach."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from chainloom.commands.catalog import CatalogCommands
from chainloom.commands.eventsource import EventSourceCommands
from chainloom.infra.kafka_relay import RelayService
from chainloom.infra.settings import Settings
from chainloom.projections.waits import ReadModels
from chainloom.queries.catalog import CatalogQueries
from chainloom.queries.eventsource import EventSourceQueries
from chainloom.web.sse import EventHub
from chainloom.web.workers import Siblings

SETTINGS = web.AppKey("settings", Settings)
CATALOG_COMMANDS = web.AppKey("catalog_commands", CatalogCommands)
CATALOG_QUERIES = web.AppKey("catalog_queries", CatalogQueries)
PROJECTIONS = web.AppKey("projections", ReadModels)  # kept here, or by workers elsewhere
EVENTSOURCE_COMMANDS = web.AppKey("eventsource_commands", EventSourceCommands)
EVENTSOURCE_QUERIES = web.AppKey("eventsource_queries", EventSourceQueries)
EVENT_HUB = web.AppKey("event_hub", EventHub)
SIBLINGS = web.AppKey("siblings", Siblings)  # only in one of several worker processes
LOG_HEAD: web.AppKey[Callable[[], Awaitable[int]]] = web.AppKey("log_head")  # the log's head position, now
RELAY = web.AppKey("relay", RelayService)  # only where this process runs the Kafka relay (or stands by for it)
