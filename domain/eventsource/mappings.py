"""Ingest mappings: how a webhook payload (and its headers) becomes an external event.

A mapping is an aggregate per ``path``. Its field paths are JSONPath
expressions relative to the payload root, written without the leading ``$.``
(``data.user_id``, ``items[0].id``, ``headers["X-Trace-ID"]``). ``headers.…``
looks into the request's headers (names case-insensitive) unless the payload
itself has a top-level ``headers`` key, which then wins (what the reference
runtime did). A field that does not resolve, or resolves to ``null`` or to
an empty match list, is *not found*; a multi-match gives its first value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

from eventsourcing.domain import event
from jsonpath_ng.ext import parse as parse_jsonpath

from chainloom.domain.base import Aggregate
from chainloom.domain.errors import Conflict, NotFound, Unprocessable
from chainloom.domain.eventsource.events import INTERNAL_EVENT_SOURCE, ExternalEvent
from chainloom.domain.storable import check_storable

SIGNATURE_SCHEMES = ("", "hmac-sha256", "standard-webhooks")
DEFAULT_SIGNATURE_HEADER = "X-Hub-Signature-256"
# The path is the aggregate's id, which the store indexes: keep it bounded.
MAX_PATH_BYTES = 1024

_PREFIX = "invalid mapping configuration"


@dataclass(frozen=True)
class MappingConfig:
    path: str
    event_type: str
    event_source: str
    aggregate_type: str
    version: int
    aggregate_id_field: str = ""
    aggregate_type_field: str = ""
    event_type_field: str = ""
    event_source_field: str = ""
    event_id_field: str = ""
    version_field: str = ""
    metadata_mapping: dict[str, str] = field(default_factory=dict)
    signature_scheme: str = ""
    signature_header: str = ""
    # The webhook secret as the service sealed it (ciphertext); never the secret in clear.
    sealed_secret: str = ""

    def validate(self) -> None:
        """First failure wins; the first five messages are the reference runtime's."""
        if not self.path:
            raise Unprocessable(f"{_PREFIX}: path is required", param="path")
        if not self.event_type:
            raise Unprocessable(f"{_PREFIX}: event_type is required", param="eventType")
        if not self.event_source:
            raise Unprocessable(f"{_PREFIX}: event_source is required", param="eventSource")
        if not self.aggregate_type:
            raise Unprocessable(f"{_PREFIX}: aggregate_type is required", param="aggregateType")
        if self.version <= 0:
            raise Unprocessable(f"{_PREFIX}: version must be > 0, got {self.version}", param="version")
        check_storable(self.path, "path")
        if len(self.path.encode()) > MAX_PATH_BYTES:
            raise Unprocessable(f"{_PREFIX}: path is longer than {MAX_PATH_BYTES} bytes", param="path")
        if self.event_source == INTERNAL_EVENT_SOURCE:
            raise Unprocessable(
                f"{_PREFIX}: event_source '{INTERNAL_EVENT_SOURCE}' is reserved for chainloom's own events",
                param="eventSource",
            )
        for name, value in self._field_paths():
            if value and _compile(value) is None:
                raise Unprocessable(f"{_PREFIX}: {name} '{value}' is not a valid field path", param=name)
        if self.signature_scheme not in SIGNATURE_SCHEMES:
            schemes = ", ".join(repr(s) for s in SIGNATURE_SCHEMES)
            raise Unprocessable(f"{_PREFIX}: signatureScheme must be one of {schemes}", param="signatureScheme")
        if self.signature_scheme and not self.sealed_secret:
            raise Unprocessable(
                f"{_PREFIX}: signatureSecret is required when signatureScheme is set", param="signatureSecret"
            )

    def _field_paths(self) -> list[tuple[str, str]]:
        paths = [
            ("aggregateIDField", self.aggregate_id_field),
            ("aggregateTypeField", self.aggregate_type_field),
            ("eventTypeField", self.event_type_field),
            ("eventSourceField", self.event_source_field),
            ("eventIDField", self.event_id_field),
            ("versionField", self.version_field),
        ]
        return paths + [(f"metadataMapping.{key}", value) for key, value in self.metadata_mapping.items()]

    @property
    def header_name(self) -> str:
        return self.signature_header or DEFAULT_SIGNATURE_HEADER

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> MappingConfig:
        return cls(**state)


class EventMapping(Aggregate):
    aggregate_type = "mapping"

    # Every event but Deleted carries the whole configuration (MappingConfig.to_state()).
    class Created(Aggregate.Created):
        config: dict[str, Any]

    class Recreated(Aggregate.Event):
        config: dict[str, Any]

    class Updated(Aggregate.Event):
        config: dict[str, Any]

    class Deleted(Aggregate.Event):
        pass

    @classmethod
    def create(cls, config: MappingConfig) -> EventMapping:
        config.validate()
        return cls._create(cls.Created, id=cls.stream_id(config.path), config=config.to_state())

    @event(Created)
    def __init__(self, config: dict[str, Any]) -> None:
        self.state = config
        self.deleted = False

    @property
    def config(self) -> MappingConfig:
        return MappingConfig.from_state(self.state)

    def ensure_exists(self) -> None:
        if self.deleted:
            raise NotFound("not found: mapping not found")

    def recreate(self, config: MappingConfig) -> None:
        """Create again a mapping that was deleted (its path is its id)."""
        if not self.deleted:
            raise Conflict(f"libdb: unique constraint violation: mapping for path '{config.path}' already exists")
        config.validate()
        self._recreate(config=config.to_state())

    def update(self, config: MappingConfig) -> None:
        self.ensure_exists()
        config.validate()
        self._update(config=config.to_state())

    def delete(self) -> None:
        self.ensure_exists()
        self._delete()

    @event(Recreated)
    def _recreate(self, config: dict[str, Any]) -> None:
        self.state = config
        self.deleted = False

    @event(Updated)
    def _update(self, config: dict[str, Any]) -> None:
        self.state = config

    @event(Deleted)
    def _delete(self) -> None:
        self.deleted = True


