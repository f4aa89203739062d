"""Users, their access entries and sign-ins, as data on the log — without a secret in any of it.

A user (aggregate ``user``, key = its id, a UUIDv4; its subject is its id) holds
an e-mail, unique across users compared lower-cased (``user.email`` in the
index of unique values), and a friendly name. Its password is never here: a
hash of it lives in the credentials table beside the log, written in the
transaction that appends the user's event (``infra.credentials``); the events
say only that a password was set (``passwordChanged``).

An access entry (aggregate ``access``, key = its id) grants an identity (a
user's subject) a permission level on a resource. The identity must be a user
that exists, and deleting a user revokes its entries: with no read model to ask,
the user keeps the ids of its entries (``AccessAttached`` / ``AccessDetached``,
saved in the decision that changes the entry), so an entry's grant and its
user's deletion change one aggregate and neither slips past the other (as
``domain.functions`` does for triggers).

Sign-ins are recorded for the audit trail: ``user.signed_in`` and
``user.sign_in_failed`` (the reason, never what was typed), and
``sign_in.refused`` for an e-mail no user has (aggregate ``sign_in``, one per
attempt).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate
from chainloom.domain.errors import BadRequest, Conflict, NotFound, Unprocessable
from chainloom.domain.storable import check_storable
from chainloom.domain.uniqueness import USER_EMAIL

NOT_FOUND = "libdb: not found"
# E-mails, identities, resources and resource types are indexed (and an e-mail is a unique value): keep them bounded.
MAX_TEXT_BYTES = 1024
# The resource every registered user gets an entry on (manage for the admin, none for anyone else).
SERVER = "server"
SYSTEM = "system"
# What a sign-in that failed records (the reference's messages, which clients match on).
INVALID_CREDENTIALS = "invalid credentials"
LOGIN_DISABLED = "direct login for this user is disabled"


class Permission(IntEnum):
    """Levels, ordered: an entry satisfies a requirement when its level is at least the one required."""

    NONE = 0
    VIEW = 1
    EDIT = 2
    MANAGE = 3

    @classmethod
    def parse(cls, text: str) -> Permission:
        """``"Manage"`` → ``MANAGE`` (case-insensitive); anything else is refused (422)."""
        try:
            return cls[text.upper()]
        except KeyError:
            raise Unprocessable("invalid permission string", param="permission") from None

    @property
    def label(self) -> str:
        """The name the API answers (``manage``)."""
        return self.name.lower()


PERMISSION_LABELS = tuple(level.label for level in Permission)


@dataclass(frozen=True)
class Grant:
    """An access entry as a token carries it (and as authorization reads it); times are RFC 3339."""

    id: str
    identity: str
    resource: str
    resource_type: str
    permission: Permission
    created_at: str
    updated_at: str

    def to_claim(self) -> dict[str, Any]:
        """The entry in a token's ``permissions`` claim (the level as an integer)."""
        return {
            "id": self.id,
            "identity": self.identity,
            "resource": self.resource,
            "resourceType": self.resource_type,
            "permission": int(self.permission),
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }

    @classmethod
    def from_claim(cls, claim: Mapping[str, Any]) -> Grant:
        """The entry a token carries; ``ValueError`` for anything but a claim ``to_claim`` could have made."""
        if not isinstance(claim, Mapping):
            raise ValueError("a permission is not an object")
        level = claim.get("permission")
        if type(level) is not int or not Permission.NONE <= level <= Permission.MANAGE:
            raise ValueError(f"permission {level!r} is not a level (0 to 3)")
        texts = {key: claim.get(key, "") for key in ("id", "identity", "resource", "resourceType", "createdAt", "updatedAt")}
        if not all(isinstance(value, str) for value in texts.values()):
            raise ValueError("a permission's fields must be strings")
        return cls(
            texts["id"],
            texts["identity"],
            texts["resource"],
            texts["resourceType"],
            Permission(level),
            texts["createdAt"],
            texts["updatedAt"],
        )


