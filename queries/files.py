"""Queries of files and folders: nodes with their paths, listings, path resolution, and what commands ask first.

A path is computed on every read from the parent links (platform notes §6.1):
the names from the root down joined with ``/``, without a leading or trailing
slash (``docs/a.txt``); a name holding ``/`` shows verbatim. One recursive query
walks up from any number of nodes at once.

``GET /files?path=`` resolves the raw value segment by segment from the root
(empty segments, as of a leading ``/``, are skipped): a folder answers its
children, a file itself; a segment nothing answers to is 404 ``unable to
resolve path`` (the reference escaped the value before splitting it, so its
multi-segment paths never resolved).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from chainloom.domain.documents import NOT_FOUND, ROOT
from chainloom.domain.errors import NotFound
from chainloom.infra.readstore import Row
from chainloom.infra.timefmt import format_ns
from chainloom.queries.cache import RememberedQueries

Json = dict[str, Any]
UNRESOLVED = "unable to resolve path"
# Deepest tree a path walk follows (moves into a descendant are refused, so there is no cycle to stop).
MAX_DEPTH = 10_000
# Ids per IN (…) list.
_BATCH = 500
_COLUMNS = "id, parent_id, name, is_folder, content_type, size, hash, created_at_ns, updated_at_ns"


@dataclass(frozen=True)
class FileRow:
    """A file or folder as the read model has it, with its path."""

    id: str
    parent_id: str
    name: str
    is_folder: bool
    content_type: str
    size: int
    hash: str
    created_at_ns: int
    updated_at_ns: int
    path: str

    def file_json(self) -> Json:
        """Every file answer (folders in listings too: no type, size 0). ``ParentId`` is the reference's key."""
        return {
            "id": self.id,
            "path": self.path,
            "name": self.name,
            "contentType": self.content_type,
            "size": self.size,
            "parentId": self.parent_id,
            "ParentId": self.parent_id,
            "createdAt": format_ns(self.created_at_ns),
            "updatedAt": format_ns(self.updated_at_ns),
        }

    def folder_json(self) -> Json:
        """A folder answer; ``parentId`` is left out at the root."""
        answer: Json = {"id": self.id, "path": self.path, "name": self.name}
        if self.parent_id:
            answer["parentId"] = self.parent_id
        answer |= {"createdAt": format_ns(self.created_at_ns), "updatedAt": format_ns(self.updated_at_ns)}
        return answer


def _row(row: Row) -> Row:
    return row


def _with_path(row: Row, path: str) -> FileRow:
    return FileRow(
        row["id"],
        row["parent_id"],
        row["name"],
        bool(row["is_folder"]),
        row["content_type"],
        int(row["size"]),
        row["hash"],
        int(row["created_at_ns"]),
        int(row["updated_at_ns"]),
        path,
    )


def _join(parent_path: str, name: str) -> str:
    return f"{parent_path}/{name}" if parent_path else name


def _batches(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(ids), _BATCH):
        yield ids[start : start + _BATCH]


def _marks(count: int) -> str:
    return ", ".join("?" for _ in range(count))


