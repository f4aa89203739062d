"""Commands of files and folders: create, replace, rename, move, delete — each one decision on the log.

The content is in the blob store before a command runs (the web layer streams
an upload into it); a command records its hash, size and type. In the same
decision as the file's event:

- a change a worker must see (created, content replaced, renamed, moved)
  enqueues a vectorize job (``domain.jobs.vectorize_job``), so ``GET
  /jobs/pending`` right after the answer lists it;
- a new file or folder gets an access entry giving its creator ``manage`` on it,
  when the caller is a user (with the API key, or security off, there is none);
- a deletion purges the file's open jobs, clears its indexed chunks
  (``domain.file_chunks``) and revokes the access entries on it. Entries name a
  resource freely, so no aggregate knows them: their ids are read from the
  identity read model just before deciding, and each is revoked if it is still
  live and still on a deleted node.

Deleting a folder deletes everything below it, walking the folders' children
(aggregates, not a read model). Once a deletion (or a replaced content) is
stored and projected, each freed hash that no live file names any more is
removed from the blob store (``infra.blobs`` says which race its grace period
guards against).

Creating counts the nodes in the read model first (``file_limit``, 50 000 by
default): a count, not a reservation, so concurrent creates may pass it by a few.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from chainloom.commands.base import Aggregates, CommandContext, CommandRunner, Decision
from chainloom.domain.base import Aggregate
from chainloom.domain.documents import (
    NODE_NAME,
    NOT_FOUND,
    ROOT,
    Content,
    File,
    Folder,
    check_move_target,
    check_name,
    limit_reached,
    name_taken,
    name_taken_in_target,
    node_name,
)
from chainloom.domain.errors import Conflict, NotFound, Unprocessable
from chainloom.domain.file_chunks import FileChunks
from chainloom.domain.identity import AccessEntry, EntrySpec, Permission, User
from chainloom.domain.jobs import Job, vectorize_job
from chainloom.infra.blobs import REMOVAL_GRACE, BlobStore
from chainloom.queries.files import FileQueries

logger = logging.getLogger(__name__)

A = TypeVar("A", bound=Aggregate)
# The resource type of the entries on files and folders.
FILES = "files"


class _Loaded:
    """The aggregates one decision reads, each loaded once: one changed twice is one object, saved once."""

    def __init__(self, log: Aggregates) -> None:
        self.log = log
        self._kept: dict[str, Aggregate | None] = {}
        self._new: list[Aggregate] = []

    def get(self, aggregate_class: type[A], key: str) -> A | None:
        stream_id = aggregate_class.stream_id(key)
        if stream_id not in self._kept:
            self._kept[stream_id] = self.log.get(aggregate_class, key)
        found = self._kept[stream_id]
        assert found is None or isinstance(found, aggregate_class)
        return found

    def add(self, aggregate: Aggregate) -> None:
        self._kept[aggregate.id] = aggregate
        self._new.append(aggregate)

    def changed(self) -> list[Aggregate]:
        """What to save: the new aggregates and every loaded one with events pending."""
        new = {aggregate.id for aggregate in self._new}
        loaded = [a for a in self._kept.values() if a is not None and a.id not in new and a.pending_events]
        return [*self._new, *loaded]

    # -- the tree --------------------------------------------------------------------------

    def file(self, file_id: str) -> File:
        """A live file (404 otherwise)."""
        file = self.get(File, file_id)
        if file is None or file.deleted:
            raise NotFound(NOT_FOUND)
        return file

    def folder(self, folder_id: str) -> Folder:
        """A live folder; a file's id is 422 ``target is not a folder``, anything else 404."""
        folder = self.get(Folder, folder_id)
        if folder is not None and not folder.deleted:
            return folder
        file = self.get(File, folder_id)
        if file is not None and not file.deleted:
            raise Unprocessable("target is not a folder")
        raise NotFound(NOT_FOUND)

    def parent(self, parent_id: str, role: str) -> Folder | None:
        """The folder a node goes into (None: the root); ``role`` names it in the refusal."""
        if parent_id == ROOT:
            return None
        folder = self.get(Folder, parent_id)
        if folder is not None and not folder.deleted:
            return folder
        file = self.get(File, parent_id)
        if file is not None and not file.deleted:
            raise Unprocessable(f"{role} '{parent_id}' is not a folder", param="parentId")
        raise NotFound(f"{NOT_FOUND}: {role} '{parent_id}' does not exist", param="parentId")

    def ancestors(self, folder: Folder) -> list[str]:
        """The ids of the folders above ``folder``, nearest first, up to the root."""
        found: list[str] = []
        parent_id = folder.parent_id
        while parent_id != ROOT and parent_id not in found:
            found.append(parent_id)
            parent = self.get(Folder, parent_id)
            if parent is None:
                break
            parent_id = parent.parent_id
        return found

    def ensure_free(self, parent_id: str, name: str, owner: str, conflict: Conflict) -> None:
        holder = self.log.owner_of(NODE_NAME, node_name(parent_id, name))
        if holder and holder != owner:
            raise conflict

    # -- what goes with a node --------------------------------------------------------------

    def grant_creator(self, caller: str | None, entry_id: str, node_id: str) -> None:
        """``manage`` on the new node for the calling user (none for the API key, or a subject no user has)."""
        if not caller:
            return
        user = self.get(User, caller)
        if user is None or user.deleted:
            return
        entry = AccessEntry.grant(entry_id, EntrySpec(caller, node_id, FILES, Permission.MANAGE))
        user.attach(entry_id)
        self.add(entry)

    def delete_file(self, file: File) -> None:
        """Delete ``file`` with its open jobs and indexed chunks (its parent's bookkeeping is the caller's)."""
        file.delete()
        for job_id in file.job_ids:
            job = self.get(Job, job_id)
            if job is not None:
                job.purge()
        chunks = self.get(FileChunks, file.key)
        if chunks is not None and chunks.chunk_ids:
            chunks.clear()

    def revoke(self, entry_ids: list[str], resources: set[str]) -> None:
        """Revoke the entries (read before deciding) still live and still on one of ``resources``."""
        for entry_id in entry_ids:
            entry = self.get(AccessEntry, entry_id)
            if entry is None or entry.revoked or entry.resource not in resources:
                continue
            entry.revoke()
            user = self.get(User, entry.identity)
            if user is not None:
                user.detach(entry_id)


