"""Typed application state: what handlers may reach."""

from __future__ import annotations

from aiohttp import web

from commands.catalog import CatalogCommands
from infra.settings import Settings
from projections.runner import ProjectionRunner
from queries.catalog import CatalogQueries

SETTINGS = web.AppKey("settings", Settings)
CATALOG_COMMANDS = web.AppKey("catalog_commands", CatalogCommands)
CATALOG_QUERIES = web.AppKey("catalog_queries", CatalogQueries)
PROJECTIONS = web.AppKey("projections", ProjectionRunner)
