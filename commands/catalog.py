"""Commands of the catalog: backends, declared models, affinity groups and memberships."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from chainloom.commands.base import SYSTEM, Aggregates, CommandContext, CommandRunner, Decision
from chainloom.domain.backends import Backend
from chainloom.domain.errors import Conflict, Forbidden, NotFound
from chainloom.domain.groups import INTERNAL_GROUPS, AffinityGroup, InternalGroup
from chainloom.domain.models import Model, ModelSpec
from chainloom.domain.uniqueness import BACKEND_NAME, BACKEND_URL, GROUP_NAME, MODEL_NAME, ensure_free


class Memberships(Protocol):
    """Which groups hold a backend or a model (read side; used to cascade deletions)."""

    def groups_of_backend(self, backend_id: str) -> Sequence[str]: ...

    def groups_of_model(self, model_id: str) -> Sequence[str]: ...


@dataclass(frozen=True)
class DefaultModel:
    name: str
    context_length: int


def _existing(log: Aggregates, cls, key: str):
    aggregate = log.get(cls, key)
    if aggregate is None:
        raise NotFound("libdb: not found")
    aggregate.ensure_exists()
    return aggregate


def _free(log: Aggregates, scope: str, value: str, owner: str, what: str) -> None:
    ensure_free(log.owner_of, scope, value, owner, what)


class CatalogCommands:
    def __init__(
        self,
        runner: CommandRunner,
        memberships: Memberships,
        protected_model: str,
        new_id=lambda: str(uuid.uuid4()),
    ) -> None:
        self._runner = runner
        self._memberships = memberships
        self._protected_model = protected_model  # the embedding model cannot be deleted
        self._new_id = new_id

    # -- backends ------------------------------------------------------------

    async def create_backend(self, name: str, base_url: str, type: str, ctx: CommandContext) -> str:
        def decide(log: Aggregates) -> Decision[str]:
            backend_id = self._new_id()
            backend = Backend.create(backend_id, name, base_url, type)
            _free(log, BACKEND_NAME, name, backend_id, f"backend name '{name}'")
            _free(log, BACKEND_URL, base_url, backend_id, f"backend baseUrl '{base_url}'")
            return Decision(backend_id, [backend])

        return await self._runner.run(decide, ctx)

    async def update_backend(self, backend_id: str, name: str, base_url: str, type: str, ctx: CommandContext) -> None:
        def decide(log: Aggregates) -> Decision[None]:
            backend: Backend = _existing(log, Backend, backend_id)
            backend.update(name, base_url, type)
            _free(log, BACKEND_NAME, name, backend_id, f"backend name '{name}'")
            _free(log, BACKEND_URL, base_url, backend_id, f"backend baseUrl '{base_url}'")
            return Decision(None, [backend])

        await self._runner.run(decide, ctx)

    async def delete_backend(self, backend_id: str, ctx: CommandContext) -> None:
        def decide(log: Aggregates) -> Decision[None]:
            backend: Backend = _existing(log, Backend, backend_id)
            groups = [_existing_or_none(log, AffinityGroup, g) for g in self._memberships.groups_of_backend(backend_id)]
            for group in groups:
                if group is not None and backend_id in group.backend_ids:
                    group.remove_backend(backend_id)
            backend.delete()
            return Decision(None, [*[g for g in groups if g is not None], backend])

        await self._runner.run(decide, ctx)

    # -- models --------------------------------------------------------------

    async def declare_model(self, spec: ModelSpec, ctx: CommandContext) -> str:
        """Declare a model; its id is its name."""

        def decide(log: Aggregates) -> Decision[str]:
            spec.validate()
            model_id = spec.model
            _free(log, MODEL_NAME, spec.model, model_id, f"model '{spec.model}'")
            model = log.get(Model, model_id)
            if model is None:
                model = Model.declare(model_id, spec)
            else:
                model.redeclare(spec)
            return Decision(model_id, [model])

        return await self._runner.run(decide, ctx)

    async def update_model(self, model_id: str, spec: ModelSpec, ctx: CommandContext) -> None:
        def decide(log: Aggregates) -> Decision[None]:
            model: Model = _existing(log, Model, model_id)
            model.update(spec)
            _free(log, MODEL_NAME, spec.model, model_id, f"model '{spec.model}'")
            return Decision(None, [model])

        await self._runner.run(decide, ctx)

    async def delete_model(self, name: str, ctx: CommandContext) -> None:
        """Delete the model with this *name* (the contract addresses models by name here)."""

        def decide(log: Aggregates) -> Decision[None]:
            if name == self._protected_model:
                raise Forbidden("serverops: immutable model")
            model_id = log.owner_of(MODEL_NAME, name)
            if model_id is None:
                raise NotFound("libdb: not found")
            model: Model = _existing(log, Model, model_id)
            groups = [_existing_or_none(log, AffinityGroup, g) for g in self._memberships.groups_of_model(model_id)]
            for group in groups:
                if group is not None and model_id in group.model_ids:
                    group.remove_model(model_id, cascade=True)
            model.delete()
            return Decision(None, [*[g for g in groups if g is not None], model])

        await self._runner.run(decide, ctx)

    # -- groups --------------------------------------------------------------

    async def create_group(self, name: str, purpose_type: str, ctx: CommandContext) -> str:
        def decide(log: Aggregates) -> Decision[str]:
            group_id = self._new_id()
            group = AffinityGroup.create(group_id, name, purpose_type)
            _free(log, GROUP_NAME, name, group_id, f"group name '{name}'")
            return Decision(group_id, [group])

        return await self._runner.run(decide, ctx)

    async def update_group(self, group_id: str, name: str, purpose_type: str, ctx: CommandContext) -> None:
        def decide(log: Aggregates) -> Decision[None]:
            group: AffinityGroup = _existing(log, AffinityGroup, group_id)
            group.update(name, purpose_type)
            _free(log, GROUP_NAME, name, group_id, f"group name '{name}'")
            return Decision(None, [group])

        await self._runner.run(decide, ctx)

    async def delete_group(self, group_id: str, ctx: CommandContext) -> None:
        def decide(log: Aggregates) -> Decision[None]:
            group: AffinityGroup = _existing(log, AffinityGroup, group_id)
            group.delete()
            return Decision(None, [group])

        await self._runner.run(decide, ctx)

    async def assign_backend(self, group_id: str, backend_id: str, ctx: CommandContext) -> None:
        def decide(log: Aggregates) -> Decision[None]:
            group = _referenced(log, AffinityGroup, group_id, "group")
            _referenced(log, Backend, backend_id, "backend")
            group.assign_backend(backend_id)
            return Decision(None, [group])

        await self._runner.run(decide, ctx)

    async def remove_backend(self, group_id: str, backend_id: str, ctx: CommandContext) -> None:
        def decide(log: Aggregates) -> Decision[None]:
            group: AffinityGroup = _existing(log, AffinityGroup, group_id)
            group.remove_backend(backend_id)
            return Decision(None, [group])

        await self._runner.run(decide, ctx)

    async def assign_model(self, group_id: str, model_id: str, ctx: CommandContext) -> None:
        def decide(log: Aggregates) -> Decision[None]:
            group = _referenced(log, AffinityGroup, group_id, "group")
            _referenced(log, Model, model_id, "model")
            group.assign_model(model_id)
            return Decision(None, [group])

        await self._runner.run(decide, ctx)

    async def remove_model(self, group_id: str, model_id: str, ctx: CommandContext) -> None:
        def decide(log: Aggregates) -> Decision[None]:
            group: AffinityGroup = _existing(log, AffinityGroup, group_id)
            group.remove_model(model_id)
            return Decision(None, [group])

        await self._runner.run(decide, ctx)

    # -- start-up ------------------------------------------------------------

    async def seed_internal_groups(self, defaults: dict[str, DefaultModel], tenancy: uuid.UUID) -> None:
        """Create the internal groups and their default models, unless they exist (idempotent).

        ``defaults`` maps an internal group id to the model it is seeded with.
        Each group is seeded in its own transaction, in the order of INTERNAL_GROUPS.
        """
        for internal in INTERNAL_GROUPS:
            default = defaults[internal.group_id]
            await self._runner.run(partial(_seed, internal=internal, default=default, tenancy=tenancy), SYSTEM)


def _seed(log: Aggregates, internal: InternalGroup, default: DefaultModel, tenancy: uuid.UUID) -> Decision[None]:
    save: list = []
    group = log.get(AffinityGroup, internal.group_id)
    if group is None or group.deleted:
        if group is None:
            group = AffinityGroup.create(internal.group_id, internal.name, internal.purpose_type)
        else:
            group.recreate(internal.name, internal.purpose_type)
        _free(log, GROUP_NAME, internal.name, internal.group_id, f"group name '{internal.name}'")
        save.append(group)

    # The index and the model are read one after the other: another process seeding at the same time
    # (worker processes start together) may have written both in between, so the model decides.
    model_id = log.owner_of(MODEL_NAME, default.name) or str(uuid.uuid5(tenancy, default.name))
    model = log.get(Model, model_id)
    if model is None or model.deleted:
        spec = ModelSpec(default.name, default.context_length, **{internal.capability: True})
        if model is None:
            model = Model.declare(model_id, spec)
        else:
            model.redeclare(spec)
        _free(log, MODEL_NAME, default.name, model_id, f"model '{default.name}'")
        save.append(model)
    else:
        model.require(default.context_length, internal.capability)
        save.append(model)

    if model_id not in group.model_ids:
        group.assign_model(model_id)
    if group not in save:
        save.append(group)
    return Decision(None, save)


def _existing_or_none(log: Aggregates, cls, key: str):
    aggregate = log.get(cls, key)
    return None if aggregate is None or aggregate.deleted else aggregate


def _referenced(log: Aggregates, cls, key: str, what: str):
    """An aggregate named by an assignment: a missing one is a dangling reference (409)."""
    aggregate = _existing_or_none(log, cls, key)
    if aggregate is None:
        raise Conflict(f"libdb: foreign key violation: {what} {key} does not exist")
    return aggregate

