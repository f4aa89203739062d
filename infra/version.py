"""The version chainloom reports, and this process's node id."""

import os
import uuid
from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("chainloom")
except PackageNotFoundError:  # running from a checkout without installing
    VERSION = "0.0.0+checkout"

# Which process answered (``/version`` ``nodeInstanceID``): stable for the process's life, new at each
# start — and in each forked worker process.
_node_instance_id = str(uuid.uuid4())


def node_instance_id() -> str:
    return _node_instance_id


def _new_node_instance_id() -> None:
    global _node_instance_id
    _node_instance_id = str(uuid.uuid4())


os.register_at_fork(after_in_child=_new_node_instance_id)
