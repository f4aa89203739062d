"""Files and folders as data on the log: a tree of names, each file pointing at its content by hash.

A file (aggregate ``file``, key = a UUIDv4) records its name, its parent folder
(``""``: the root), and its content as the blob store keeps it — sha256 hash,
size and sniffed content type (``domain.content_types``). The bytes never reach
the log: the blob store (``infra.blobs``) holds them, addressed by their hash.

A folder (aggregate ``folder``, key = a UUIDv4) records its name and parent, and
the ids of its children (``ChildAttached`` / ``ChildDetached``, saved in the
decision that creates, moves or deletes the child), so deleting a folder walks
aggregates down the tree in one decision, without a read model that may lag
(as ``domain.functions`` keeps a function's triggers).

Names are unique within a folder across files and folders: each live node holds
the value ``<parentId>:<name>`` of scope ``node.name`` in the index of unique
values (``domain.uniqueness``), so two concurrent creates of one name cannot
both be stored. A file's name may not contain ``/`` when it is created; a
rename may give it one, and a folder's name may always have one (the path then
shows it verbatim, platform notes §6.1).

Every change a worker must see again — a file created, its content replaced,
renamed or moved — enqueues a vectorize job in the same decision; the file's
event names it (``jobId``) and the file keeps the ids, so its deletion purges
those still open in its own decision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate
from chainloom.domain.content_types import ensure_allowed
from chainloom.domain.errors import BadRequest, Conflict, NotFound, Unprocessable
from chainloom.domain.storable import check_storable

NOT_FOUND = "libdb: not found"
# The scope of a node's name in the index of unique values: ``<parentId>:<name>``.
NODE_NAME = "node.name"
ROOT = ""
# A name is part of an indexed unique value and of every path below it: keep it bounded.
MAX_NAME_BYTES = 1024
MISSING_NAME = "missing 'name' in request body"
SLASH_IN_FILENAME = "filename is not allowed to contain /"
EMPTY_FILE = "serverops: file cannot be empty"
SELF_MOVE = "cannot move a folder into itself"
LIMIT_REACHED = "file limit reached"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def node_name(parent_id: str, name: str) -> str:
    """The unique value a node named ``name`` in folder ``parent_id`` holds (scope ``node.name``)."""
    return f"{parent_id}:{name}"


def check_name(name: str, *, slash_allowed: bool) -> None:
    """A name a node may have: not empty, no ``/`` unless allowed, bounded, storable (422 otherwise)."""
    if not name:
        raise Unprocessable(MISSING_NAME, param="name")
    if not slash_allowed and "/" in name:
        raise Unprocessable(SLASH_IN_FILENAME, param="name")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise Unprocessable(f"invalid name: longer than {MAX_NAME_BYTES} bytes", param="name")
    check_storable(name, "name")


def name_taken(name: str) -> Conflict:
    """A node named ``name`` already lives in the folder (409)."""
    return Conflict(f"libdb: unique constraint violation: an item named '{name}' already exists in the folder")


def name_taken_in_target(name: str) -> Conflict:
    """Moving would put two nodes named ``name`` in the target folder (409)."""
    return Conflict(f"an item named '{name}' already exists in the target folder")


def limit_reached(limit: int) -> Unprocessable:
    return Unprocessable(f"{LIMIT_REACHED}: at most {limit} files and folders")


def check_move_target(folder_id: str, target_id: str, target_ancestors: list[str]) -> None:
    """Refuse (400) moving folder ``folder_id`` into itself, or into a folder below it (``target_ancestors``:
    the ids of the folders above the target, up to the root)."""
    if target_id == folder_id:
        raise BadRequest(f"{SELF_MOVE}: folder {folder_id}", param="newParentId")
    if folder_id in target_ancestors:
        raise BadRequest(
            f"cannot move folder {folder_id} into itself or one of its subfolders (target {target_id})",
            param="newParentId",
        )


@dataclass(frozen=True)
class Content:
    """A file's content as the blob store holds it: its sha256 (hex), size in bytes and sniffed type."""

    hash: str
    size: int
    content_type: str

    def validate(self) -> None:
        if self.size <= 0:
            raise BadRequest(EMPTY_FILE, param="file")
        if not _SHA256.match(self.hash):
            raise Unprocessable(f"invalid content hash {self.hash!r}: expected sha256 in hex")
        ensure_allowed(self.content_type)


class _TreeNode(Aggregate):
    """What files and folders share: a name unique in its folder while the node lives."""

    name: str
    parent_id: str
    deleted: bool

    def unique_values(self) -> dict[str, str]:
        return {} if self.deleted else {NODE_NAME: node_name(self.parent_id, self.name)}

    def ensure_exists(self) -> None:
        if self.deleted:
            raise NotFound(NOT_FOUND)


