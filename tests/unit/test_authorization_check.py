"""The check of platform.md §2.5 (``domain.authorization``) and the table of what each route needs (``web.authz``).

The check is pure but for the stored entries it may ask for: a small dict stands in for the read
model, and records what was asked, so "decided by the token, no look-up" is seen as well as the verdict.
"""

from __future__ import annotations

import asyncio
import logging
import itertools
from pathlib import Path

import pytest

from chainloom.domain.authorization import ADMIN_PANEL, authorized, resource_candidates, service_candidates
from chainloom.domain.identity import SERVER, Grant, Permission
from chainloom.infra.settings import Settings
from chainloom.web.app import create_app
from chainloom.web.authz import ADMIN_ONLY, PUBLIC, SIGNED_IN, Requirement, requirement_of

LEVELS = list(Permission)


def grant(resource: str, level: Permission, resource_type: str = "system") -> Grant:
    return Grant(f"e-{resource}", "u1", resource, resource_type, level, "2025-01-01T00:00:00Z", "2025-01-01T00:00:00Z")


class Stored:
    """The caller's stored entries by resource; ``asked`` the resources looked up."""

    def __init__(self, *grants: Grant) -> None:
        self.grants = grants
        self.asked: list[str] = []

    async def __call__(self, resource: str) -> list[Grant]:
        self.asked.append(resource)
        return [g for g in self.grants if g.resource == resource]


def check(token: list[Grant], candidates, level: Permission, stored: Stored | None = None) -> bool:
    return asyncio.run(authorized(token, candidates, level, stored or Stored()))


# -- the service check: the service, its group, server ---------------------------------------------


@pytest.mark.parametrize("resource", ["backendservice", ADMIN_PANEL, SERVER])
@pytest.mark.parametrize("held, needed", list(itertools.product(LEVELS, LEVELS)))
def test_a_level_on_the_service_its_group_or_server_passes_what_it_reaches(resource, held, needed):
    candidates = service_candidates("backendservice")
    assert check([grant(resource, held)], candidates, needed) is (held >= needed)  # in the token
    assert check([], candidates, needed, Stored(grant(resource, held))) is (held >= needed)  # stored


def test_an_entry_for_another_service_or_group_grants_nothing():
    candidates = service_candidates("backendservice")
    for resource in ("eventservice", "activityservice", "files", "backendservice2"):
        assert not check([grant(resource, Permission.MANAGE)], candidates, Permission.VIEW)


def test_activity_has_a_group_of_its_own():
    assert service_candidates("activityservice") == ("activityservice", SERVER)
    assert not check([grant(ADMIN_PANEL, Permission.MANAGE)], service_candidates("activityservice"), Permission.VIEW)
    assert check([grant(SERVER, Permission.MANAGE)], service_candidates("activityservice"), Permission.VIEW)


def test_the_token_decides_a_resource_it_has_entries_for_without_a_look_up():
    stored = Stored(grant(SERVER, Permission.MANAGE))  # granted since the token was issued
    token = [grant(SERVER, Permission.NONE), grant("backendservice", Permission.VIEW), grant(ADMIN_PANEL, Permission.NONE)]
    assert not check(token, service_candidates("backendservice"), Permission.MANAGE, stored)
    assert stored.asked == []  # every candidate was spoken of by the token: final


def test_a_resource_the_token_says_nothing_about_is_looked_up():
    stored = Stored(grant("backendservice", Permission.MANAGE))
    assert check([grant(SERVER, Permission.NONE)], service_candidates("backendservice"), Permission.MANAGE, stored)
    assert stored.asked == ["backendservice"]
    stored = Stored()
    assert not check([grant(SERVER, Permission.NONE)], service_candidates("backendservice"), Permission.VIEW, stored)
    assert stored.asked == ["backendservice", ADMIN_PANEL]  # server was the token's to decide


def test_a_token_that_grants_costs_no_look_up_whatever_the_order():
    stored = Stored()
    assert check([grant(SERVER, Permission.MANAGE)], service_candidates("chainservice"), Permission.MANAGE, stored)
    assert stored.asked == []


def test_highest_entry_for_a_resource_counts():
    token = [grant("backendservice", Permission.NONE), grant("backendservice", Permission.EDIT)]
    assert check(token, service_candidates("backendservice"), Permission.EDIT)


# -- the resource check: the type, then the id -------------------------------------------------------


