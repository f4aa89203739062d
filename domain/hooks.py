"""A remote hook: an HTTP service publishing an OpenAPI 3 document whose operations task chains can call.

The aggregate (``hook``, key = its id: the client's, or a new UUID) holds the
hook's configuration (``HookSpec``); every event but ``Deleted`` carries all of
it. Its name is unique among hooks (``domain.uniqueness``). A deleted hook's id
may be used again: the hook is created again under it (``Recreated``).

How a hook is discovered and called (the OpenAPI protocol) is ``domain.hook_openapi``;
the HTTP of it is ``infra.hooks``; ``commands.hooks.HookRunner`` puts them together.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate
from chainloom.domain.errors import Conflict, NotFound, Unprocessable, UpstreamRefused
from chainloom.domain.uniqueness import HOOK_NAME

_INVALID = "invalid remote hook data serverops: unprocessable entity"
# The longest deadline a hook may have (about 24 days): what every read store's integer column holds.
MAX_TIMEOUT_MS = 2**31 - 1
# An HTTP header name (RFC 9110 token); a value must not break the header line.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_URL = re.compile(r"^https?://[^/?#\s]+", re.IGNORECASE)


def _parses(url: str) -> bool:
    """Whether the URL has a host and a valid port (``http://[`` or ``http://h:99999`` do not)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return False
    return bool(parts.hostname)


class HookFailed(UpstreamRefused):
    """A hook could not be discovered or called because its service failed (502): unreachable, timed
    out, a non-2xx answer, a schema or answer that does not parse. ``hook``: its name; ``cause``: what
    went wrong, without the ``execution failed for hook`` prefix ``message`` carries for calls."""

    def __init__(self, message: str, *, hook: str = "", cause: str = "") -> None:
        super().__init__(message)
        self.hook = hook
        self.cause = cause or message


class HookNotUsable(Unprocessable, HookFailed):
    """A hook cannot be used as asked (422): no hook of that name, no such tool in its schema, or an
    address the SSRF guard refuses. Still a ``HookFailed``."""


def execution_failed(hook: str, cause: str, *, usable: bool = True) -> HookFailed:
    """``execution failed for hook '<hook>': <cause>`` (a ``HookNotUsable`` when ``usable`` is False)."""
    cls = HookFailed if usable else HookNotUsable
    return cls(f"execution failed for hook '{hook}': {cause}", hook=hook, cause=cause)


@dataclass(frozen=True)
class InjectedProperty:
    """An argument the service adds to every call: ``location`` ``path``, ``query``, else the body."""

    name: str = ""
    value: str | int | float | bool | None = None
    location: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "in": self.location}

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> InjectedProperty:
        if not value:
            return cls()
        return cls(value.get("name") or "", value.get("value"), value.get("in") or "")

    @property
    def text(self) -> str:
        """The value as sent: text as it is, numbers and booleans as JSON writes them, null as ''."""
        return scalar_text(self.value)


def scalar_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class HookSpec:
    """What a client says about a hook."""

    name: str
    endpoint_url: str
    timeout_ms: int
    headers: Mapping[str, str] = field(default_factory=dict)
    properties: InjectedProperty = InjectedProperty()

    def validate(self) -> None:
        if not self.name:
            raise Unprocessable(f"{_INVALID}: name is required", param="name")
        if not self.endpoint_url:
            raise Unprocessable(f"{_INVALID}: endpoint URL is required", param="endpointUrl")
        if not _URL.match(self.endpoint_url) or not _parses(self.endpoint_url):
            raise Unprocessable(f"{_INVALID}: endpoint URL must be an absolute http or https URL", param="endpointUrl")
        if self.timeout_ms <= 0:
            raise Unprocessable(f"{_INVALID}: timeout must be positive", param="timeoutMs")
        if self.timeout_ms > MAX_TIMEOUT_MS:
            raise Unprocessable(f"{_INVALID}: timeout must be at most {MAX_TIMEOUT_MS} ms", param="timeoutMs")
        for name, value in self.headers.items():
            if not name:
                raise Unprocessable(f"{_INVALID}: header name cannot be empty", param="headers")
            if not value:
                raise Unprocessable(f"{_INVALID}: header value for {name} cannot be empty", param="headers")
            if not _TOKEN.match(name):
                raise Unprocessable(f"{_INVALID}: header name {name!r} is not a valid HTTP header name", param="headers")
            if any(c in value for c in "\r\n\0"):
                raise Unprocessable(f"{_INVALID}: header value for {name} holds a line break", param="headers")
        injected: Any = self.properties.value
        if injected is not None and not isinstance(injected, (str, int, float, bool)):
            raise Unprocessable(f"{_INVALID}: property value must be a scalar", param="properties.value")
        if isinstance(injected, float) and not math.isfinite(injected):
            raise Unprocessable(f"{_INVALID}: property value must be a finite number", param="properties.value")

    def to_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "endpoint_url": self.endpoint_url,
            "timeout_ms": self.timeout_ms,
            "headers": dict(self.headers),
            "properties": self.properties.to_json(),
        }


