"""Users, access entries and sign-ins decide alone: validation, their events (never a secret in them), the
integrity between users and entries, and the commands' sign-in and bootstrap rules, on an in-memory log."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from chainloom.commands.base import Aggregates, CommandContext, Decision
from chainloom.commands.identity import IdentityCommands, WorkerAccount
from chainloom.domain.base import Aggregate
from chainloom.domain.errors import BadRequest, Conflict, NotFound, Unauthorized, Unprocessable
from chainloom.domain.identity import (
    MAX_TEXT_BYTES,
    AccessEntry,
    EntrySpec,
    Grant,
    Permission,
    Profile,
    SignIn,
    User,
)
from chainloom.domain.uniqueness import USER_EMAIL


def event_names(aggregate: Aggregate) -> list[str]:
    return [type(e).__name__ for e in aggregate.collect_events()]


# -- values --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, level", [("none", 0), ("VIEW", 1), ("Edit", 2), ("manage", 3)])
def test_permissions_parse_in_any_case_and_are_ordered(text: str, level: int):
    assert Permission.parse(text) == level
    assert Permission.parse(text).label == text.lower()
    assert Permission.NONE < Permission.VIEW < Permission.EDIT < Permission.MANAGE


@pytest.mark.parametrize("text", ["", "admin", "managee", " view", "3"])
def test_an_unknown_permission_is_refused(text: str):
    with pytest.raises(Unprocessable, match="invalid permission string"):
        Permission.parse(text)


GRANT = Grant("e-1", "u-1", "server", "system", Permission.MANAGE, "2025-08-21T10:11:12.345678Z", "2025-08-21T10:11:13Z")


def test_a_grant_is_the_claim_the_reference_puts_in_tokens_and_back():
    claim = GRANT.to_claim()
    assert claim == {
        "id": "e-1",
        "identity": "u-1",
        "resource": "server",
        "resourceType": "system",
        "permission": 3,
        "createdAt": "2025-08-21T10:11:12.345678Z",
        "updatedAt": "2025-08-21T10:11:13Z",
    }
    assert Grant.from_claim(claim) == GRANT


@pytest.mark.parametrize(
    "change",
    [{"permission": 4}, {"permission": -1}, {"permission": "3"}, {"permission": True}, {"permission": None}, {"resource": 1}],
)
def test_a_claim_no_grant_could_make_is_refused(change: dict[str, Any]):
    with pytest.raises(ValueError):
        Grant.from_claim(GRANT.to_claim() | change)
    with pytest.raises(ValueError):
        Grant.from_claim(["not", "an", "object"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "profile, message",
    [
        (Profile(""), "invalid user data: email is required"),
        (Profile("a" * (MAX_TEXT_BYTES + 1)), f"email is longer than {MAX_TEXT_BYTES} bytes"),
        (Profile("a@b.c", "x\x00"), "must not contain NUL"),
    ],
)
def test_profiles_are_refused_with_the_first_failure(profile: Profile, message: str):
    with pytest.raises(Unprocessable, match=message):
        profile.validate()


def test_an_entry_needs_a_resource_type_before_anything_else():
    with pytest.raises(BadRequest, match="serverops: missing parameter"):
        EntrySpec("u\x00", "server", "", Permission.VIEW).validate()
    with pytest.raises(Unprocessable, match="identity"):
        EntrySpec("u\x00", "server", "system", Permission.VIEW).validate()


# -- aggregates ----------------------------------------------------------------------------------------


def test_a_user_holds_its_email_lower_cased_until_deleted():
    user = User.register("u-1", Profile("Jane@X.io", "Jane"))
    assert user.unique_values() == {USER_EMAIL: "jane@x.io"}
    user.update(Profile("jane@y.io", "J"), password_changed=True)
    assert user.unique_values() == {USER_EMAIL: "jane@y.io"}
    user.delete()
    assert user.unique_values() == {}
    events = user.collect_events()
    assert [type(e).__name__ for e in events] == ["Registered", "Updated", "Deleted"]
    # What the events carry: the profile, and that a password was set — never the password.
    assert vars(events[1])["password_changed"] is True
    assert not any("password" in key and key != "password_changed" for e in events for key in vars(e))


def test_a_user_keeps_its_entries_and_forgets_them_when_deleted():
    user = User.register("u-1", Profile("a@b.c"))
    user.attach("e-1")
    user.attach("e-1")  # once
    user.attach("e-2")
    user.detach("e-1")
    user.detach("e-9")  # not its own: nothing
    assert user.entries == ["e-2"]
    user.delete()
    assert user.entries == [] and user.deleted
    assert event_names(user) == ["Registered", "AccessAttached", "AccessAttached", "AccessDetached", "Deleted"]
    with pytest.raises(Conflict, match="libdb: foreign key violation"):
        user.attach("e-3")
    for act in (lambda: user.delete(), lambda: user.update(Profile("a@b.c"), False), lambda: user.signed_in()):
        with pytest.raises(NotFound, match="libdb: not found"):
            act()


def test_only_a_deleted_user_is_recreated():
    user = User.register("worker", Profile("w@x.io"))
    with pytest.raises(Conflict, match="user already exists"):
        user.recreate(Profile("w@x.io"))
    user.delete()
    user.recreate(Profile("w@x.io", "Internal Worker Account"))
    assert not user.deleted and user.unique_values() == {USER_EMAIL: "w@x.io"}


def test_sign_ins_are_recorded_with_a_reason_only():
    user = User.register("u-1", Profile("a@b.c"))
    user.signed_in()
    user.sign_in_failed("invalid credentials")
    events = user.collect_events()
    assert [type(e).__name__ for e in events] == ["Registered", "SignedIn", "SignInFailed"]
    assert vars(events[2])["reason"] == "invalid credentials"
    refused = SignIn.refuse("attempt-1", "nobody@x.io")
    assert [vars(e)["email"] for e in refused.collect_events()] == ["nobody@x.io"]


def test_an_entry_is_granted_changed_revoked_and_granted_again():
    entry = AccessEntry.grant("e-1", EntrySpec("u-1", "server", "system", Permission.NONE))
    entry.change(EntrySpec("u-2", "files", "system", Permission.EDIT))
    assert (entry.identity, entry.resource, entry.permission) == ("u-2", "files", Permission.EDIT)
    entry.revoke()
    with pytest.raises(NotFound):
        entry.change(EntrySpec("u-2", "files", "system", Permission.EDIT))
    entry.regrant(EntrySpec("u-3", "server", "server", Permission.MANAGE))
    with pytest.raises(Conflict):
        entry.regrant(EntrySpec("u-3", "server", "server", Permission.MANAGE))
    events = entry.collect_events()
    assert [type(e).__name__ for e in events] == ["Granted", "Changed", "Revoked", "Regranted"]
    assert vars(events[1])["permission"] == "edit"  # the level's name on the log


# -- commands, on an in-memory log -----------------------------------------------------------------------


class PlainHasher:
    """A stand-in for argon2 where the hash does not matter, only that one is made and checked."""

    def hash(self, password: str) -> str:
        return f"hashed:{password[::-1]}"

    def verify(self, encoded: str, password: str) -> bool:
        return encoded == self.hash(password)


class Cursor:
    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def execute(self, sql: str, params: Any = ()) -> None:
        self.statements.append((sql, tuple(params)))


class MemoryLog:
    """What a decision may read (``Aggregates``), the index of e-mails, the credentials table, and a runner
    that saves what decisions hand back and writes what their fences write."""

    def __init__(self) -> None:
        self.aggregates: dict[str, Aggregate] = {}
        self.events: list[tuple[str, str]] = []
        self.hashes: dict[str, str] = {}

    def get(self, aggregate_class: type[Any], key: str) -> Any:
        return copy.deepcopy(self.aggregates.get(aggregate_class.stream_id(key)))

    def last_event(self, aggregate_class: type[Aggregate], key: str) -> Any:
        raise NotImplementedError

    def owner_of(self, scope: str, value: str) -> str | None:
        for aggregate in self.aggregates.values():
            if aggregate.unique_values().get(scope) == value:
                return aggregate.key
        return None

    def hash_of(self, user_id: str) -> str | None:
        return self.hashes.get(user_id)

    async def run(self, decide: Any, context: CommandContext, fences: Any = ()) -> Any:
        log: Aggregates = self
        decision: Decision[Any] = decide(log)
        for aggregate in decision.save:
            self.events += [(aggregate.id, type(e).__name__) for e in aggregate.collect_events()]
            self.aggregates[aggregate.id] = aggregate
        for fence in fences:
            cursor = Cursor()
            fence.check(cursor)
            [(sql, params)] = cursor.statements
            if sql.startswith("DELETE"):
                self.hashes.pop(params[0], None)
            else:
                self.hashes[params[0]] = params[1]
        return decision.result


async def _inline(fn: Any, *args: Any) -> Any:
    return fn(*args)


@pytest.fixture
def log() -> MemoryLog:
    return MemoryLog()


@pytest.fixture
def commands(log: MemoryLog) -> IdentityCommands:
    ids = iter(f"id-{n}" for n in range(1, 100))
    return IdentityCommands(
        log, log, PlainHasher(), log, log.owner_of, _inline, "Admin@Admin.com", new_id=lambda: next(ids)  # type: ignore[arg-type]
    )


CTX = CommandContext(actor="test")


def _stored(log: MemoryLog, cls: type[Any], key: str) -> Any:
    return log.aggregates[cls.stream_id(key)]


async def test_a_registration_gets_none_on_server_and_the_admin_manage(commands: IdentityCommands, log: MemoryLog):
    jane = await commands.register(Profile("jane@x.io", "Jane"), "pw", CTX)
    admin = await commands.register(Profile("ADMIN@admin.com"), "pw", CTX)
    levels = {
        entry.identity: (entry.resource, entry.resource_type, entry.permission)
        for entry in log.aggregates.values()
        if isinstance(entry, AccessEntry)
    }
    assert levels == {jane: ("server", "system", Permission.NONE), admin: ("server", "system", Permission.MANAGE)}
    assert _stored(log, User, jane).entries == [e.key for e in log.aggregates.values() if isinstance(e, AccessEntry) and e.identity == jane]
    assert log.hashes == {jane: "hashed:wp", admin: "hashed:wp"}
    with pytest.raises(Conflict, match="user already exists.*unique constraint violation"):
        await commands.register(Profile("Jane@X.io"), "other", CTX)


async def test_an_empty_password_stores_no_credential_and_disables_sign_in(commands: IdentityCommands, log: MemoryLog):
    user_id = await commands.register(Profile("nopw@x.io"), "", CTX)
    assert log.hashes == {}
    with pytest.raises(Unauthorized, match="direct login for this user is disabled"):
        await commands.sign_in("nopw@x.io", "", CTX)
    assert log.events[-1] == (User.stream_id(user_id), "SignInFailed")


async def test_sign_ins_are_told_apart_and_each_recorded(commands: IdentityCommands, log: MemoryLog):
    user_id = await commands.register(Profile("jane@x.io"), "secret", CTX)
    assert await commands.sign_in("JANE@x.io", "secret", CTX) == user_id
    assert log.events[-1] == (User.stream_id(user_id), "SignedIn")
    with pytest.raises(Unauthorized, match="^invalid credentials$"):
        await commands.sign_in("jane@x.io", "Secret", CTX)
    assert log.events[-1] == (User.stream_id(user_id), "SignInFailed")
    with pytest.raises(Unauthorized, match="libdb: not found"):
        await commands.sign_in("nobody@x.io", "secret", CTX)
    stream, name = log.events[-1]
    assert stream.startswith("sign_in:") and name == "Refused"


async def test_a_user_update_changes_what_is_given_and_rehashes_a_password(commands: IdentityCommands, log: MemoryLog):
    user_id = await commands.register(Profile("jane@x.io", "Jane"), "old", CTX)
    await commands.update_user(user_id, "", "Janet", "", CTX)
    assert (_stored(log, User, user_id).email, _stored(log, User, user_id).friendly_name) == ("jane@x.io", "Janet")
    assert log.hashes[user_id] == "hashed:dlo"
    await commands.update_user(user_id, "", "", "new", CTX)
    assert log.hashes[user_id] == "hashed:wen"
    other = await commands.register(Profile("bob@x.io"), "", CTX)
    with pytest.raises(Conflict, match="unique constraint violation"):
        await commands.update_user(other, "JANE@X.IO", "", "", CTX)
    with pytest.raises(NotFound):
        await commands.update_user("nobody", "", "x", "", CTX)


async def test_deleting_a_user_revokes_its_entries_and_forgets_its_password(commands: IdentityCommands, log: MemoryLog):
    user_id = await commands.register(Profile("jane@x.io"), "pw", CTX)
    extra = await commands.grant(EntrySpec(user_id, "chatservice", "system", Permission.VIEW), CTX)
    await commands.delete_user(user_id, CTX)
    entries = [e for e in log.aggregates.values() if isinstance(e, AccessEntry)]
    assert len(entries) == 2 and all(e.revoked for e in entries) and extra in {e.key for e in entries}
    assert log.hashes == {}
    with pytest.raises(NotFound):
        await commands.delete_user(user_id, CTX)
    with pytest.raises(Unauthorized, match="libdb: not found"):
        await commands.sign_in("jane@x.io", "pw", CTX)
    # The e-mail is free again.
    await commands.register(Profile("jane@x.io"), "pw", CTX)


async def test_an_entry_must_name_a_user_and_moves_with_its_identity(commands: IdentityCommands, log: MemoryLog):
    with pytest.raises(Conflict, match="libdb: foreign key violation"):
        await commands.grant(EntrySpec("nobody", "server", "system", Permission.VIEW), CTX)
    jane = await commands.register(Profile("jane@x.io"), "", CTX)
    bob = await commands.register(Profile("bob@x.io"), "", CTX)
    entry = await commands.grant(EntrySpec(jane, "chatservice", "system", Permission.VIEW), CTX)
    assert entry in _stored(log, User, jane).entries
    await commands.change_entry(entry, EntrySpec(bob, "chatservice", "system", Permission.MANAGE), CTX)
    assert entry not in _stored(log, User, jane).entries and entry in _stored(log, User, bob).entries
    with pytest.raises(Conflict, match="foreign key violation"):
        await commands.change_entry(entry, EntrySpec("nobody", "chatservice", "system", Permission.MANAGE), CTX)
    with pytest.raises(NotFound):
        await commands.change_entry("no-entry", EntrySpec(bob, "x", "system", Permission.VIEW), CTX)
    await commands.revoke(entry, CTX)
    assert entry not in _stored(log, User, bob).entries
    with pytest.raises(NotFound):
        await commands.revoke(entry, CTX)


async def test_the_worker_account_is_seeded_once_and_its_password_kept_as_configured(
    commands: IdentityCommands, log: MemoryLog
):
    worker = WorkerAccount("worker-1", "worker@x.io", "pw")
    await commands.seed_worker(worker)
    entries = {e.key: (e.resource, e.resource_type, e.permission) for e in log.aggregates.values() if isinstance(e, AccessEntry)}
    assert entries == {
        "worker-11": ("server", "server", Permission.MANAGE),
        "worker-12": ("files", "system", Permission.VIEW),
    }
    assert _stored(log, User, "worker-1").friendly_name == "Internal Worker Account"
    written = len(log.events)
    await commands.seed_worker(worker)  # as it is: nothing written
    assert len(log.events) == written
    await commands.seed_worker(WorkerAccount("worker-1", "worker@x.io", "new"))
    assert log.events[written:] == [(User.stream_id("worker-1"), "Updated")]
    assert await commands.sign_in("worker@x.io", "new", CTX) == "worker-1"
    # Deleted by the admin: the next start brings it back, entries and all.
    await commands.delete_user("worker-1", CTX)
    await commands.seed_worker(worker)
    assert not _stored(log, User, "worker-1").deleted
    assert sorted(_stored(log, User, "worker-1").entries) == ["worker-11", "worker-12"]
    assert not any(e.revoked for e in log.aggregates.values() if isinstance(e, AccessEntry))
