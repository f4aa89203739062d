"""Following the log in a process: the one loop behind every follower, and read-your-writes waits.

A follower runs a blocking ``step`` (in a worker thread) that processes the
next batch of whatever it follows and reports ``(position, more)``. It steps
again at once while ``more``; otherwise after a ``poke`` (something was
appended) or every ``idle_poll`` seconds (writes by other processes). A failing
step is retried with a growing back-off. ``wait_for(position)`` returns once a
step has reported that position: that is how a command waits for its write.

Used by the embedded projection runner (step = project a batch of the log),
the Kafka relay (step = publish a batch) and, in the distributed mode, the
API's view of projector workers in other processes (step = read their tracked
position).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

RunBlocking = Callable[..., Awaitable[Any]]
# A step processes the next batch and reports: (position reached, whether more may follow, *anything else).
R = TypeVar("R", bound=tuple[Any, ...])


class Behind(Exception):
    """A follower did not reach a position within the allowed time."""


class Follower(Generic[R]):
    def __init__(
        self,
        step: Callable[[], R],
        run_blocking: RunBlocking,
        *,
        name: str,
        idle_poll: float | None,
        behind: type[Behind] = Behind,
        what: str = "followers",
        on_step: Callable[[R], None] | None = None,
    ) -> None:
        """``idle_poll=None``: step only when poked or while someone waits (nothing to notice otherwise).
        ``on_step(result)`` is called on the event loop with each step's result, once waits are released."""
        self._step = step
        self._run_blocking = run_blocking
        self._name = name
        self._idle_poll = idle_poll
        self._behind = behind
        self._what = what
        self._on_step = on_step
        self._position = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stopped = asyncio.Event()
        # The failure of the latest step, as (wall-clock time, "Type: message"); None once a step succeeds.
        self.last_error: tuple[float, str] | None = None

    @property
    def position(self) -> int:
        return self._position

    @property
    def idle_poll(self) -> float | None:
        return self._idle_poll

    @idle_poll.setter
    def idle_poll(self, seconds: float | None) -> None:
        """Change how often to look when not poked (from the next idle sleep on; the event loop's thread only)."""
        self._idle_poll = seconds

    def start(self, position: int = 0) -> None:
        self._position = max(self._position, position)
        self._task = asyncio.create_task(self._follow(), name=self._name)

    async def stop(self) -> None:
        """Stop following; returns once no step is in flight (so the stores can be closed)."""
        self._stopping = True
        self._stopped.set()
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
        for _, waiter in self._waiters:
            waiter.cancel()
        self._waiters.clear()

    def poke(self) -> None:
        """Something was appended: step now rather than at the next poll."""
        self._wakeup.set()

    async def wait_for(self, position: int | None, timeout: float) -> None:
        """Return once a step has reported ``position`` (or beyond)."""
        if position is None or position <= self._position:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((position, waiter))
        self.poke()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            raise self._behind(
                f"{self._what} did not reach position {position} within {timeout:g}s (at {self._position})"
            ) from None
        finally:
            if not waiter.done():
                waiter.cancel()

    def _pending(self) -> bool:
        return any(not waiter.done() for _, waiter in self._waiters)

    async def _follow(self) -> None:
        backoff = 0.05
        while not self._stopping:
            self._wakeup.clear()
            try:
                result = await self._run_blocking(self._step)
            except Exception as error:
                # Another process may have tracked first (the transaction was dropped
                # whole), or a store or broker is briefly unavailable: retry, slowing down.
                self.last_error = (time.time(), f"{type(error).__name__}: {error}")
                logger.exception("%s: step failed; retrying in %.2fs", self._name, backoff)
                await self._sleep(backoff, self._stopped)  # pokes do not cut a back-off short
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.05
            self.last_error = None
            position, more = result[0], result[1]
            self._advance(position)
            if self._on_step is not None:
                try:
                    self._on_step(result)
                except Exception:
                    logger.exception("%s: step listener failed", self._name)
            if more or self._stopping:
                continue
            timeout = self._idle_poll
            if timeout is None and self._pending():
                timeout = 0.01  # someone waits for a position only another process can report
            await self._sleep(timeout, self._wakeup)

    @staticmethod
    async def _sleep(timeout: float | None, until: asyncio.Event) -> None:
        """Sleep until the event is set, at most ``timeout`` seconds."""
        try:
            await asyncio.wait_for(until.wait(), timeout)
        except TimeoutError:
            pass

    def _advance(self, position: int) -> None:
        self._position = max(self._position, position)
        pending = []
        for target, waiter in self._waiters:
            if waiter.done():
                continue
            if target <= self._position:
                waiter.set_result(None)
            else:
                pending.append((target, waiter))
        self._waiters = pending
