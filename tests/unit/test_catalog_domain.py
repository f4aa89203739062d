"""The catalog's aggregates decide alone: no store, no HTTP."""

import pytest

from chainloom.domain.backends import Backend
from chainloom.domain.errors import BadRequest, Conflict, Forbidden, NotFound, Unprocessable
from chainloom.domain.groups import EMBED_GROUP_ID, AffinityGroup
from chainloom.domain.models import Model, ModelSpec
from chainloom.domain.uniqueness import UniqueValue


def event_names(aggregate):
    return [type(e).__name__ for e in aggregate.collect_events()]


class TestBackend:
    def test_create_records_one_created_event(self):
        backend = Backend.create("b1", "ollama-1", "http://o:11434", "ollama")
        assert (backend.key, backend.name, backend.base_url, backend.type) == ("b1", "ollama-1", "http://o:11434", "ollama")
        assert event_names(backend) == ["Created"]

    @pytest.mark.parametrize(
        "name, url, kind, message",
        [
            ("", "u", "ollama", "invalid backend data: name is required"),
            ("n", "", "ollama", "invalid backend data: baseURL is required"),
            ("n", "u", "openai", "invalid backend data: Type is required to be ollama or vllm"),
            ("n", "u", "Ollama", "invalid backend data: Type is required to be ollama or vllm"),
        ],
    )
    def test_invalid_backends_are_refused(self, name, url, kind, message):
        with pytest.raises(Unprocessable, match=message):
            Backend.create("b1", name, url, kind)

    def test_a_deleted_backend_can_neither_change_nor_be_deleted_again(self):
        backend = Backend.create("b1", "n", "u", "vllm")
        backend.delete()
        with pytest.raises(NotFound):
            backend.update("n2", "u2", "vllm")
        with pytest.raises(NotFound):
            backend.delete()
        assert event_names(backend) == ["Created", "Deleted"]


class TestModel:
    @pytest.mark.parametrize(
        "spec, error, fragment",
        [
            (ModelSpec("", 10, can_chat=True), BadRequest, "model name is required"),
            (ModelSpec("m", 0, can_chat=True), BadRequest, "context length is required"),
            (ModelSpec("m", 10), BadRequest, "capabilities are required"),
            (ModelSpec("m", -1, can_chat=True), Unprocessable, "context length must be positive"),
        ],
    )
    def test_invalid_declarations_are_refused(self, spec, error, fragment):
        with pytest.raises(error, match=fragment):
            Model.declare("m", spec)

    def test_update_without_change_records_nothing(self):
        model = Model.declare("m", ModelSpec("m", 10, can_chat=True))
        model.collect_events()
        model.update(ModelSpec("m", 10, can_chat=True))
        assert event_names(model) == []

    def test_redeclare_only_after_delete(self):
        model = Model.declare("m", ModelSpec("m", 10, can_chat=True))
        with pytest.raises(Conflict):
            model.redeclare(ModelSpec("m", 20, can_embed=True))
        model.delete()
        model.redeclare(ModelSpec("m", 20, can_embed=True))
        assert (model.deleted, model.context_length, model.can_embed, model.can_chat) == (False, 20, True, False)
        assert event_names(model) == ["Declared", "Deleted", "Redeclared"]

    def test_seeding_requires_the_configured_context_and_switches_capabilities_on(self):
        model = Model.declare("m", ModelSpec("m", 2048, can_prompt=True))
        model.collect_events()
        model.require(2048, "can_chat")
        assert model.can_chat and model.can_prompt
        model.require(2048, "can_chat")  # already on: nothing more recorded
        assert event_names(model) == ["Updated"]
        with pytest.raises(Unprocessable, match="context length"):
            model.require(4096, "can_chat")


class TestAffinityGroup:
    def test_assignments_are_unique_and_removals_need_an_assignment(self):
        group = AffinityGroup.create("g", "name", "purpose")
        group.assign_backend("b1")
        with pytest.raises(Conflict, match="unique constraint violation"):
            group.assign_backend("b1")
        group.remove_backend("b1")
        with pytest.raises(NotFound):
            group.remove_backend("b1")
        group.assign_model("m1")
        with pytest.raises(Conflict):
            group.assign_model("m1")
        group.remove_model("m1")
        with pytest.raises(NotFound):
            group.remove_model("m1")

    def test_delete_removes_every_assignment_through_events_first(self):
        group = AffinityGroup.create("g", "name", "purpose")
        group.assign_backend("b1")
        group.assign_model("m1")
        group.collect_events()
        group.delete()
        events = group.collect_events()
        assert [type(e).__name__ for e in events] == ["BackendRemoved", "ModelRemoved", "Deleted"]
        assert group.backend_ids == set() and group.model_ids == set()
        with pytest.raises(NotFound):
            group.assign_backend("b2")

    def test_the_embedding_group_is_immutable_but_takes_backends(self):
        group = AffinityGroup.create(EMBED_GROUP_ID, "Embedder", "Internal Embeddings")
        group.assign_model("embed")
        group.assign_backend("b1")
        with pytest.raises(Forbidden, match="immutable"):
            group.update("x", "y")
        with pytest.raises(Forbidden, match="immutable"):
            group.delete()
        with pytest.raises(Forbidden, match="serverops: immutable group"):
            group.remove_model("embed")
        group.remove_backend("b1")
        group.remove_model("embed", cascade=True)  # the model itself is being deleted
        assert group.model_ids == set()

    def test_recreate_only_a_deleted_group(self):
        group = AffinityGroup.create("internal_tasks_group", "Tasks", "Internal Tasks")
        with pytest.raises(Conflict):
            group.recreate("Tasks", "Internal Tasks")
        group.delete()
        group.recreate("Tasks", "Internal Tasks")
        assert not group.deleted


class TestUniqueValue:
    def test_a_value_has_one_owner_until_released(self):
        claim = UniqueValue.claim_new("backend.name", "n", "b1")
        claim.claim("b1", "backend name 'n'")  # the owner again: nothing happens
        with pytest.raises(Conflict, match="backend name 'n' already exists"):
            claim.claim("b2", "backend name 'n'")
        claim.release("b2")  # not the owner: nothing happens
        assert claim.owner == "b1"
        claim.release("b1")
        claim.claim("b2", "backend name 'n'")
        assert claim.owner == "b2"
        assert event_names(claim) == ["Claimed", "Released", "Reclaimed"]


def test_every_aggregate_holding_unique_values_is_indexed():
    """The index of unique values is built from the aggregates in ``HOLDERS``: none may be missing."""
    import chainloom.web.app  # noqa: F401  (every aggregate is defined)
    from chainloom.domain.base import Aggregate, declared_events
    from chainloom.infra.unique_index import HOLDERS

    aggregates = set(declared_events().values())
    assert {a for a in aggregates if a.unique_values is not Aggregate.unique_values} == set(HOLDERS)
