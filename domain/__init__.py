"""The domain model: aggregates, their events and invariants. Pure: no I/O."""
