"""Commands of model downloads: queueing what a backend lacks, cancelling, dequeuing, and what the job records.

Two runners: the API's commands (cancel, dequeue, purge) answer once the
queue read model shows them (read-your-writes on ``downloads``); the
background's (the reconciler's ``queue_missing``, the download job's
start/complete/fail) only announce what they wrote and never wait — a
read model that lags must not stall a reconciliation cycle or a pull.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from chainloom.commands.base import SYSTEM, Aggregates, CommandContext, CommandRunner, Decision
from chainloom.domain.downloads import ACTIVE_STATES, QUEUED, RUNNING, Download, download_key
from chainloom.queries.downloads import DownloadQueue

logger = logging.getLogger(__name__)

# The job's records, in the events' metadata.
JOB = CommandContext(actor="system", request_id="downloads")


def _now() -> datetime:
    return datetime.now(timezone.utc)


class DownloadCommands:
    def __init__(
        self,
        runner: CommandRunner,
        background: CommandRunner,
        queue: DownloadQueue,
        run_blocking: Callable[..., Awaitable[Any]],
        retry_after: float,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._runner = runner
        self._background = background
        self._queue = queue
        self._run_blocking = run_blocking
        self._retry_after = retry_after
        self._clock = clock

    # -- the reconciler ----------------------------------------------------------

    async def queue_missing(self, backend_id: str, base_url: str, models: Sequence[str]) -> None:
        """Queue a download of each of ``models`` (declared, and missing on the Ollama backend) unless one
        is queued or running, or one ended less than CHAINLOOM_DOWNLOAD_RETRY_AFTER seconds ago.
        Idempotent: called every cycle; writes only what is new."""
        if not models:
            return
        known = await self._run_blocking(self._queue.of_backend, backend_id)
        now_ns = int(self._clock().timestamp() * 1e9)
        wanted = []
        for model in dict.fromkeys(models):
            row = known.get(model)
            if row is None or (
                row.state not in ACTIVE_STATES and (now_ns - row.changed_at) / 1e9 >= self._retry_after
            ):
                wanted.append(model)
        if not wanted:
            return  # the read model says there is nothing to do (the decision checks the log again)

        def decide(log: Aggregates) -> Decision[list[str]]:
            now = self._clock()
            save = []
            for model in wanted:
                download = log.get(Download, download_key(backend_id, model))
                if download is None:
                    save.append(Download.queue(backend_id, base_url, model))
                elif download.may_queue(now, self._retry_after):
                    download.requeue(base_url)
                    save.append(download)
            return Decision([d.model for d in save], save)

        queued = await self._background.run(decide, SYSTEM)
        if queued:
            logger.info("queued downloads on backend %s (%s): %s", backend_id, base_url, ", ".join(queued))

    # -- the API ------------------------------------------------------------------

    async def cancel(self, ctx: CommandContext, *, url: str | None = None, model: str | None = None) -> int:
        """Cancel the running downloads on the backend at ``url``, or of ``model`` on every backend; the job
        pulling them sees it on the log and stops. Queued downloads stay queued. How many were cancelled."""
        return await self._runner.run(lambda log: self._cancelling(log, url=url, model=model), ctx)

    def _cancelling(self, log: Aggregates, *, url: str | None, model: str | None) -> Decision[int]:
        # The read model may not show yet a start just recorded: the log decides which are running.
        candidates = self._queue.matching(ACTIVE_STATES, model=model, base_url=url)
        save = []
        for row in candidates:
            download = log.get(Download, row.key)
            if download is not None and download.state == RUNNING and (url is None or download.base_url == url):
                download.cancel()
                save.append(download)
        return Decision(len(save), save)

    async def dequeue(self, model: str, ctx: CommandContext) -> int:
        """Take every queued download of ``model`` out of the queue (a running one goes on). How many."""
        return await self._runner.run(lambda log: self._dequeuing(log, model), ctx)

    def _dequeuing(self, log: Aggregates, model: str) -> Decision[int]:
        save = []
        for row in self._queue.matching(ACTIVE_STATES, model=model):
            download = log.get(Download, row.key)
            if download is not None and download.state == QUEUED:
                download.dequeue()
                save.append(download)
        return Decision(len(save), save)

    async def purge(self, model: str, ctx: CommandContext) -> None:
        """A purged model (``DELETE /models/{name}?purge=true``): dequeue it and cancel its pulls, at once."""

        def decide(log: Aggregates) -> Decision[None]:
            dequeued = self._dequeuing(log, model)
            cancelled = self._cancelling(log, url=None, model=model)
            return Decision(None, [*dequeued.save, *cancelled.save])

        await self._runner.run(decide, ctx)

    # -- the download job ------------------------------------------------------------

    async def start(self, key: str) -> tuple[str, str] | None:
        """Record that the job begins pulling; (base URL, model), or None when it is no longer queued."""

        def decide(log: Aggregates) -> Decision[tuple[str, str] | None]:
            download = log.get(Download, key)
            if download is None or download.state != QUEUED:
                return Decision(None, [])
            download.start()
            return Decision((download.base_url, download.model), [download])

        return await self._background.run(decide, JOB)

    async def complete(self, key: str) -> None:
        await self._ended(key, lambda download: download.complete())

    async def fail(self, key: str, error: str) -> None:
        await self._ended(key, lambda download: download.fail(error))

    async def _ended(self, key: str, end: Callable[[Download], None]) -> None:
        """Record the end of a pull, unless the download is no longer running (cancelled meanwhile)."""

        def decide(log: Aggregates) -> Decision[None]:
            download = log.get(Download, key)
            if download is None or download.state != RUNNING:
                return Decision(None, [])
            end(download)
            return Decision(None, [download])

        await self._background.run(decide, JOB)