class FileQueries(RememberedQueries):
    namespace = "files"
    not_found = NOT_FOUND

    # -- nodes with their paths ------------------------------------------------------------

    async def get(self, file_id: str) -> FileRow | None:
        """The file or folder ``file_id``, or None."""
        return (await self.files_by_ids([file_id])).get(file_id)

    async def file(self, file_id: str) -> FileRow:
        """The file ``file_id``; 404 for none, or for a folder (platform notes §6.4)."""
        row = await self.get(file_id)
        if row is None or row.is_folder:
            raise NotFound(NOT_FOUND)
        return row

    async def folder(self, folder_id: str) -> FileRow:
        row = await self.get(folder_id)
        if row is None or not row.is_folder:
            raise NotFound(NOT_FOUND)
        return row

    async def files_by_ids(self, ids: Iterable[str]) -> dict[str, FileRow]:
        """The nodes among ``ids`` that exist, by id, with their paths (unknown ids are left out)."""
        wanted = sorted(set(ids))
        rows: list[Row] = []
        for batch in _batches(wanted):
            rows += await self._rows(_row, f"SELECT {_COLUMNS} FROM files WHERE id IN ({_marks(len(batch))})", *batch)
        paths = await self._paths([row["parent_id"] for row in rows if row["parent_id"]])
        return {row["id"]: _with_path(row, _join(paths.get(row["parent_id"], ""), row["name"])) for row in rows}

    async def _paths(self, ids: Iterable[str]) -> dict[str, str]:
        """The path of each of the folders ``ids``, walking up to the root in one query per batch."""
        wanted = sorted(set(ids))
        paths: dict[str, str] = {}
        for batch in _batches(wanted):
            rows = await self._rows(
                _row,
                "WITH RECURSIVE up(origin, parent_id, name, depth) AS ("
                f" SELECT id, parent_id, name, 0 FROM files WHERE id IN ({_marks(len(batch))})"
                " UNION ALL"
                " SELECT up.origin, f.parent_id, f.name, up.depth + 1 FROM files f JOIN up ON f.id = up.parent_id"
                " WHERE up.depth < ?"
                ") SELECT origin, name, depth FROM up",
                *batch,
                MAX_DEPTH,
            )
            names: dict[str, list[tuple[int, str]]] = {}
            for row in rows:
                names.setdefault(row["origin"], []).append((row["depth"], row["name"]))
            for origin, parts in names.items():
                paths[origin] = "/".join(name for _, name in sorted(parts, reverse=True))
        return paths

    async def children(self, parent_id: str) -> list[FileRow]:
        """The files and folders directly in folder ``parent_id`` (``""``: the root), by name."""
        parent_path = "" if parent_id == ROOT else (await self._paths([parent_id])).get(parent_id, "")
        rows = await self._rows(_row, f"SELECT {_COLUMNS} FROM files WHERE parent_id = ? ORDER BY name, id", parent_id)
        return [_with_path(row, _join(parent_path, row["name"])) for row in rows]

    async def resolve(self, path: str) -> list[FileRow]:
        """``GET /files?path=``: the root's children for an empty path; else each segment by name from the root,
        a folder answering its children and a file itself. Unknown (or ambiguous) → 404 ``unable to resolve path``."""
        segments = [segment for segment in path.split("/") if segment]
        parent_id, parent_path = ROOT, ""
        for position, segment in enumerate(segments):
            rows = await self._rows(
                _row, f"SELECT {_COLUMNS} FROM files WHERE parent_id = ? AND name = ?", parent_id, segment
            )
            if len(rows) != 1:
                raise NotFound(f"{UNRESOLVED}: {path}")
            node = _with_path(rows[0], _join(parent_path, segment))
            if not node.is_folder:
                if position == len(segments) - 1:
                    return [node]
                raise NotFound(f"{UNRESOLVED}: {path} ({node.path} is a file)")
            parent_id, parent_path = node.id, node.path
        rows = await self._rows(_row, f"SELECT {_COLUMNS} FROM files WHERE parent_id = ? ORDER BY name, id", parent_id)
        return [_with_path(row, _join(parent_path, row["name"])) for row in rows]

    # -- what commands ask (never remembered: they want the read model as it is now) -----------

    async def count(self) -> int:
        """How many files and folders there are."""
        rows = await self._run_blocking(self._store.query, "SELECT COUNT(*) AS n FROM files", ())
        return int(rows[0]["n"])

    async def subtree(self, folder_id: str) -> list[str]:
        """The ids of ``folder_id`` and of everything below it."""
        rows = await self._run_blocking(
            self._store.query,
            "WITH RECURSIVE down(id, depth) AS ("
            " SELECT id, 0 FROM files WHERE id = ?"
            " UNION ALL"
            " SELECT f.id, down.depth + 1 FROM files f JOIN down ON f.parent_id = down.id WHERE down.depth < ?"
            ") SELECT id FROM down",
            (folder_id, MAX_DEPTH),
        )
        return [row["id"] for row in rows]

    async def referenced(self, hashes: Iterable[str]) -> set[str]:
        """Which of ``hashes`` a live file's content still is."""
        wanted = sorted(set(hashes))
        found: set[str] = set()
        for batch in _batches(wanted):
            rows = await self._run_blocking(
                self._store.query, f"SELECT DISTINCT hash FROM files WHERE hash IN ({_marks(len(batch))})", tuple(batch)
            )
            found |= {row["hash"] for row in rows}
        return found

    async def entries_on(self, resource_ids: Iterable[str]) -> list[str]:
        """The ids of the access entries on any of ``resource_ids`` (the identity read model's), to revoke with them."""
        wanted = sorted(set(resource_ids))
        entries: list[str] = []
        for batch in _batches(wanted):
            rows = await self._run_blocking(
                self._store.query,
                f"SELECT id FROM access_entries WHERE resource IN ({_marks(len(batch))}) ORDER BY id",
                tuple(batch),
            )
            entries += [row["id"] for row in rows]
        return entries
