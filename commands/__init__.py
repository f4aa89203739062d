"""Application services: validate, load aggregates, decide, append, wait for the read models."""
