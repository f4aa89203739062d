"""Projectors (event → read-model rows) and the runner that keeps them current."""
