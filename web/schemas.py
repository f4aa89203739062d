"""The shapes of what the API answers and of the query strings and headers it reads, as pydantic models.

They exist to be described in ``/openapi.json`` (``web.openapi``): handlers name
them in ``@responds``/``@query``/``@headers`` next to their code, so the
description of an operation sits beside its implementation (request bodies are
the models ``with_body`` parses). Each answer shape mirrors the function that
builds the JSON (named in its docstring); tests/api/test_openapi_schemathesis.py
runs Schemathesis against the live service, which fails as soon as they differ.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chainloom.domain.backends import AnyBackendType
from chainloom.queries.pagination import MAX_LIMIT

# -- answers -----------------------------------------------------------------------


class Answer(BaseModel):
    """What every answer shape is: filled by field name or by its camelCase alias."""

    model_config = ConfigDict(populate_by_name=True)


class ErrorDetail(Answer):
    message: str
    type: str
    code: str
    param: str | None = None


class ErrorResponse(Answer):
    """The one error envelope (``web.errors.error_response``)."""

    error: ErrorDetail


class Backend(Answer):
    """``queries.catalog.backend_json``."""

    id: str
    name: str
    base_url: str = Field(alias="baseUrl")
    type: AnyBackendType  # openai/gemini: provider backends (web.providers)
    created_at: datetime = Field(alias="createdAt")
    updated_at: datetime = Field(alias="updatedAt")


class ModelDetails(Answer):
    """The contract's ``statetype_ModelDetails`` (``domain.backend_state.pull_status``): what Ollama says of a
    model, empty strings (``families`` null) for other types."""

    parent_model: str = Field(alias="parentModel")
    format: str
    family: str
    families: list[str] | None
    parameter_size: str = Field(alias="parameterSize")
    quantization_level: str = Field(alias="quantizationLevel")


class ModelPullStatus(Answer):
    """The contract's ``statetype_ModelPullStatus`` (``domain.backend_state.pull_status``): a model a backend
    holds; ``modifiedAt`` is the zero time when the backend does not say."""

    name: str
    model: str
    modified_at: datetime = Field(alias="modifiedAt")
    size: int
    digest: str
    details: ModelDetails
    context_length: int = Field(alias="contextLength")
    can_chat: bool = Field(alias="canChat")
    can_embed: bool = Field(alias="canEmbed")
    can_prompt: bool = Field(alias="canPrompt")
    can_stream: bool = Field(alias="canStream")


_RUNTIME_ERROR = "The last error talking to the backend; absent when there is none."


class BackendWithStatus(Backend):
    """``queries.catalog.backend_status_json``: the backend with its observed state (``projections.runtime``):
    empty lists while the reconciler has not observed it (it is in no group, or not looked at yet)."""

    models: list[str]
    pulled_models: list[ModelPullStatus] = Field(alias="pulledModels")
    error: str = Field("", description=_RUNTIME_ERROR)


class BackendRuntimeState(Answer):
    """The contract's ``statetype_BackendRuntimeState`` (``queries.runtime._state_json``)."""

    id: str
    name: str
    models: list[str]
    pulled_models: list[ModelPullStatus] = Field(alias="pulledModels")
    backend: Backend
    error: str = Field("", description=_RUNTIME_ERROR)


class Model(Answer):
    """``queries.catalog.model_json``."""

    id: str
    model: str
    context_length: int = Field(alias="contextLength")
    can_chat: bool = Field(alias="canChat")
    can_embed: bool = Field(alias="canEmbed")
    can_prompt: bool = Field(alias="canPrompt")
    can_stream: bool = Field(alias="canStream")
    created_at: datetime = Field(alias="createdAt")
    updated_at: datetime = Field(alias="updatedAt")


class Group(Answer):
    """``queries.catalog.group_json``."""

    id: str
    name: str
    purpose_type: str = Field(alias="purposeType")
    created_at: datetime = Field(alias="createdAt")
    updated_at: datetime = Field(alias="updatedAt")


class Event(Answer):
    """The contract's ``eventstore_Event`` (``domain.eventsource.events.ExternalEvent.envelope`` with ``nid``)."""

    id: str
    nid: int
    created_at: datetime
    event_type: str
    event_source: str
    aggregate_type: str
    aggregate_id: str
    version: int
    # Left out of a 201 when they are large (``commands.eventsource.trim_echo``).
    data: Any = None
    metadata: Any = None


class EventFrame(Answer):
    """One frame of ``GET /events/stream/{eventType}`` (``web.sse``) as an SSE client reads it."""

    id: str = Field(pattern="^[0-9]+$", description="The event's nid (send it back as `Last-Event-ID` to resume).")
    event: str = "message"
    data: str = Field(
        json_schema_extra={
            "contentMediaType": "application/json",
            "contentSchema": Event.model_json_schema(by_alias=True, mode="serialization"),
        }
    )


class RawEvent(Answer):
    """``queries.eventsource.raw_event_json``: ``headers`` only when there are any."""

    id: str
    nid: int
    received_at: datetime
    path: str
    payload: dict[str, Any] = Field(default_factory=dict)  # left out of a large 201
    headers: dict[str, str] = Field(default_factory=dict)


class IngestAnswer(Event):
    """``commands.eventsource.ingest_answer``: the appended event, what clients of the reference read, the raw event's ids."""

    path: str
    received_at: datetime
    payload: dict[str, Any]
    headers: dict[str, str] = Field(default_factory=dict)
    raw_id: str
    raw_nid: int


