"""Read-your-writes waits on the projectors a command needs, and what a faulted projector does to them.

A command waits until the projectors whose read models it answers from have
reached its write. Each projector has its own position, and one may be
*faulted* (stopped at a poison event until an operator retries or skips it):
a command needing it then fails at once with ``ProjectionFaulted`` instead of
waiting out its timeout, and commands that need only other projectors are not
affected. The embedded runner and the distributed mode's tracked positions
both keep their view of the projectors here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from chainloom.infra.follower import Behind
from chainloom.infra.readstore import Fault


class ReadModels(Protocol):
    """The read models as the web layer sees them: waited on after writes, asked about their faults.

    Kept by this process (``ProjectionRunner``) or by projector workers elsewhere, whose tracked
    positions this process watches (``TrackedProjections``).
    """

    @property
    def position(self) -> int:
        """The position every projector that is not faulted has reached."""

    @property
    def faults(self) -> dict[str, Fault]:
        """The faults as last read."""

    @property
    def holding(self) -> bool:
        """Whether this process is the one projecting (the singleton job's holder)."""

    async def read_faults(self) -> dict[str, Fault]:
        """The faults as the store has them now."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def poke(self) -> None:
        """Something was appended: look now rather than at the next poll."""

    async def wait_for(self, position: int | None, timeout: float, needs: Sequence[str] | None = None) -> None:
        """Return once the ``needs`` projectors (all when None) have reached ``position``."""


class ReadModelsBehind(Behind):
    """The read models did not reach a command's write within the allowed time."""


class ProjectionFaulted(Exception):
    """A read model a command needs is stopped at a poison event: the command's write is kept, not shown yet."""

    def __init__(self, faults: Sequence[Fault]) -> None:
        self.faults = list(faults)
        described = "; ".join(
            f"read model {f.projection!r} is stopped at position {f.position}"
            f" ({f.event_type} {f.event_id}): {f.error}"
            for f in self.faults
        )
        super().__init__(
            f"{described}. The write was stored; an operator must run"
            f" `chainloom projections retry|skip {' '.join(f.projection for f in self.faults)}`"
        )


class ProjectorStates:
    """Each projector's position and fault as last read, and the commands waiting on them (event loop only)."""

    def __init__(self, names: Iterable[str], wake: Callable[[], None]) -> None:
        """``wake()`` asks for a fresh reading (the follower steps, or the tracked positions are read)."""
        self.names = list(names)
        self.positions: dict[str, int] = {name: 0 for name in self.names}
        self.faults: dict[str, Fault] = {}
        self._wake = wake
        self._readings = 0
        self._changed: asyncio.Event | None = None
        self._waiting = 0

    @property
    def waiting(self) -> bool:
        return self._waiting > 0

    def update(self, positions: Mapping[str, int], faults: Mapping[str, Fault]) -> None:
        """A fresh reading (positions never go back here: a rebuild only moves them on)."""
        for name, position in positions.items():
            if name in self.positions:
                self.positions[name] = max(self.positions[name], position)
        self.faults = {name: fault for name, fault in faults.items() if name in self.positions}
        self._readings += 1
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_for(self, position: int | None, timeout: float, needs: Sequence[str] | None = None) -> None:
        """Return once every needed projector has reached ``position``; raise ``ProjectionFaulted`` at once
        (after one fresh reading) when one of them is stopped before it, ``ReadModelsBehind`` after ``timeout``."""
        if position is None:
            return
        names = list(needs) if needs is not None else self.names
        deadline = time.monotonic() + timeout
        fresh_since = None  # the reading count when a fault was first seen
        self._waiting += 1
        try:
            while True:
                if all(self.positions[name] >= position for name in names):
                    return
                faulted = [self.faults[n] for n in names if n in self.faults and self.positions[n] < position]
                if faulted:
                    if fresh_since is not None and self._readings > fresh_since:
                        raise ProjectionFaulted(faulted)
                    if fresh_since is None:
                        fresh_since = self._readings  # an operator may have just cleared it: read once more
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    behind = {name: self.positions[name] for name in names}
                    raise ReadModelsBehind(
                        f"read models did not reach position {position} within {timeout:g}s (at {behind})"
                    )
                if self._changed is None:
                    self._changed = asyncio.Event()
                changed = self._changed
                self._wake()
                try:
                    await asyncio.wait_for(changed.wait(), remaining)
                except TimeoutError:
                    pass
        finally:
            self._waiting -= 1
