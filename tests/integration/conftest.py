"""Fixtures of the integration tests that start ``chainloom serve`` as users run it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chainloom.infra.settings import Settings
from tests.integration.serve_process import Service, serve_env, start_service


@pytest.fixture
def fresh_schema() -> bool:
    """PostgreSQL as a fresh deployment finds it, no tables at all: these tests start processes that set them up,
    often several at once."""
    return True


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start ``chainloom serve`` on the test's store; every service (and its process group) is ended afterwards."""
    started: list[Service] = []

    def start(settings: Settings, workers: int = 2, **env: str) -> Service:
        service = start_service(serve_env(settings, workers, **env), tmp_path / f"serve-{len(started)}.log")
        started.append(service)
        return service

    yield start
    for service in started:
        service.shut_down()
