"""``GET /metrics``: the service in Prometheus' text format, and the middleware that counts requests.

Two kinds of figures answer a scrape. Counters and histograms of what processes did
(``infra/metrics.py``: requests, appended events, chain runs, trigger executions),
summed over every worker of a ``chainloom serve``. And gauges of shared state, read
from the store while the scrape is answered (``SharedState``): projection positions
and lag, faulted projectors, the relay's position, backend states, pulls in progress,
the job queue — so any worker answers them alike, and nothing is kept in memory for
them between scrapes.

``CHAINLOOM_METRICS=false`` leaves all of it out: no route (``/metrics`` is 404), no
middleware, nothing counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from chainloom.infra import metrics
from chainloom.infra.eventlog import EventLog
from chainloom.infra.readstore import ReadStore
from chainloom.infra.settings import Settings
from chainloom.queries import operator
from chainloom.web.access_log import route_of
from chainloom.web.openapi import responds

logger = logging.getLogger(__name__)

INSTRUMENTS = web.AppKey("metrics_instruments", metrics.Instruments)
# A scrape: the registry encoded by the given encoder (read on the thread pool).
SCRAPE: web.AppKey[Callable[[Callable[[CollectorRegistry], bytes]], Awaitable[bytes]]] = web.AppKey("metrics_scrape")


routes = web.RouteTableDef()


@routes.get("/metrics")
@responds(200, str, "Prometheus text exposition format (version 0.0.4).", "text/plain")
async def scrape(request: web.Request) -> web.Response:
    """The service's metrics for Prometheus: what every worker counted, and the shared state as it is now.

    In the text format (0.0.4), or in OpenMetrics when the scraper's Accept header asks for it."""
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = await request.app[SCRAPE](encode)
    return web.Response(body=body, headers={"Content-Type": content_type})


def setup(app: web.Application, settings: Settings) -> None:
    """Count requests and serve ``/metrics`` (nothing at all when ``CHAINLOOM_METRICS`` is off)."""
    if not settings.metrics:
        return
    registry = CollectorRegistry() if metrics.multiprocess_directory() is None else None
    instruments = metrics.Instruments(registry)
    app[INSTRUMENTS] = instruments
    app.middlewares.insert(0, _counting(instruments))
    app.add_routes(routes)


def open_scrape(app: web.Application, settings: Settings, log: EventLog, store: ReadStore, run_blocking: Any) -> None:
    """Once the stores are open: what a scrape reads (on the thread pool: the shared state is read from the store)."""
    if INSTRUMENTS not in app:
        return
    registry = metrics.process_registry(app[INSTRUMENTS].registry, [SharedState(settings, log, store)])

    async def scrape_now(encode: Callable[[CollectorRegistry], bytes]) -> bytes:
        return await run_blocking(encode, registry)

    app[SCRAPE] = scrape_now


def _counting(instruments: metrics.Instruments) -> Any:
    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as answer:
            status = answer.status
            raise
        except BaseException as error:
            status = 499 if isinstance(error, (ConnectionResetError, asyncio.CancelledError)) else 500  # 499: the client left
            raise
        finally:
            method = request.method if request.method in metrics.METHODS else metrics.OTHER  # a client may send any
            instruments.answered(method, route_of(request), status, time.perf_counter() - started)

    return count


# -- the shared state, read at scrape time -----------------------------------------------------------------