@dataclass
class _Deleted:
    """What a deletion freed: the content hashes of the deleted files."""

    hashes: list[str] = field(default_factory=list)


class FileCommands:
    def __init__(
        self,
        runner: CommandRunner,
        queries: FileQueries,
        blobs: BlobStore,
        file_limit: int,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        removal_grace: float = REMOVAL_GRACE,
    ) -> None:
        """``runner`` waits on the files, jobs and identity read models (the answers, the pending jobs, the
        creator's entry); ``blobs`` is where freed content is removed from."""
        self._runner = runner
        self._queries = queries
        self._blobs = blobs
        self._file_limit = file_limit
        self._new_id = new_id
        self._removal_grace = removal_grace

    async def check_capacity(self) -> None:
        """Refuse (422) a new node once there are ``file_limit`` (before an upload is streamed, and again when
        it is recorded)."""
        if await self._queries.count() >= self._file_limit:
            raise limit_reached(self._file_limit)

    # -- files -------------------------------------------------------------------------------

    async def create(self, name: str, parent_id: str, content: Content, caller: str | None, ctx: CommandContext) -> str:
        """A new file in folder ``parent_id`` (``""``: the root); its id."""
        check_name(name, slash_allowed=False)
        content.validate()
        await self.check_capacity()
        file_id, job_id, entry_id = self._new_id(), self._new_id(), self._new_id()

        def decide(log: Aggregates) -> Decision[str]:
            loaded = _Loaded(log)
            parent = loaded.parent(parent_id, "parent folder")
            loaded.ensure_free(parent_id, name, file_id, name_taken(name))
            file = File.create(file_id, name, parent_id, content, job_id)
            loaded.add(file)
            loaded.add(vectorize_job(job_id, file_id, content.content_type, "create"))
            if parent is not None:
                parent.attach(file_id)
            loaded.grant_creator(caller, entry_id, file_id)
            return Decision(file_id, loaded.changed())

        return await self._runner.run(decide, ctx)

    async def replace(self, file_id: str, content: Content, ctx: CommandContext) -> None:
        """New content for the file (its name and place kept)."""
        content.validate()
        job_id = self._new_id()

        def decide(log: Aggregates) -> Decision[str]:
            loaded = _Loaded(log)
            file = loaded.file(file_id)
            before = file.content.hash
            file.replace_content(content, job_id)
            loaded.add(vectorize_job(job_id, file_id, content.content_type, "update"))
            return Decision(before, loaded.changed())

        before = await self._runner.run(decide, ctx)
        if before != content.hash:
            await self._release([before])

    async def rename(self, file_id: str, name: str, ctx: CommandContext) -> None:
        check_name(name, slash_allowed=True)
        job_id = self._new_id()

        def decide(log: Aggregates) -> Decision[None]:
            loaded = _Loaded(log)
            file = loaded.get(File, file_id)
            if file is None and loaded.get(Folder, file_id) is not None:
                raise Unprocessable("target is a folder, not a file")
            file = loaded.file(file_id)
            loaded.ensure_free(file.parent_id, name, file_id, name_taken(name))
            file.rename(name, job_id)
            loaded.add(vectorize_job(job_id, file_id, file.content.content_type, "rename"))
            return Decision(None, loaded.changed())

        await self._runner.run(decide, ctx)

    async def move(self, file_id: str, new_parent_id: str, ctx: CommandContext) -> None:
        job_id = self._new_id()

        def decide(log: Aggregates) -> Decision[None]:
            loaded = _Loaded(log)
            file = loaded.file(file_id)
            target = loaded.parent(new_parent_id, "target folder")
            loaded.ensure_free(new_parent_id, file.name, file_id, name_taken_in_target(file.name))
            self._relink(loaded, file_id, file.parent_id, target)
            file.move(new_parent_id, job_id)
            loaded.add(vectorize_job(job_id, file_id, file.content.content_type, "move"))
            return Decision(None, loaded.changed())

        await self._runner.run(decide, ctx)

    async def delete(self, file_id: str, ctx: CommandContext) -> None:
        """Delete the file, its open jobs, chunks and access entries; then its content if no file shares it."""
        entry_ids = await self._queries.entries_on([file_id])

        def decide(log: Aggregates) -> Decision[_Deleted]:
            loaded = _Loaded(log)
            file = loaded.file(file_id)
            loaded.delete_file(file)
            parent = loaded.get(Folder, file.parent_id) if file.parent_id != ROOT else None
            if parent is not None:
                parent.detach(file_id)
            loaded.revoke(entry_ids, {file_id})
            return Decision(_Deleted([file.content.hash]), loaded.changed())

        deleted = await self._runner.run(decide, ctx)
        await self._release(deleted.hashes)

    # -- folders -------------------------------------------------------------------------------

    async def create_folder(self, name: str, parent_id: str, caller: str | None, ctx: CommandContext) -> str:
        check_name(name, slash_allowed=True)
        await self.check_capacity()
        folder_id, entry_id = self._new_id(), self._new_id()

        def decide(log: Aggregates) -> Decision[str]:
            loaded = _Loaded(log)
            parent = loaded.parent(parent_id, "parent folder")
            loaded.ensure_free(parent_id, name, folder_id, name_taken(name))
            loaded.add(Folder.create(folder_id, name, parent_id))
            if parent is not None:
                parent.attach(folder_id)
            loaded.grant_creator(caller, entry_id, folder_id)
            return Decision(folder_id, loaded.changed())

        return await self._runner.run(decide, ctx)

    async def rename_folder(self, folder_id: str, name: str, ctx: CommandContext) -> None:
        check_name(name, slash_allowed=True)

        def decide(log: Aggregates) -> Decision[None]:
            loaded = _Loaded(log)
            folder = loaded.folder(folder_id)
            loaded.ensure_free(folder.parent_id, name, folder_id, name_taken(name))
            folder.rename(name)
            return Decision(None, loaded.changed())

        await self._runner.run(decide, ctx)

    async def move_folder(self, folder_id: str, new_parent_id: str, ctx: CommandContext) -> None:
        """Into folder ``new_parent_id`` (``""``: the root): never into itself or below itself (400)."""

        def decide(log: Aggregates) -> Decision[None]:
            loaded = _Loaded(log)
            folder = loaded.folder(folder_id)
            if new_parent_id == folder_id:
                check_move_target(folder_id, new_parent_id, [])
            target = loaded.parent(new_parent_id, "target folder")
            check_move_target(folder_id, new_parent_id, [] if target is None else loaded.ancestors(target))
            loaded.ensure_free(new_parent_id, folder.name, folder_id, name_taken_in_target(folder.name))
            self._relink(loaded, folder_id, folder.parent_id, target)
            folder.move(new_parent_id)
            return Decision(None, loaded.changed())

        await self._runner.run(decide, ctx)

    async def delete_folder(self, folder_id: str, ctx: CommandContext) -> None:
        """Delete the folder and everything below it, with what goes with each file; then the freed content."""
        entry_ids = await self._queries.entries_on(await self._queries.subtree(folder_id))

        def decide(log: Aggregates) -> Decision[_Deleted]:
            loaded = _Loaded(log)
            top = loaded.folder(folder_id)
            deleted = _Deleted()
            gone: set[str] = set()
            pending = [top]
            while pending:
                folder = pending.pop()
                for child_id in folder.children:
                    child = loaded.get(Folder, child_id)
                    if child is not None and not child.deleted:
                        pending.append(child)
                        continue
                    file = loaded.get(File, child_id)
                    if file is not None and not file.deleted:
                        loaded.delete_file(file)
                        deleted.hashes.append(file.content.hash)
                        gone.add(child_id)
                folder.delete()
                gone.add(folder.key)
            parent = loaded.get(Folder, top.parent_id) if top.parent_id != ROOT else None
            if parent is not None:
                parent.detach(folder_id)
            loaded.revoke(entry_ids, gone)
            return Decision(deleted, loaded.changed())

        deleted = await self._runner.run(decide, ctx)
        await self._release(deleted.hashes)

    # -- shared ----------------------------------------------------------------------------------

    @staticmethod
    def _relink(loaded: _Loaded, node_id: str, old_parent_id: str, target: Folder | None) -> None:
        """Move a node's bookkeeping from its old folder to ``target`` (None: the root)."""
        if target is not None and target.key == old_parent_id:
            return
        old = loaded.get(Folder, old_parent_id) if old_parent_id != ROOT else None
        if old is not None:
            old.detach(node_id)
        if target is not None:
            target.attach(node_id)

    async def _release(self, hashes: list[str]) -> None:
        """Remove the content no live file names any more (the deletion is projected by now)."""
        if not hashes:
            return
        try:
            still_named = await self._queries.referenced(hashes)
            for digest in sorted(set(hashes) - still_named):
                await self._blobs.remove(digest, self._removal_grace)
        except Exception:  # the deletion stands; the content stays behind as an orphan
            logger.exception("removing freed content from the blob store failed")