# -- applying a mapping ---------------------------------------------------------------


class _Headers(dict):
    """Request headers for field paths: names looked up case-insensitively."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        super().__init__((name.lower(), value) for name, value in headers.items())

    def get(self, key: Any, default: Any = None) -> Any:
        return super().get(key.lower() if isinstance(key, str) else key, default)


@lru_cache(maxsize=4096)
def _compile(field_path: str) -> Any:
    """The parsed JSONPath of a field path, or None when it does not parse."""
    if field_path.startswith("$"):
        text = field_path
    elif field_path.startswith((".", "[")):
        text = "$" + field_path
    else:
        text = "$." + field_path
    try:
        return parse_jsonpath(text)
    except Exception:  # jsonpath-ng raises several unrelated types for bad input
        return None


_NOT_FOUND = object()


def resolve(field_path: str, document: Any) -> Any:
    """The value at ``field_path``, or ``_NOT_FOUND`` (unparsable, missing, ``null``, no match)."""
    expression = _compile(field_path)
    if expression is None:
        return _NOT_FOUND
    try:
        matches = expression.find(document)
    except Exception:
        return _NOT_FOUND
    if not matches or matches[0].value is None:
        return _NOT_FOUND
    return matches[0].value


def document(payload: dict[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    """What field paths are evaluated against: the payload, plus ``headers`` unless it has its own."""
    if "headers" in payload or not headers:
        return payload
    return {**payload, "headers": _Headers(headers)}


def go_string(value: Any) -> str:
    """A resolved value as text, the way the reference runtime (Go's ``%v``) writes it.

    Numbers are doubles: shortest round-trip digits, exponent form when the
    decimal exponent is < -4 or >= 6 (``1000000`` → ``1e+06``).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _go_float(float(value))
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_string(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(go_string(v) for v in value) + "]"
    return "<nil>"


def _go_float(number: float) -> str:
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""
    digits_tuple = Decimal(repr(abs(number))).normalize().as_tuple()
    digits = "".join(str(d) for d in digits_tuple.digits)
    exponent = len(digits) + int(digits_tuple.exponent) - 1
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    return sign + format(Decimal(repr(abs(number))).normalize(), "f")


def _required(config_field: str, label: str, doc: dict[str, Any]) -> Any:
    value = resolve(config_field, doc)
    if value is _NOT_FOUND:
        raise Unprocessable(f"{label} field '{config_field}' not found in payload", param=config_field)
    return value


def _positive_int(value: Any, config_field: str) -> int:
    """A version read from the payload: a positive integer, also when sent as ``2.0`` or ``"2"``."""
    number: Decimal | None = None
    try:
        if isinstance(value, str):
            number = Decimal(value.strip())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            number = Decimal(value)
    except ArithmeticError:
        number = None
    if number is None or not number.is_finite() or number != number.to_integral_value() or number <= 0:
        raise Unprocessable(
            f"version field '{config_field}' is not a positive integer: {go_string(value)}", param=config_field
        )
    return int(number)


def apply_mapping(
    config: MappingConfig,
    payload: dict[str, Any],
    headers: Mapping[str, str],
    now_ns: int,
    new_id: Callable[[], str],
) -> ExternalEvent:
    """The event a payload stands for. Raises Unprocessable naming the field that could not be read."""
    doc = document(payload, headers)

    def optional(config_field: str, default: str) -> str:
        if not config_field:
            return default
        value = resolve(config_field, doc)
        return default if value is _NOT_FOUND else go_string(value)

    if not config.aggregate_id_field:
        raise Unprocessable("aggregate ID field mapping is required", param="aggregateIDField")
    aggregate_id = go_string(_required(config.aggregate_id_field, "aggregate ID", doc))
    aggregate_type = config.aggregate_type
    if config.aggregate_type_field:
        aggregate_type = go_string(_required(config.aggregate_type_field, "aggregate type", doc))
    event_id = go_string(_required(config.event_id_field, "event ID", doc)) if config.event_id_field else new_id()
    version = config.version
    if config.version_field:
        version = _positive_int(_required(config.version_field, "version", doc), config.version_field)
    metadata = {}
    for key, field_path in config.metadata_mapping.items():
        value = resolve(field_path, doc)
        if value is not _NOT_FOUND:
            metadata[key] = dict(value) if isinstance(value, _Headers) else value
    return ExternalEvent(
        id=event_id,
        created_at_ns=now_ns,
        event_type=optional(config.event_type_field, config.event_type),
        event_source=optional(config.event_source_field, config.event_source),
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        version=version,
        data=payload,
        metadata=metadata,
    )