def _check_text(value: str, param: str, prefix: str) -> None:
    if len(value.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise Unprocessable(f"{prefix}: {param} is longer than {MAX_TEXT_BYTES} bytes", param=param)
    check_storable(value, param)


def normal_email(email: str) -> str:
    """What e-mails are compared by (unique, and at sign-in): lower-cased."""
    return email.lower()


@dataclass(frozen=True)
class Profile:
    """What a user is besides its password: the e-mail it signs in with and a name to show."""

    email: str
    friendly_name: str = ""

    def validate(self) -> None:
        if not self.email:
            raise Unprocessable("invalid user data: email is required", param="email")
        _check_text(self.email, "email", "invalid user data")
        _check_text(self.friendly_name, "friendlyName", "invalid user data")


@dataclass(frozen=True)
class EntrySpec:
    """What a client says about an access entry (the permission already parsed: an unknown one is a 422 first)."""

    identity: str
    resource: str
    resource_type: str
    permission: Permission

    def validate(self) -> None:
        """The reference's order after the permission: a resource type is required (400), then the values
        must be storable; the identity's existence is the decision's (409)."""
        if not self.resource_type:
            raise BadRequest("serverops: missing parameter: resourceType is required", param="resourceType")
        for param, value in (("identity", self.identity), ("resource", self.resource), ("resourceType", self.resource_type)):
            _check_text(value, param, "invalid access entry")

    def to_state(self) -> dict[str, str]:
        return {
            "identity": self.identity,
            "resource": self.resource,
            "resource_type": self.resource_type,
            "permission": self.permission.label,
        }


class User(Aggregate):
    aggregate_type = "user"

    class Registered(Aggregate.Created):
        email: str
        friendly_name: str

    class Recreated(Aggregate.Event):
        """Registered again under the id of a deleted user (the configured worker account)."""

        email: str
        friendly_name: str

    class Updated(Aggregate.Event):
        """The profile as it now is; ``password_changed``: a new password was set (its hash is not here)."""

        email: str
        friendly_name: str
        password_changed: bool

    class Deleted(Aggregate.Event):
        """Its entries are revoked in the same decision (each its own ``access.revoked``)."""

    class AccessAttached(Aggregate.Event):
        """An access entry now names this user."""

        entry: str

    class AccessDetached(Aggregate.Event):
        """An access entry no longer names this user (revoked, or given to another)."""

        entry: str

    class SignedIn(Aggregate.Event):
        """The user proved its password."""

    class SignInFailed(Aggregate.Event):
        """A sign-in as this user was refused: ``reason`` says why (never what was typed)."""

        reason: str

    @classmethod
    def register(cls, user_id: str, profile: Profile) -> User:
        profile.validate()
        return cls._create(cls.Registered, id=cls.stream_id(user_id), email=profile.email, friendly_name=profile.friendly_name)

    @event(Registered)
    def __init__(self, email: str, friendly_name: str) -> None:
        self._set(email, friendly_name)
        self.entries: list[str] = []
        self.deleted = False

    def unique_values(self) -> dict[str, str]:
        return {} if self.deleted else {USER_EMAIL: normal_email(self.email)}

    @property
    def profile(self) -> Profile:
        return Profile(self.email, self.friendly_name)

    def ensure_exists(self) -> None:
        if self.deleted:
            raise NotFound(NOT_FOUND)

    def recreate(self, profile: Profile) -> None:
        """Register again a user that was deleted (a live one: 409)."""
        if not self.deleted:
            raise Conflict(f"user already exists: libdb: unique constraint violation: user '{self.key}' exists")
        profile.validate()
        self._recreate(email=profile.email, friendly_name=profile.friendly_name)

    def update(self, profile: Profile, password_changed: bool) -> None:
        self.ensure_exists()
        profile.validate()
        self._update(email=profile.email, friendly_name=profile.friendly_name, password_changed=password_changed)

    def delete(self) -> None:
        """Delete the user; the caller revokes ``entries`` in the same decision."""
        self.ensure_exists()
        self._delete()

    def attach(self, entry: str) -> None:
        """Let an entry name this user: a user that does not exist is a dangling reference (409)."""
        if self.deleted:
            raise Conflict(f"libdb: foreign key violation: identity '{self.key}' does not exist")
        if entry not in self.entries:
            self._attach(entry=entry)

    def detach(self, entry: str) -> None:
        if entry in self.entries:
            self._detach(entry=entry)

    def signed_in(self) -> None:
        self.ensure_exists()
        self._signed_in()

    def sign_in_failed(self, reason: str) -> None:
        self.ensure_exists()
        self._sign_in_failed(reason=reason)

    @event(Recreated)
    def _recreate(self, email: str, friendly_name: str) -> None:
        self._set(email, friendly_name)
        self.entries = []
        self.deleted = False

    @event(Updated)
    def _update(self, email: str, friendly_name: str, password_changed: bool) -> None:
        self._set(email, friendly_name)

    @event(Deleted)
    def _delete(self) -> None:
        self.entries = []
        self.deleted = True

    @event(AccessAttached)
    def _attach(self, entry: str) -> None:
        self.entries = [*self.entries, entry]

    @event(AccessDetached)
    def _detach(self, entry: str) -> None:
        self.entries = [kept for kept in self.entries if kept != entry]

    @event(SignedIn)
    def _signed_in(self) -> None:
        pass

    @event(SignInFailed)
    def _sign_in_failed(self, reason: str) -> None:
        pass

    def _set(self, email: str, friendly_name: str) -> None:
        self.email = email
        self.friendly_name = friendly_name


class AccessEntry(Aggregate):
    aggregate_type = "access"

    class Granted(Aggregate.Created):
        identity: str
        resource: str
        resource_type: str
        permission: str

    class Regranted(Aggregate.Event):
        """Granted again under the id of a revoked entry (the configured worker account's)."""

        identity: str
        resource: str
        resource_type: str
        permission: str

    class Changed(Aggregate.Event):
        """The entry replaced whole (identity, resource, resource type, permission)."""

        identity: str
        resource: str
        resource_type: str
        permission: str

    class Revoked(Aggregate.Event):
        """Revoked itself, or with its user."""

    @classmethod
    def grant(cls, entry_id: str, spec: EntrySpec) -> AccessEntry:
        spec.validate()
        return cls._create(cls.Granted, id=cls.stream_id(entry_id), **spec.to_state())

    @event(Granted)
    def __init__(self, identity: str, resource: str, resource_type: str, permission: str) -> None:
        self._set(identity, resource, resource_type, permission)
        self.revoked = False

    @property
    def spec(self) -> EntrySpec:
        return EntrySpec(self.identity, self.resource, self.resource_type, self.permission)

    def ensure_exists(self) -> None:
        if self.revoked:
            raise NotFound(NOT_FOUND)

    def regrant(self, spec: EntrySpec) -> None:
        """Grant again an entry that was revoked, under its id (a live one: 409)."""
        if not self.revoked:
            raise Conflict(f"libdb: unique constraint violation: access entry '{self.key}' already exists")
        spec.validate()
        self._regrant(**spec.to_state())

    def change(self, spec: EntrySpec) -> None:
        self.ensure_exists()
        spec.validate()
        self._change(**spec.to_state())

    def revoke(self) -> None:
        self.ensure_exists()
        self._revoke()

    @event(Regranted)
    def _regrant(self, identity: str, resource: str, resource_type: str, permission: str) -> None:
        self._set(identity, resource, resource_type, permission)
        self.revoked = False

    @event(Changed)
    def _change(self, identity: str, resource: str, resource_type: str, permission: str) -> None:
        self._set(identity, resource, resource_type, permission)

    @event(Revoked)
    def _revoke(self) -> None:
        self.revoked = True

    def _set(self, identity: str, resource: str, resource_type: str, permission: str) -> None:
        self.identity = identity
        self.resource = resource
        self.resource_type = resource_type
        # Events carry the level's name (readable on Kafka); a stored name always parses.
        self.permission = Permission[permission.upper()]


class SignIn(Aggregate):
    """A sign-in attempt with an e-mail no user has: one aggregate per attempt, for the audit trail."""

    aggregate_type = "sign_in"

    class Refused(Aggregate.Created):
        email: str

    @classmethod
    def refuse(cls, attempt_id: str, email: str) -> SignIn:
        return cls._create(cls.Refused, id=cls.stream_id(attempt_id), email=email)

    @event(Refused)
    def __init__(self, email: str) -> None:
        self.email = email
