"""Event classes: what projectors key their handlers by, and what stored events name.

A projector handler keyed by an event no aggregate emits would never run, and
an event class renamed or moved would leave the events already stored under its
old topic unreadable. These tests hold both ends: every handler names an event
an aggregate emits, the public types and topics stay what the log holds, and
a log written before chainloom was one package still loads into these classes.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import shutil
import sqlite3
from collections import defaultdict
from contextlib import closing
from pathlib import Path

import pytest
from eventsourcing.domain import CanInitAggregate, CommandMethodDecorator, DecoratedFuncCaller
from eventsourcing.persistence import StoredEvent

import chainloom.domain
from chainloom.domain.base import Aggregate, declared_events, public_event_type
from chainloom.domain.eventsource.events import EVENTS_DELETED, RAW_EVENT_RECEIVED, ExternalEvent
from chainloom.domain.groups import AffinityGroup
from chainloom.infra.envelope import EnvelopeMapper
from chainloom.projections.base import on
from chainloom.projections.registry import all_projectors

OLD_LOG = Path(__file__).resolve().parents[1] / "fixtures" / "log-before-one-package.sqlite"

# Every event class the aggregates declare, by its public type, with the module that defines it.
# Stored events name their class by topic (module:qualname) and carry the public type: changing
# either leaves what is already in the log (and on Kafka) behind.
EXPECTED_EVENTS = {
    "backend.created": "chainloom.domain.backends:Backend.Created",
    "backend.updated": "chainloom.domain.backends:Backend.Updated",
    "backend.deleted": "chainloom.domain.backends:Backend.Deleted",
    "backend.recreated": "chainloom.domain.backends:Backend.Recreated",
    "provider.configured": "chainloom.domain.providers:ProviderConfig.Configured",
    "provider.reconfigured": "chainloom.domain.providers:ProviderConfig.Reconfigured",
    "provider.config_deleted": "chainloom.domain.providers:ProviderConfig.ConfigDeleted",
    "group.created": "chainloom.domain.groups:AffinityGroup.Created",
    "group.recreated": "chainloom.domain.groups:AffinityGroup.Recreated",
    "group.updated": "chainloom.domain.groups:AffinityGroup.Updated",
    "group.deleted": "chainloom.domain.groups:AffinityGroup.Deleted",
    "group.backend_assigned": "chainloom.domain.groups:AffinityGroup.BackendAssigned",
    "group.backend_removed": "chainloom.domain.groups:AffinityGroup.BackendRemoved",
    "group.model_assigned": "chainloom.domain.groups:AffinityGroup.ModelAssigned",
    "group.model_removed": "chainloom.domain.groups:AffinityGroup.ModelRemoved",
    "model.declared": "chainloom.domain.models:Model.Declared",
    "model.redeclared": "chainloom.domain.models:Model.Redeclared",
    "model.updated": "chainloom.domain.models:Model.Updated",
    "model.deleted": "chainloom.domain.models:Model.Deleted",
    "unique_value.claimed": "chainloom.domain.uniqueness:UniqueValue.Claimed",
    "unique_value.reclaimed": "chainloom.domain.uniqueness:UniqueValue.Reclaimed",
    "unique_value.released": "chainloom.domain.uniqueness:UniqueValue.Released",
    "projection.event_skipped": "chainloom.domain.projection_audit:SkippedProjectionEvent.EventSkipped",
    "raw_event.received": "chainloom.domain.eventsource.events:RawEvent.Received",
    "event_deletion.recorded": "chainloom.domain.eventsource.events:EventDeletion.Recorded",
    "webhook_delivery.rejected": "chainloom.domain.eventsource.events:WebhookDelivery.Rejected",
    "mapping.created": "chainloom.domain.eventsource.mappings:EventMapping.Created",
    "mapping.recreated": "chainloom.domain.eventsource.mappings:EventMapping.Recreated",
    "mapping.updated": "chainloom.domain.eventsource.mappings:EventMapping.Updated",
    "mapping.deleted": "chainloom.domain.eventsource.mappings:EventMapping.Deleted",
    "backend_state.models_changed": "chainloom.domain.backend_state:ObservedBackend.ModelsChanged",
    "backend_state.error_raised": "chainloom.domain.backend_state:ObservedBackend.ErrorRaised",
    "backend_state.error_cleared": "chainloom.domain.backend_state:ObservedBackend.ErrorCleared",
    "backend_state.dropped": "chainloom.domain.backend_state:ObservedBackend.Dropped",
    "download.queued": "chainloom.domain.downloads:Download.Queued",
    "download.requeued": "chainloom.domain.downloads:Download.Requeued",
    "download.started": "chainloom.domain.downloads:Download.Started",
    "download.completed": "chainloom.domain.downloads:Download.Completed",
    "download.failed": "chainloom.domain.downloads:Download.Failed",
    "download.cancelled": "chainloom.domain.downloads:Download.Cancelled",
    "download.dequeued": "chainloom.domain.downloads:Download.Dequeued",
    "taskchain.created": "chainloom.domain.taskchains:TaskChain.Created",
    "taskchain.recreated": "chainloom.domain.taskchains:TaskChain.Recreated",
    "taskchain.updated": "chainloom.domain.taskchains:TaskChain.Updated",
    "taskchain.deleted": "chainloom.domain.taskchains:TaskChain.Deleted",
    "hook.created": "chainloom.domain.hooks:RemoteHook.Created",
    "hook.recreated": "chainloom.domain.hooks:RemoteHook.Recreated",
    "hook.updated": "chainloom.domain.hooks:RemoteHook.Updated",
    "hook.deleted": "chainloom.domain.hooks:RemoteHook.Deleted",
    "task_run.started": "chainloom.domain.task_runs:TaskRun.Started",
    "task_run.step_recorded": "chainloom.domain.task_runs:TaskRun.StepRecorded",
    "task_run.finished": "chainloom.domain.task_runs:TaskRun.Finished",
    "task_run.failed": "chainloom.domain.task_runs:TaskRun.Failed",
    "trigger.fired": "chainloom.domain.trigger_executions:TriggerExecution.Fired",
    "function.created": "chainloom.domain.functions:Function.Created",
    "function.recreated": "chainloom.domain.functions:Function.Recreated",
    "function.updated": "chainloom.domain.functions:Function.Updated",
    "function.deleted": "chainloom.domain.functions:Function.Deleted",
    "function.trigger_attached": "chainloom.domain.functions:Function.TriggerAttached",
    "function.trigger_detached": "chainloom.domain.functions:Function.TriggerDetached",
    "event_trigger.created": "chainloom.domain.functions:EventTrigger.Created",
    "event_trigger.recreated": "chainloom.domain.functions:EventTrigger.Recreated",
    "event_trigger.updated": "chainloom.domain.functions:EventTrigger.Updated",
    "event_trigger.deleted": "chainloom.domain.functions:EventTrigger.Deleted",
    "user.registered": "chainloom.domain.identity:User.Registered",
    "user.recreated": "chainloom.domain.identity:User.Recreated",
    "user.updated": "chainloom.domain.identity:User.Updated",
    "user.deleted": "chainloom.domain.identity:User.Deleted",
    "user.access_attached": "chainloom.domain.identity:User.AccessAttached",
    "user.access_detached": "chainloom.domain.identity:User.AccessDetached",
    "user.signed_in": "chainloom.domain.identity:User.SignedIn",
    "user.sign_in_failed": "chainloom.domain.identity:User.SignInFailed",
    "access.granted": "chainloom.domain.identity:AccessEntry.Granted",
    "access.regranted": "chainloom.domain.identity:AccessEntry.Regranted",
    "access.changed": "chainloom.domain.identity:AccessEntry.Changed",
    "access.revoked": "chainloom.domain.identity:AccessEntry.Revoked",
    "sign_in.refused": "chainloom.domain.identity:SignIn.Refused",
    "job.enqueued": "chainloom.domain.jobs:Job.Enqueued",
    "job.leased": "chainloom.domain.jobs:Job.Leased",
    "job.failed": "chainloom.domain.jobs:Job.Failed",
    "job.parked": "chainloom.domain.jobs:Job.Parked",
    "job.completed": "chainloom.domain.jobs:Job.Completed",
    "job.lease_expired": "chainloom.domain.jobs:Job.LeaseExpired",
    "job.purged": "chainloom.domain.jobs:Job.Purged",
    "file.created": "chainloom.domain.documents:File.Created",
    "file.content_replaced": "chainloom.domain.documents:File.ContentReplaced",
    "file.renamed": "chainloom.domain.documents:File.Renamed",
    "file.moved": "chainloom.domain.documents:File.Moved",
    "file.deleted": "chainloom.domain.documents:File.Deleted",
    "folder.created": "chainloom.domain.documents:Folder.Created",
    "folder.renamed": "chainloom.domain.documents:Folder.Renamed",
    "folder.moved": "chainloom.domain.documents:Folder.Moved",
    "folder.deleted": "chainloom.domain.documents:Folder.Deleted",
    "folder.child_attached": "chainloom.domain.documents:Folder.ChildAttached",
    "folder.child_detached": "chainloom.domain.documents:Folder.ChildDetached",
    "file_chunks.started": "chainloom.domain.file_chunks:FileChunks.Started",
    "file_chunks.chunk_indexed": "chainloom.domain.file_chunks:FileChunks.ChunkIndexed",
    "file_chunks.cleared": "chainloom.domain.file_chunks:FileChunks.Cleared",
    "chat.started": "chainloom.domain.chats:Chat.Started",
    "chat.message_added": "chainloom.domain.chats:Chat.MessageAdded",
    "telegram_frontend.created": "chainloom.domain.telegram:TelegramFrontend.Created",
    "telegram_frontend.updated": "chainloom.domain.telegram:TelegramFrontend.Updated",
    "telegram_frontend.deleted": "chainloom.domain.telegram:TelegramFrontend.Deleted",
    "telegram_frontend.polled": "chainloom.domain.telegram:TelegramFrontend.Polled",
    "telegram_frontend.poll_failed": "chainloom.domain.telegram:TelegramFrontend.PollFailed",
    "telegram_frontend.reply_failed": "chainloom.domain.telegram:TelegramFrontend.ReplyFailed",
    "telegram_reply.prepared": "chainloom.domain.telegram:TelegramReply.Prepared",
}


def _every_declared_event() -> dict[str, type]:
    """Public type → event class, for every aggregate of the domain (every module imported first)."""
    for module in pkgutil.walk_packages(chainloom.domain.__path__, "chainloom.domain."):
        importlib.import_module(module.name)
    return {public_event_type(event_class): event_class for event_class in declared_events()}


def _emits(aggregate: type[Aggregate], event_class: type) -> bool:
    """Whether a method of ``aggregate`` emits ``event_class``: an @event method applies it,
    or it is the class the @event ``__init__`` creates the aggregate with."""
    if issubclass(event_class, DecoratedFuncCaller):
        return True
    init = aggregate.__dict__.get("__init__")
    return (
        issubclass(event_class, CanInitAggregate)
        and isinstance(init, CommandMethodDecorator)
        and init.given_event_cls is not None
        and issubclass(event_class, init.given_event_cls)
    )


def test_every_projector_handler_names_an_event_an_aggregate_emits():
    emitted = {
        name: event_class
        for name, event_class in _every_declared_event().items()
        if _emits(declared_events()[event_class], event_class)
    }
    for projector in all_projectors():
        assert projector.event_types, projector.name
        orphaned = projector.event_types - emitted.keys()
        assert not orphaned, f"{projector.name} handles events no aggregate emits: {sorted(orphaned)}"


def test_every_declared_event_is_emitted_by_its_aggregate():
    for event_class, aggregate in declared_events().items():
        assert _emits(aggregate, event_class), f"{event_class.__qualname__} is declared but no method emits it"


def test_public_types_and_topics_stay_those_the_log_holds():
    declared = _every_declared_event()
    assert {name: f"{c.__module__}:{c.__qualname__}" for name, c in declared.items()} == EXPECTED_EVENTS
    assert (RAW_EVENT_RECEIVED, EVENTS_DELETED) == ("raw_event.received", "event_deletion.recorded")


def test_a_handler_keyed_by_a_class_no_aggregate_declares_fails_at_import():
    with pytest.raises(LookupError):
        on(Aggregate.Created)
    with pytest.raises(LookupError):
        on(AffinityGroup.Event)


def _old_stored_events(scratch: Path) -> list[StoredEvent]:
    copy = scratch / "old-events.sqlite"  # opening a log (even to read) writes beside it: leave the fixture alone
    shutil.copy(OLD_LOG, copy)
    with closing(sqlite3.connect(copy)) as connection:
        rows = connection.execute(
            "SELECT originator_id, originator_version, topic, state FROM stored_events"
            " ORDER BY originator_id, originator_version"
        ).fetchall()
    return [StoredEvent(originator_id, version, topic, bytes(state)) for originator_id, version, topic, state in rows]


def test_events_stored_with_the_old_layout_load_into_the_declared_classes(tmp_path: Path):
    """The fixture was written before the event classes were declared (``@event("Created")``)
    and before chainloom was one package (``domain.backends:Backend.Created``)."""
    mapper = EnvelopeMapper()
    stored = _old_stored_events(tmp_path)
    declared = _every_declared_event()
    streams: dict[str, list] = defaultdict(list)
    for old in stored:
        event = mapper.to_domain_event(old)
        envelope = json.loads(old.state)
        if isinstance(event, ExternalEvent):
            continue
        assert old.topic.startswith("domain.")
        assert type(event) is declared[envelope["event_type"]], old.topic
        # Stored again, it says the same under the new topic (only the package prefix changes).
        again = mapper.to_stored_event(event, envelope["metadata"])
        assert again.topic == "chainloom." + old.topic
        assert json.loads(again.state) | {"id": envelope["id"]} == envelope
        streams[old.originator_id].append(event)

    aggregates = {}
    for stream_id, events in streams.items():
        aggregate = None
        for event in events:
            aggregate = event.mutate(aggregate)
        aggregates[stream_id] = aggregate
    assert len(aggregates) == len({e.originator_id for e in stored}) - 2  # all but the two external events
    [group] = [a for a in aggregates.values() if isinstance(a, AffinityGroup) and a.name == "old-group"]
    assert len(group.backend_ids) == 1 and len(group.model_ids) == 1
