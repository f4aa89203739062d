"""The JavaScript sandbox of functions (spec §4.5): scripts run in QuickJS, in worker processes the
pool kills when a script overruns its time.

    pool = SandboxPool(size=2)
    outcome = await pool.run(Run(function.name, function.script, event_object(envelope)), host)

``contract`` is what a script sees and what a run takes and gives; ``pool`` runs the worker
processes; ``worker`` is their program.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chainloom.infra.sandbox.contract import Host, Limits, Outcome, Run, event_object

if TYPE_CHECKING:
    from chainloom.infra.sandbox.pool import SandboxPool

__all__ = ["Host", "Limits", "Outcome", "Run", "SandboxPool", "event_object"]


def __getattr__(name: str) -> Any:
    # Every worker imports this package first: the pool (and asyncio, 30 ms of a worker's start) is
    # imported only when asked for.
    if name == "SandboxPool":
        from chainloom.infra.sandbox.pool import SandboxPool

        return SandboxPool
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
