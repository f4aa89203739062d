"""Read model of files and folders (``files``): one row per live node of the tree.

Folders are rows too (``is_folder`` 1, no type, size or hash), so a listing and
a path walk read one table. Paths are not stored: a move or rename of a folder
would have to rewrite every row below it; they are computed from the parent
links when read (``queries.files``). A folder's bookkeeping of its children
(``folder.child_attached`` …) changes no row: the children's own events say
the same. Rows are indexed by (parent, name) for listings and path resolution,
and by hash, for whether a blob is still referenced. The search reads this
table too (``expand=files``).
"""

from __future__ import annotations

from chainloom.domain.documents import File, Folder
from chainloom.infra.timefmt import parse_ns
from chainloom.projections.base import Event, Projector, TemplatedCursor, on


def _at(event: Event) -> int:
    return parse_ns(event["created_at"])


class FilesProjector(Projector):
    name = "files"
    tables = ("files",)
    schema = (
        "CREATE TABLE IF NOT EXISTS {files} ("
        " id TEXT PRIMARY KEY, parent_id TEXT NOT NULL, name TEXT NOT NULL, is_folder INTEGER NOT NULL,"
        " content_type TEXT NOT NULL, size BIGINT NOT NULL, hash TEXT NOT NULL,"
        " created_at_ns BIGINT NOT NULL, updated_at_ns BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS {files_parent_name} ON {files} (parent_id, name)",
        "CREATE INDEX IF NOT EXISTS {files_hash} ON {files} (hash)",
    )

    @on(File.Created)
    def file_created(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "INSERT INTO {files} (id, parent_id, name, is_folder, content_type, size, hash, created_at_ns,"
            " updated_at_ns) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?)",
            (
                event["aggregate_id"],
                data["parentId"],
                data["name"],
                data["contentType"],
                data["size"],
                data["hash"],
                _at(event),
                _at(event),
            ),
        )

    @on(File.ContentReplaced)
    def content_replaced(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "UPDATE {files} SET content_type = ?, size = ?, hash = ?, updated_at_ns = ? WHERE id = ?",
            (data["contentType"], data["size"], data["hash"], _at(event), event["aggregate_id"]),
        )

    @on(Folder.Created)
    def folder_created(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "INSERT INTO {files} (id, parent_id, name, is_folder, content_type, size, hash, created_at_ns,"
            " updated_at_ns) VALUES (?, ?, ?, 1, '', 0, '', ?, ?)",
            (event["aggregate_id"], data["parentId"], data["name"], _at(event), _at(event)),
        )

    @on(File.Renamed, Folder.Renamed)
    def renamed(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute(
            "UPDATE {files} SET name = ?, updated_at_ns = ? WHERE id = ?",
            (event["data"]["name"], _at(event), event["aggregate_id"]),
        )

    @on(File.Moved, Folder.Moved)
    def moved(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute(
            "UPDATE {files} SET parent_id = ?, updated_at_ns = ? WHERE id = ?",
            (event["data"]["parentId"], _at(event), event["aggregate_id"]),
        )

    @on(File.Deleted, Folder.Deleted)
    def deleted(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute("DELETE FROM {files} WHERE id = ?", (event["aggregate_id"],))
