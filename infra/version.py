"""The version chainloom reports."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("chainloom")
except PackageNotFoundError:  # running from a checkout without installing
    VERSION = "0.0.0+checkout"