class RemoteHook(Aggregate):
    aggregate_type = "hook"

    class Created(Aggregate.Created):
        name: str
        endpoint_url: str
        timeout_ms: int
        headers: dict[str, str]
        properties: dict[str, Any]

    class Recreated(Aggregate.Event):
        """Created again under the id of a deleted hook."""

        name: str
        endpoint_url: str
        timeout_ms: int
        headers: dict[str, str]
        properties: dict[str, Any]

    class Updated(Aggregate.Event):
        name: str
        endpoint_url: str
        timeout_ms: int
        headers: dict[str, str]
        properties: dict[str, Any]

    class Deleted(Aggregate.Event):
        pass

    @classmethod
    def create(cls, hook_id: str, spec: HookSpec) -> RemoteHook:
        spec.validate()
        return cls._create(cls.Created, id=cls.stream_id(hook_id), **spec.to_state())

    @event(Created)
    def __init__(
        self, name: str, endpoint_url: str, timeout_ms: int, headers: dict[str, str], properties: dict[str, Any]
    ) -> None:
        self._set(name, endpoint_url, timeout_ms, headers, properties)
        self.deleted = False

    @property
    def spec(self) -> HookSpec:
        return HookSpec(
            self.name, self.endpoint_url, self.timeout_ms, dict(self.headers), InjectedProperty.from_json(self.properties)
        )

    def unique_values(self) -> dict[str, str]:
        return {} if self.deleted else {HOOK_NAME: self.name}

    def ensure_exists(self) -> None:
        if self.deleted:
            raise NotFound("libdb: not found")

    def recreate(self, spec: HookSpec) -> None:
        """Create again a hook that was deleted, under its old id (a live one: 409)."""
        if not self.deleted:
            raise Conflict(f"libdb: unique constraint violation: hook '{self.key}' already exists")
        spec.validate()
        self._recreate(**spec.to_state())

    def update(self, spec: HookSpec) -> None:
        self.ensure_exists()
        spec.validate()
        self._update(**spec.to_state())

    def delete(self) -> None:
        self.ensure_exists()
        self._delete()

    @event(Recreated)
    def _recreate(
        self, name: str, endpoint_url: str, timeout_ms: int, headers: dict[str, str], properties: dict[str, Any]
    ) -> None:
        self._set(name, endpoint_url, timeout_ms, headers, properties)
        self.deleted = False

    @event(Updated)
    def _update(
        self, name: str, endpoint_url: str, timeout_ms: int, headers: dict[str, str], properties: dict[str, Any]
    ) -> None:
        self._set(name, endpoint_url, timeout_ms, headers, properties)

    @event(Deleted)
    def _delete(self) -> None:
        self.deleted = True

    def _set(
        self, name: str, endpoint_url: str, timeout_ms: int, headers: dict[str, str], properties: dict[str, Any]
    ) -> None:
        self.name = name
        self.endpoint_url = endpoint_url
        self.timeout_ms = timeout_ms
        self.headers = headers
        self.properties = properties
