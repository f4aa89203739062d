"""Adapters: the event log, read store, settings, CLI and other I/O."""