class SharedState(Collector):
    """Gauges read from the store at each scrape (blocking: the scrape runs on the thread pool).

    Each part is read on its own: one that cannot be read (a read model not created yet, in the
    distributed mode before its worker ran) is left out and flagged in
    ``chainloom_metrics_read_failed{part}``, and the others are answered.
    """

    def __init__(self, settings: Settings, log: EventLog, store: ReadStore) -> None:
        self._settings = settings
        self._log = log
        self._store = store

    def describe(self) -> list[Any]:
        return []  # registering must not read the store

    def collect(self) -> Iterator[Any]:
        failed = GaugeMetricFamily(
            "chainloom_metrics_read_failed", "1 when a part of the shared state could not be read at this scrape.",
            labels=["part"],
        )  # fmt: skip
        head = 0
        parts: list[tuple[str, Callable[[int], list[Any]]]] = [
            ("projections", self._projections),
            ("relay", self._relay),
            ("backends", self._backends),
            ("downloads", self._downloads),
            ("jobs", self._jobs),
        ]
        try:
            head = self._log.head()
        except Exception:  # noqa: BLE001 - the other parts may still be read
            logger.warning("metrics: could not read the log's head", exc_info=True)
            failed.add_metric(["log"], 1)
        else:
            yield GaugeMetricFamily("chainloom_log_head", "The log's last position.", value=head)
        for part, read in parts:
            try:
                families = read(head)
            except Exception:  # noqa: BLE001
                logger.warning("metrics: could not read the %s state", part, exc_info=True)
                failed.add_metric([part], 1)
                continue
            failed.add_metric([part], 0)
            yield from families
        yield failed

    def _projections(self, head: int) -> list[Any]:
        position = GaugeMetricFamily("chainloom_projection_position", "Last log position a projector applied.", labels=["projector"])
        lag = GaugeMetricFamily("chainloom_projection_lag", "Events of the log a projector has not applied yet.", labels=["projector"])
        faulted = GaugeMetricFamily("chainloom_projection_faulted", "1 while a projector is stopped at a poison event.", labels=["projector"])
        for state in operator.projection_states(self._store, self._log):
            position.add_metric([state.name], state.position)
            lag.add_metric([state.name], state.lag)
            faulted.add_metric([state.name], 0 if state.fault is None else 1)
        return [position, lag, faulted]

    def _relay(self, head: int) -> list[Any]:
        position = GaugeMetricFamily("chainloom_relay_position", "Last log position the Kafka relay published.", labels=[])
        lag = GaugeMetricFamily("chainloom_relay_lag", "Events of the log not yet published to Kafka.", labels=[])
        if self._settings.kafka_enabled:  # else no samples: no relay is configured
            relayed = operator.relay_position(self._settings, self._store)
            position.add_metric([], relayed)
            lag.add_metric([], max(head - relayed, 0))
        return [position, lag]

    def _backends(self, head: int) -> list[Any]:
        counts = {"up": 0, "error": 0, "unobserved": 0}
        up = GaugeMetricFamily(
            "chainloom_backend_up", "1 when the backend was last observed without an error.", labels=["backend"]
        )
        for name, state in operator.backend_observations(self._store):
            counts[state] += 1
            up.add_metric([name], 1 if state == "up" else 0)
        states = GaugeMetricFamily("chainloom_backends", "Backends by observed state (up, error, unobserved).", labels=["state"])
        for state, count in counts.items():
            states.add_metric([state], count)
        return [states, up]

    def _downloads(self, head: int) -> list[Any]:
        completed = GaugeMetricFamily(
            "chainloom_download_completed_bytes", "Bytes of the current layer a running pull has.", labels=["model", "backend"]
        )
        total = GaugeMetricFamily(
            "chainloom_download_total_bytes", "Bytes of the current layer a running pull fetches.", labels=["model", "backend"]
        )
        for pull in operator.running_pulls(self._store):
            completed.add_metric([pull.model, pull.backend], pull.completed)
            total.add_metric([pull.model, pull.backend], pull.total)
        return [completed, total]

    def _jobs(self, head: int) -> list[Any]:
        depth = GaugeMetricFamily(
            "chainloom_jobs", "Open jobs by type and state (pending, in_progress, parked).", labels=["type", "state"]
        )
        for task_type, state, count in operator.job_depths(self._store):
            depth.add_metric([task_type, state], count)
        age = GaugeMetricFamily(
            "chainloom_job_oldest_lease_age_seconds", "Seconds since the oldest held lease of a job type was taken.",
            labels=["type"],
        )  # fmt: skip
        now = time.time_ns()
        for task_type, since in operator.oldest_leases(self._store):
            age.add_metric([task_type], max(now - since, 0) / 1e9)
        return [depth, age]
