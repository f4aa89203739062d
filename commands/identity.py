"""Commands of users, access entries and sign-ins.

A password is hashed (or a stored hash verified) in the thread pool before the
decision, never on the log writer's thread; the hash is written beside the log
in the transaction of the user's event (``infra.credentials.CredentialFence``),
and no event carries it. An entry's grant, change or revoke and its user's
bookkeeping (``User.attach`` / ``detach``) are saved together, and so are a
user's deletion and the revocation of its entries.

Every registration gets one entry on ``server`` (type ``system``): ``manage``
for the configured admin e-mail, ``none`` for anyone else (platform notes §2.6).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chainloom.commands.base import SYSTEM, Aggregates, CommandContext, CommandRunner, Decision
from chainloom.domain.errors import Conflict, NotFound, Unauthorized
from chainloom.domain.identity import (
    INVALID_CREDENTIALS,
    LOGIN_DISABLED,
    NOT_FOUND,
    SERVER,
    SYSTEM as SYSTEM_RESOURCE_TYPE,
    AccessEntry,
    EntrySpec,
    Permission,
    Profile,
    SignIn,
    User,
    normal_email,
)
from chainloom.domain.uniqueness import USER_EMAIL
from chainloom.infra.credentials import CredentialFence
from chainloom.infra.eventlog import Fence

RunBlocking = Callable[..., Awaitable[Any]]
WORKER_NAME = "Internal Worker Account"


class PasswordHasher(Protocol):
    """``infra.passwords.Passwords``: slow on purpose (run in the thread pool)."""

    def hash(self, password: str) -> str: ...

    def verify(self, encoded: str, password: str) -> bool: ...


class CredentialStore(Protocol):
    """``infra.credentials.Credentials`` (blocking)."""

    def hash_of(self, user_id: str) -> str | None: ...


@dataclass(frozen=True)
class WorkerAccount:
    """The account the document worker signs in with, from configuration (its id is also its subject)."""

    account_id: str
    email: str
    password: str


def _user(log: Aggregates, user_id: str) -> User:
    user = log.get(User, user_id)
    if user is None or user.deleted:
        raise NotFound(NOT_FOUND)
    return user


def _entry(log: Aggregates, entry_id: str) -> AccessEntry:
    entry = log.get(AccessEntry, entry_id)
    if entry is None or entry.revoked:
        raise NotFound(NOT_FOUND)
    return entry


def _identity(log: Aggregates, identity: str) -> User:
    """The user an entry is to name: one that does not exist is a dangling reference (409)."""
    user = log.get(User, identity)
    if user is None or user.deleted:
        raise Conflict(f"libdb: foreign key violation: identity '{identity}' does not exist")
    return user


def _email_free(log: Aggregates, email: str, user_id: str) -> None:
    holder = log.owner_of(USER_EMAIL, normal_email(email))
    if holder and holder != user_id:
        raise Conflict(f"user already exists: libdb: unique constraint violation: e-mail '{email}' is taken")


class IdentityCommands:
    def __init__(
        self,
        runner: CommandRunner,
        sign_ins: CommandRunner,
        passwords: PasswordHasher,
        credentials: CredentialStore,
        owner_of: Callable[[str, str], str | None],
        run_blocking: RunBlocking,
        admin_email: str,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        """``runner`` waits for the identity read model; ``sign_ins`` (whose records no read model shows) does
        not. ``owner_of``: the index of unique values (``infra.eventlog.EventLog.owner_of``, blocking)."""
        self._runner = runner
        self._sign_ins = sign_ins
        self._passwords = passwords
        self._credentials = credentials
        self._owner_of = owner_of
        self._run_blocking = run_blocking
        self._admin_email = normal_email(admin_email)
        self._new_id = new_id

    async def _credential(self, user_id: str, password: str) -> list[Fence]:
        """What to write beside the user's event for ``password`` ("": nothing)."""
        if not password:
            return []
        return [CredentialFence(user_id, await self._run_blocking(self._passwords.hash, password))]

    # -- users -------------------------------------------------------------------------

    async def register(self, profile: Profile, password: str, ctx: CommandContext) -> str:
        """Register a user with the bootstrap entry on ``server``; its id. An empty password: no direct sign-in."""
        level = Permission.MANAGE if normal_email(profile.email) == self._admin_email else Permission.NONE
        return await self._create(profile, password, [EntrySpec("", SERVER, SYSTEM_RESOURCE_TYPE, level)], ctx)

    async def create_user(self, profile: Profile, password: str, entries: Sequence[EntrySpec], ctx: CommandContext) -> str:
        """Create a user with one entry per ``entries`` (their identity is the new user's); its id."""
        return await self._create(profile, password, entries, ctx)

    async def _create(self, profile: Profile, password: str, entries: Sequence[EntrySpec], ctx: CommandContext) -> str:
        profile.validate()
        user_id = self._new_id()
        specs = [EntrySpec(user_id, e.resource, e.resource_type, e.permission) for e in entries]
        for spec in specs:
            spec.validate()
        entry_ids = [self._new_id() for _ in specs]
        fences = await self._credential(user_id, password)

        def decide(log: Aggregates) -> Decision[str]:
            user = User.register(user_id, profile)
            _email_free(log, profile.email, user_id)
            granted = [AccessEntry.grant(entry_id, spec) for entry_id, spec in zip(entry_ids, specs)]
            for entry in granted:
                user.attach(entry.key)
            return Decision(user_id, [user, *granted])

        return await self._runner.run(decide, ctx, fences)

    async def update_user(
        self, user_id: str, email: str, friendly_name: str, password: str, ctx: CommandContext
    ) -> None:
        """Change what is given (an empty field stays as it is); a password is hashed anew."""
        fences = await self._credential(user_id, password)

        def decide(log: Aggregates) -> Decision[None]:
            user = _user(log, user_id)
            profile = Profile(email or user.email, friendly_name or user.friendly_name)
            user.update(profile, password_changed=bool(password))
            _email_free(log, profile.email, user_id)
            return Decision(None, [user])

        await self._runner.run(decide, ctx, fences)

    async def delete_user(self, user_id: str, ctx: CommandContext) -> None:
        """Delete the user, revoke its entries and forget its password."""

        def decide(log: Aggregates) -> Decision[None]:
            user = _user(log, user_id)
            entries = [log.get(AccessEntry, entry_id) for entry_id in user.entries]
            revoked = [entry for entry in entries if entry is not None and not entry.revoked]
            for entry in revoked:
                entry.revoke()
            user.delete()
            return Decision(None, [*revoked, user])

        await self._runner.run(decide, ctx, [CredentialFence(user_id, None)])

    # -- access entries ----------------------------------------------------------------

    async def grant(self, spec: EntrySpec, ctx: CommandContext) -> str:
        """Grant an existing user (else 409) an entry; its id."""
        spec.validate()
        entry_id = self._new_id()

        def decide(log: Aggregates) -> Decision[str]:
            entry = AccessEntry.grant(entry_id, spec)
            user = _identity(log, spec.identity)
            user.attach(entry_id)
            return Decision(entry_id, [entry, user])

        return await self._runner.run(decide, ctx)

    async def change_entry(self, entry_id: str, spec: EntrySpec, ctx: CommandContext) -> None:
        """Replace the entry whole (the path's id wins); moving it to another user moves its attachment too."""
        spec.validate()

        def decide(log: Aggregates) -> Decision[None]:
            entry = _entry(log, entry_id)
            before = entry.identity
            entry.change(spec)
            if before == spec.identity:
                _identity(log, spec.identity)
                return Decision(None, [entry])
            now_names = _identity(log, spec.identity)
            now_names.attach(entry_id)
            named = log.get(User, before)
            if named is None:
                return Decision(None, [entry, now_names])
            named.detach(entry_id)
            return Decision(None, [entry, named, now_names])

        await self._runner.run(decide, ctx)

    async def revoke(self, entry_id: str, ctx: CommandContext) -> None:
        def decide(log: Aggregates) -> Decision[None]:
            entry = _entry(log, entry_id)
            entry.revoke()
            user = log.get(User, entry.identity)
            if user is None:
                return Decision(None, [entry])
            user.detach(entry_id)
            return Decision(None, [entry, user])

        await self._runner.run(decide, ctx)

    # -- sign-in -----------------------------------------------------------------------

    async def sign_in(self, email: str, password: str, ctx: CommandContext) -> str:
        """The id of the user ``email`` and ``password`` prove; ``Unauthorized`` with the reference's message
        otherwise. Either way the attempt is recorded (never what was typed as a password)."""
        Profile(email).validate()  # an e-mail no user could have is not recorded (nor a megabyte of one)
        user_id = await self._run_blocking(self._owner_of, USER_EMAIL, normal_email(email))
        if user_id is None:
            await self._sign_ins.run(lambda log: Decision(None, [SignIn.refuse(self._new_id(), email)]), ctx)
            raise Unauthorized(f"login failed: {NOT_FOUND}")
        stored = await self._run_blocking(self._credentials.hash_of, user_id)
        if stored is None:
            await self._record(user_id, LOGIN_DISABLED, ctx)
            raise Unauthorized(LOGIN_DISABLED)
        if not await self._run_blocking(self._passwords.verify, stored, password):
            await self._record(user_id, INVALID_CREDENTIALS, ctx)
            raise Unauthorized(INVALID_CREDENTIALS)
        await self._record(user_id, None, ctx)
        return user_id

    async def _record(self, user_id: str, failure: str | None, ctx: CommandContext) -> None:
        """Record a sign-in as ``user_id`` (``failure``: why it was refused, None: it succeeded)."""

        def decide(log: Aggregates) -> Decision[None]:
            user = log.get(User, user_id)
            if user is None or user.deleted:  # deleted since its e-mail was looked up
                raise Unauthorized(f"login failed: {NOT_FOUND}")
            if failure is None:
                user.signed_in()
            else:
                user.sign_in_failed(failure)
            return Decision(None, [user])

        await self._sign_ins.run(decide, ctx)

    async def ensure_user(self, user_id: str, profile: Profile, ctx: CommandContext) -> bool:
        """Make the user ``user_id`` exist — without a password or entries — unless it does (the Telegram users
        a bot meets: ``projections.telegram_bots``); True when it was created now."""
        profile.validate()

        def decide(log: Aggregates) -> Decision[bool]:
            user = log.get(User, user_id)
            if user is not None and not user.deleted:
                return Decision(False, [])
            if user is None:
                user = User.register(user_id, profile)
            else:
                user.recreate(profile)
            _email_free(log, profile.email, user_id)
            return Decision(True, [user])

        return await self._runner.run(decide, ctx)

    # -- start-up ----------------------------------------------------------------------

    async def seed_worker(self, account: WorkerAccount) -> None:
        """Make the configured worker account exist, with its two entries, and sign in with the configured
        password (idempotent: nothing is written when it does; an existing account's entries are left as the
        admin made them). Its entries are ``<id>1`` (``server``/``server``/manage) and ``<id>2``
        (``files``/``system``/view)."""
        user_id = account.account_id
        stored = await self._run_blocking(self._credentials.hash_of, user_id)
        password_holds = stored is not None and await self._run_blocking(self._passwords.verify, stored, account.password)
        fences = [] if password_holds else await self._credential(user_id, account.password)
        profile = Profile(account.email, WORKER_NAME)
        entries = {
            f"{user_id}1": EntrySpec(user_id, SERVER, "server", Permission.MANAGE),
            f"{user_id}2": EntrySpec(user_id, "files", SYSTEM_RESOURCE_TYPE, Permission.VIEW),
        }

        def decide(log: Aggregates) -> Decision[None]:
            user = log.get(User, user_id)
            if user is not None and not user.deleted:
                if user.email == account.email and password_holds:
                    return Decision(None, [])
                user.update(Profile(account.email, user.friendly_name), password_changed=not password_holds)
                _email_free(log, account.email, user_id)
                return Decision(None, [user])
            if user is None:
                user = User.register(user_id, profile)
            else:
                user.recreate(profile)
            _email_free(log, account.email, user_id)
            save: list[Any] = [user]
            for entry_id, spec in entries.items():
                entry = log.get(AccessEntry, entry_id)
                if entry is not None and not entry.revoked:
                    continue  # given to another identity by the admin meanwhile: theirs now
                if entry is None:
                    entry = AccessEntry.grant(entry_id, spec)
                else:
                    entry.regrant(spec)
                user.attach(entry_id)
                save.append(entry)
            return Decision(None, save)

        await self._runner.run(decide, SYSTEM, fences)
