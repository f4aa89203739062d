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

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from chainloom.infra.blobs import REMOVAL_GRACE, BlobStore
from chainloom.infra.singleton import Lock
from chainloom.projections.periodic import PeriodicJob, RunBlocking

logger = logging.getLogger(__name__)
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


class BlobSweeper(PeriodicJob):
    name = "blob sweeper"
    lock_name = "blobs"

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
        super().__init__(lock, run_blocking, interval=interval)
        self._blobs = blobs
        self._files = files
        self._settled = settled
        self._grace = grace
        self._batch = batch

    async def step(self) -> Swept:
        return await self.sweep_once()

    async def sweep_once(self) -> Swept:
        """One sweep (whether or not this process holds the lock: the loop only runs it when it does)."""
        uploads = await self._blobs.clear_uploads(self._grace)
        removed: list[str] = []
        async for stale in self._blobs.stale(self._grace, self._batch):
            if self.stopping:
                break
            await self._settled()  # after the listing: what the read model shows includes every older event
            referenced = await self._files.referenced(stale)
            for digest in stale:
                if digest not in referenced and await self._blobs.remove(digest, self._grace):
                    removed.append(digest)
        if removed or uploads:
            logger.info("blob sweeper: removed %d unreferenced blob(s), %d abandoned upload(s)", len(removed), uploads)
        return Swept(removed, uploads)