@pytest.mark.parametrize("held, needed", list(itertools.product(LEVELS, LEVELS)))
def test_the_resource_check_tries_the_type_then_the_id(held, needed):
    candidates = resource_candidates("files", "f-1")
    assert check([grant("files", held, "system")], candidates, needed) is (held >= needed)
    assert check([], candidates, needed, Stored(grant("f-1", held, "files"))) is (held >= needed)
    assert not check([grant("f-2", Permission.MANAGE, "files")], candidates, Permission.VIEW)
    assert not check([grant(SERVER, Permission.MANAGE)], candidates, Permission.VIEW)  # server is for services


# -- what each route needs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def routes(tmp_path_factory) -> set[tuple[str, str]]:
    app = create_app(Settings(data_dir=Path(tmp_path_factory.mktemp("authz")) / "data", database_url="", api_token=""))
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD" and r.resource is not None}


def test_every_route_of_the_app_has_a_requirement(routes):
    """A route added without one fails here (and is served to the admin alone, ADMIN_ONLY, until it has one)."""
    unmapped = sorted((method, path) for method, path in routes if requirement_of(method, path) is None)
    assert not unmapped, f"add these routes to web.authz's table (platform.md §2.7): {unmapped}"


@pytest.mark.parametrize(
    "method, path, needed",
    [
        ("GET", "/health", PUBLIC),
        ("GET", "/openapi.json", PUBLIC),
        ("POST", "/login", PUBLIC),
        ("POST", "/ui/logout", PUBLIC),
        ("GET", "/permissions", PUBLIC),
        ("GET", "/system/services", PUBLIC),
        ("GET", "/ui/me", SIGNED_IN),
        ("GET", "/groups", Requirement(service="backendservice", level=Permission.VIEW)),
        ("POST", "/groups", Requirement(service="backendservice", level=Permission.MANAGE)),
        ("DELETE", "/model-affinity/{groupID}/models/{modelID}", Requirement(service="backendservice", level=Permission.MANAGE)),
        ("GET", "/queue/inProgress", Requirement(service="backendservice", level=Permission.VIEW)),
        ("POST", "/ingest", Requirement(service="eventservice", level=Permission.MANAGE)),
        ("GET", "/events/stream/{eventType}", Requirement(service="eventservice", level=Permission.VIEW)),
        ("PUT", "/event-triggers/{name}", Requirement(service="functionservice", level=Permission.MANAGE)),
        ("POST", "/executor/sync", Requirement(service="functionservice", level=Permission.MANAGE)),
        ("GET", "/hooks/schemas", Requirement(service="chainservice", level=Permission.VIEW)),
        ("POST", "/openai/{chainID}/v1/chat/completions", Requirement(service="chainservice", level=Permission.VIEW)),
        ("POST", "/v1/chat/completions", Requirement(service="chatservice", level=Permission.VIEW)),
        ("GET", "/users", Requirement(service="userservice", level=Permission.MANAGE)),
        ("GET", "/users/{id}", Requirement(service="userservice", level=Permission.MANAGE)),
        ("GET", "/access-control", Requirement(service="accessservice", level=Permission.VIEW)),
        ("PUT", "/access-control/{id}", Requirement(service="accessservice", level=Permission.MANAGE)),
        ("POST", "/index", Requirement(service="indexservice", level=Permission.EDIT)),
        ("PUT", "/files/{id}/name", SIGNED_IN),
        ("GET", "/files/{id}/download", Requirement(service="fileservice", level=Permission.VIEW)),
        ("PATCH", "/jobs/{id}/done", Requirement(service="dispatchservice", level=Permission.MANAGE)),
        ("GET", "/activity/requests/{id}", Requirement(service="activityservice", level=Permission.VIEW)),
        ("GET", "/nowhere/new", None),
        ("GET", "/ui/settings", None),
    ],
)
def test_requirements_follow_the_notes(method, path, needed):
    assert requirement_of(method, path) == needed


def test_an_unmapped_route_is_the_admins_alone():
    assert ADMIN_ONLY.candidates == (SERVER,) and ADMIN_ONLY.level == Permission.MANAGE


def test_security_off_is_said_loudly_and_on_it_is_not(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="chainloom.web.authz")
    create_app(Settings(data_dir=tmp_path / "data", database_url="", api_token=""))
    assert [r.levelno for r in caplog.records if "security is off" in r.getMessage()] == [logging.WARNING]
    caplog.clear()
    create_app(Settings(data_dir=tmp_path / "data", database_url="", security_enabled=True))
    assert not [r for r in caplog.records if "security is off" in r.getMessage()]
