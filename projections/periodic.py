"""A periodic singleton job: one process of all holds its lock and runs a step every interval.

The lease reaper and the blob sweeper are such jobs: each step is small and
idempotent, so a step cut short by a crash or a lost lock is simply run again by
the next holder. A failed step is logged (with its traceback the first time in a
row) and tried again at the next interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from chainloom.infra.singleton import Lock

logger = logging.getLogger(__name__)

RunBlocking = Callable[..., Awaitable[Any]]


class PeriodicJob:
    """Subclasses name the job (``name``, ``lock_name``) and implement ``step``."""

    name = "periodic job"
    lock_name = ""

    def __init__(self, lock: Lock, run_blocking: RunBlocking, *, interval: float) -> None:
        self._lock = lock
        self._run_blocking = run_blocking
        self._interval = interval
        self._holding = False
        self._stopping = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.cycles = 0  # steps run while holding the lock (tests wait on it)

    @property
    def holding(self) -> bool:
        """Whether this process runs the job now."""
        return self._holding

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def step(self) -> Any:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name.replace(" ", "-"))

    async def stop(self) -> None:
        # The loop is let finish its step rather than cancelled: a cancel would leave a lock attempt running
        # in its thread, which could take the lock after the release below and keep it.
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
                    logger.info("%s: %s the %s lock", self.name, "took" if held else "lost", self.lock_name)
                self._holding = held
                if held and not self._stopping:
                    await self.step()
                    self.cycles += 1
                failures = 0
            except Exception:  # noqa: BLE001 - the store is unreachable, or the read model lags: next interval
                failures += 1
                if failures == 1:
                    logger.warning("%s: a step failed; trying again every %g s", self.name, self._interval, exc_info=True)
                else:
                    logger.debug("%s: a step failed again", self.name, exc_info=True)
            try:
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