class Mapping(Answer):
    """The contract's ``MappingConfig`` (``projections.eventsource.mapping_json``); the secret is never answered."""

    path: str
    event_type: str = Field(alias="eventType")
    event_source: str = Field(alias="eventSource")
    aggregate_type: str = Field(alias="aggregateType")
    aggregate_id_field: str = Field(alias="aggregateIDField")
    aggregate_type_field: str = Field(alias="aggregateTypeField")
    event_type_field: str = Field(alias="eventTypeField")
    event_source_field: str = Field(alias="eventSourceField")
    event_id_field: str = Field(alias="eventIDField")
    version: int
    version_field: str = Field(alias="versionField")
    metadata_mapping: dict[str, str] = Field(alias="metadataMapping")
    signature_scheme: str = Field(alias="signatureScheme")
    signature_header: str = Field(alias="signatureHeader")
    signature_secret_set: bool = Field(alias="signatureSecretSet")


class Version(Answer):
    """``web.system.version``."""

    version: str
    node_instance_id: str = Field(alias="nodeInstanceID")
    tenancy: str = Field(json_schema_extra={"format": "uuid"})
    name: str


class Ready(Answer):
    """``web.system.ready`` when the service can answer commands."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ready"]
    node_instance_id: str = Field(alias="nodeInstanceID")
    pid: int
    holds: list[
        Literal[
            "projections", "reconciler", "downloads", "triggers", "leases", "blobs", "telegram-poller",
            "telegram-worker", "seals", "kafka-relay",
        ]
    ] = Field(
        description="The singleton jobs the answering process holds now (one process holds each)."
    )


# A confirmation such as "backend removed": the reference runtime answers a bare JSON string.
Message = str

# -- query strings -----------------------------------------------------------------

Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT, description=f"Page size (1 to {MAX_LIMIT}, default 100).")]


class PageQuery(BaseModel):
    """``queries.pagination.Page``: newest first, the next page starts before the last ``createdAt`` seen."""

    limit: Limit | None = None
    cursor: datetime | None = Field(None, description="Only rows created before this time (the last `createdAt` seen).")


class EventWindowQuery(BaseModel):
    """``queries.eventsource.Window`` and ``parse_limit``: the last 24 h by default, ``from`` ≤ ``to``."""

    from_: datetime | None = Field(None, alias="from", description="Start of the window (inclusive); default: 24 h before `to`.")
    to: datetime | None = Field(None, description="End of the window (inclusive); default: now.")
    limit: Limit | None = None


Required = Annotated[str, Field(min_length=1)]


class EventsOfTypeQuery(EventWindowQuery):
    event_type: Required


class EventsOfSourceQuery(EventWindowQuery):
    event_type: Required
    event_source: Required


class EventsOfAggregateQuery(EventWindowQuery):
    event_type: Required
    aggregate_type: Required
    aggregate_id: Required


class DeleteEventsQuery(BaseModel):
    """Deleting needs the whole window stated."""

    event_type: Required
    from_: datetime = Field(alias="from")
    to: datetime


class RawEventWindowQuery(BaseModel):
    """``GET /raw-events/{nid}`` looks within a stated window."""

    from_: datetime = Field(alias="from")
    to: datetime


# What ``web.eventsource`` takes as a numeric id (an nid).
NID_PATTERN = "^[+-]?[0-9]{1,18}$"


class RawEventPath(BaseModel):
    nid: str = Field(pattern=NID_PATTERN, description="The raw event's nid.")


class ReplayQuery(BaseModel):
    nid: str = Field(pattern=NID_PATTERN, description="The nid of the raw event to map again.")
    from_: datetime = Field(alias="from", description="The raw event was received at or after this time.")
    to: datetime = Field(description="The raw event was received at or before this time.")


class MappingPathQuery(BaseModel):
    path: Required = Field(description="The mapping's path (what webhooks post to `/ingest?path=`).")


# ``web.eventsource._last_event_id``: the nid of the last event an SSE client received.
_LAST_EVENT_ID = "^[0-9]{1,18}$"


class LastEventIdQuery(BaseModel):
    """Where a reconnecting SSE client left off, for clients that cannot set headers (the header wins)."""

    last_event_id: str | None = Field(None, alias="lastEventId", pattern=_LAST_EVENT_ID)
    last_event_id_snake: str | None = Field(None, alias="last_event_id", pattern=_LAST_EVENT_ID)


class LastEventIdHeaders(BaseModel):
    last_event_id: str | None = Field(
        None, alias="Last-Event-ID", pattern=_LAST_EVENT_ID, description="The nid of the last event received."
    )


# -- request bodies read without a body model ------------------------------------------


class WebhookPayload(BaseModel):
    """``POST /ingest``: any JSON object; what its mapping reads from it decides whether it is accepted."""

    model_config = ConfigDict(extra="allow")


# Times the stores can hold (years 1678 to 2261) as RFC 3339 with a zone designator. Days stop at
# 28 only because a pattern cannot know the length of a month; every real date is taken.
STORABLE_TIME_PATTERN = (
    "^(16(7[89]|[89][0-9])|1[7-9][0-9]{2}|2[01][0-9]{2}|22[0-5][0-9]|226[01])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
    "T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
