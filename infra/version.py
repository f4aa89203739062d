"""The version chainloom reports, and this process's node id."""

import uuid
from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("chainloom")
except PackageNotFoundError:  # running from a checkout without installing
    VERSION = "0.0.0+checkout"

# Which process answered (``/version`` ``nodeInstanceID``): stable for the process's life, new at each start.
NODE_INSTANCE_ID = str(uuid.uuid4())
