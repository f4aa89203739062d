"""The task-chain engine's pure parts: value types, templates, compose, transitions, parsing, captured state.

Nothing here does I/O; ``commands.tasks`` runs chains with them (notes §3–§7).
"""

from chainloom.domain.taskengine.errors import ChainFailed, TaskError

__all__ = ["ChainFailed", "TaskError"]
