"""The blob sweeper: a singleton job removing content no live file names any more, and abandoned uploads.

A delete (or a replaced content) removes the freed blobs at once — unless one
was touched within the removal grace (``infra.blobs.REMOVAL_GRACE``), which
guards against an upload of the same content whose file is not in the read
model yet. Content uploaded and freed within the grace, content of an upload
refused after it was written, and the leftovers of an upload whose process died
would stay forever. With ``CHAINLOOM_BLOB_SWEEPER`` on (the default) one process
— across the workers of a ``chainloom serve`` and across machines sharing one
store — holds the singleton lock ``blobs`` (``infra.singleton``) and, every
``CHAINLOOM_BLOB_SWEEP_INTERVAL`` seconds (ten minutes by default):

- drops the uploads not written to within the grace (``Blobs.clear_uploads``);
- lists the blobs not touched within the grace (``Blobs.stale``), a batch at a
  time; for each batch waits until the files read model has reached the log's
  head (an event stored before the listing is then seen; the wait fails the
  cycle when the read model lags or is faulted), asks it which hashes a live
  file still names (``queries.files.FileQueries.referenced``), and removes the
  others with the grace (``Blobs.remove``): one touched since the listing stays.

``infra.blobs`` says why this is safe against a concurrent upload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from chainloom.infra.blobs import REMOVAL_GRACE, BlobStore
from chainloom.infra.singleton import Lock

logger = logging.getLogger(__name__)

RunBlocking = Callable[..., Awaitable[Any]]
# Hashes per question to the read model (its IN lists are batched again below this).
BATCH = 500


class References(Protocol):
    """The files read model (``queries.files.FileQueries``)."""

    async def referenced(self, hashes: list[str]) -> set[str]: ...


@dataclass(frozen=True)
class Swept:
    """What one sweep did: the blobs removed (hashes), the abandoned uploads dropped."""

    removed: list[str]
    uploads: int


class BlobSweeper:
    def __init__(
        self,
        blobs: BlobStore,
        files: References,
        settled: Callable[[], Awaitable[None]],
        lock: Lock,
        run_blocking: RunBlocking,
        *,
        interval: float,
        grace: float = REMOVAL_GRACE,
        batch: int = BATCH,
    ) -> None:
        """``settled()`` returns once the files read model has reached the log's head as of the call (and
        raises when it does not in time)."""
        self._blobs = blobs
        self._files = files
        self._settled = settled
        self._lock = lock
        self._run_blocking = run_blocking
        self._interval = interval
        self._grace = grace
        self._batch = batch
        self._holding = False
        self._stopping = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.cycles = 0  # sweeps run while holding the lock

    @property
    def holding(self) -> bool:
        """Whether this process runs the sweeper now."""
        return self._holding

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="blob-sweeper")

    async def stop(self) -> None:
        # As the lease reaper: the loop finishes its step (a cancel could leave a lock attempt running in its
        # thread, taking the lock after the release below).
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._holding = False
        await self._run_blocking(self._lock.release)

    async def _run(self) -> None:
        failures = 0  # in a row: the first is logged with its traceback, the rest briefly
        while not self._stopping:
            try:
                held = await self._run_blocking(self._lock.acquire)
                if held != self._holding:
                    logger.info("blob sweeper: %s the blobs lock", "took" if held else "lost")
                self._holding = held
                if held and not self._stopping:
                    await self.sweep_once()
                failures = 0
            except Exception:  # noqa: BLE001 - the store is unreachable or the read model lags: next interval
                failures += 1
                if failures == 1:
                    logger.warning("blob sweeper: a sweep failed; trying again every %g s", self._interval, exc_info=True)
                else:
                    logger.debug("blob sweeper: a sweep failed again", exc_info=True)
            try:
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    async def sweep_once(self) -> Swept:
        """One sweep (whether or not this process holds the lock: the loop only runs it when it does)."""
        uploads = await self._blobs.clear_uploads(self._grace)
        removed: list[str] = []
        async for stale in self._blobs.stale(self._grace, self._batch):
            if self._stopping:
                break
            await self._settled()  # after the listing: what the read model shows includes every older event
            referenced = await self._files.referenced(stale)
            for digest in stale:
                if digest not in referenced and await self._blobs.remove(digest, self._grace):
                    removed.append(digest)
        if removed or uploads:
            logger.info("blob sweeper: removed %d unreferenced blob(s), %d abandoned upload(s)", len(removed), uploads)
        self.cycles += 1
        return Swept(removed, uploads)