class File(_TreeNode):
    aggregate_type = "file"

    class Created(Aggregate.Created):
        name: str
        parent_id: str
        content_type: str
        size: int
        hash: str
        job_id: str

    class ContentReplaced(Aggregate.Event):
        content_type: str
        size: int
        hash: str
        job_id: str

    class Renamed(Aggregate.Event):
        name: str
        job_id: str

    class Moved(Aggregate.Event):
        parent_id: str
        job_id: str

    class Deleted(Aggregate.Event):
        """Its content's hash, for whoever keeps blobs; its open jobs, chunks and entries go in the same decision."""

        hash: str

    @classmethod
    def create(cls, file_id: str, name: str, parent_id: str, content: Content, job_id: str) -> File:
        check_name(name, slash_allowed=False)
        content.validate()
        return cls._create(
            cls.Created,
            id=cls.stream_id(file_id),
            name=name,
            parent_id=parent_id,
            content_type=content.content_type,
            size=content.size,
            hash=content.hash,
            job_id=job_id,
        )

    @event(Created)
    def __init__(self, name: str, parent_id: str, content_type: str, size: int, hash: str, job_id: str) -> None:
        self.name = name
        self.parent_id = parent_id
        self.content = Content(hash, size, content_type)
        self.job_ids: list[str] = [job_id]
        self.deleted = False

    def replace_content(self, content: Content, job_id: str) -> None:
        self.ensure_exists()
        content.validate()
        self._replace_content(content_type=content.content_type, size=content.size, hash=content.hash, job_id=job_id)

    def rename(self, name: str, job_id: str) -> None:
        """A new name (``/`` allowed here); the caller has checked it is free in the folder."""
        self.ensure_exists()
        check_name(name, slash_allowed=True)
        self._rename(name=name, job_id=job_id)

    def move(self, parent_id: str, job_id: str) -> None:
        """Into folder ``parent_id`` (the caller has checked it exists and the name is free there)."""
        self.ensure_exists()
        self._move(parent_id=parent_id, job_id=job_id)

    def delete(self) -> None:
        self.ensure_exists()
        self._delete(hash=self.content.hash)

    @event(ContentReplaced)
    def _replace_content(self, content_type: str, size: int, hash: str, job_id: str) -> None:
        self.content = Content(hash, size, content_type)
        self.job_ids = [*self.job_ids, job_id]

    @event(Renamed)
    def _rename(self, name: str, job_id: str) -> None:
        self.name = name
        self.job_ids = [*self.job_ids, job_id]

    @event(Moved)
    def _move(self, parent_id: str, job_id: str) -> None:
        self.parent_id = parent_id
        self.job_ids = [*self.job_ids, job_id]

    @event(Deleted)
    def _delete(self, hash: str) -> None:
        self.deleted = True


class Folder(_TreeNode):
    aggregate_type = "folder"

    class Created(Aggregate.Created):
        name: str
        parent_id: str

    class Renamed(Aggregate.Event):
        name: str

    class Moved(Aggregate.Event):
        parent_id: str

    class Deleted(Aggregate.Event):
        """Deleted with everything below it (each its own deletion, in the same decision)."""

    class ChildAttached(Aggregate.Event):
        """A file or folder is now in this folder."""

        child_id: str

    class ChildDetached(Aggregate.Event):
        """A file or folder is no longer in this folder (moved out, or deleted)."""

        child_id: str

    @classmethod
    def create(cls, folder_id: str, name: str, parent_id: str) -> Folder:
        check_name(name, slash_allowed=True)
        return cls._create(cls.Created, id=cls.stream_id(folder_id), name=name, parent_id=parent_id)

    @event(Created)
    def __init__(self, name: str, parent_id: str) -> None:
        self.name = name
        self.parent_id = parent_id
        self.children: list[str] = []
        self.deleted = False

    def rename(self, name: str) -> None:
        self.ensure_exists()
        check_name(name, slash_allowed=True)
        self._rename(name=name)

    def move(self, parent_id: str) -> None:
        self.ensure_exists()
        self._move(parent_id=parent_id)

    def delete(self) -> None:
        """Delete the folder; the caller deletes its ``children`` in the same decision."""
        self.ensure_exists()
        self._delete()

    def attach(self, child_id: str) -> None:
        """Let a node live in this folder: a folder deleted meanwhile cannot take it (404)."""
        self.ensure_exists()
        if child_id not in self.children:
            self._attach(child_id=child_id)

    def detach(self, child_id: str) -> None:
        if child_id in self.children and not self.deleted:
            self._detach(child_id=child_id)

    @event(Renamed)
    def _rename(self, name: str) -> None:
        self.name = name

    @event(Moved)
    def _move(self, parent_id: str) -> None:
        self.parent_id = parent_id

    @event(Deleted)
    def _delete(self) -> None:
        self.deleted = True

    @event(ChildAttached)
    def _attach(self, child_id: str) -> None:
        self.children = [*self.children, child_id]

    @event(ChildDetached)
    def _detach(self, child_id: str) -> None:
        self.children = [kept for kept in self.children if kept != child_id]
