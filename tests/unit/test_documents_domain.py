"""Files and folders decide alone: the name rules of the notes (§6), content that can be recorded, the events
each change leaves (never a byte of content), the unique name each live node holds, and moves refused into
a folder's own subtree."""

from __future__ import annotations

import hashlib
import json

import pytest

from chainloom.domain.base import Aggregate
from chainloom.domain.documents import (
    EMPTY_FILE,
    MAX_NAME_BYTES,
    MISSING_NAME,
    NODE_NAME,
    SLASH_IN_FILENAME,
    Content,
    File,
    Folder,
    check_move_target,
)
from chainloom.domain.errors import BadRequest, NotFound, Unprocessable
from chainloom.infra.envelope import EnvelopeMapper

DIGEST = hashlib.sha256(b"hello").hexdigest()
TEXT = Content(DIGEST, 5, "text/plain; charset=utf-8")


def envelopes(aggregate: Aggregate) -> list[tuple[str, dict]]:
    mapper = EnvelopeMapper()
    stored = [json.loads(mapper.to_stored_event(e).state) for e in aggregate.collect_events()]
    return [(e["event_type"], e["data"]) for e in stored]


def test_a_files_life_is_on_the_log_as_hashes_and_job_ids():
    file = File.create("f1", "a.txt", "", TEXT, "j1")
    assert file.unique_values() == {NODE_NAME: ":a.txt"}
    file.rename("a/b.txt", "j2")  # a rename may bring a slash
    file.move("folder-1", "j3")
    file.replace_content(Content(hashlib.sha256(b"%PDF-").hexdigest(), 5, "application/pdf"), "j4")
    assert file.unique_values() == {NODE_NAME: "folder-1:a/b.txt"}
    assert file.job_ids == ["j1", "j2", "j3", "j4"]
    file.delete()
    assert file.unique_values() == {}
    events = envelopes(file)
    assert [name for name, _ in events] == [
        "file.created", "file.renamed", "file.moved", "file.content_replaced", "file.deleted"
    ]
    assert events[0][1] == {
        "name": "a.txt", "parentId": "", "contentType": "text/plain; charset=utf-8", "size": 5, "hash": DIGEST, "jobId": "j1"
    }
    assert events[1][1] == {"name": "a/b.txt", "jobId": "j2"} and events[2][1] == {"parentId": "folder-1", "jobId": "j3"}
    assert events[4][1] == {"hash": hashlib.sha256(b"%PDF-").hexdigest()}
    with pytest.raises(NotFound):
        file.rename("again", "j5")


@pytest.mark.parametrize(
    "name, error, fragment",
    [
        ("", Unprocessable, MISSING_NAME),
        ("a/b.txt", Unprocessable, SLASH_IN_FILENAME),
        ("x" * (MAX_NAME_BYTES + 1), Unprocessable, "longer than"),
        ("nul\x00", Unprocessable, "NUL"),
    ],
)
def test_a_new_files_name_is_checked(name: str, error: type, fragment: str):
    with pytest.raises(error, match=fragment):
        File.create("f1", name, "", TEXT, "j1")


@pytest.mark.parametrize(
    "content, error, fragment",
    [
        (Content(DIGEST, 0, "text/plain"), BadRequest, EMPTY_FILE),
        (Content("not-a-hash", 5, "text/plain"), Unprocessable, "sha256"),
        (Content(DIGEST, 5, "text/html; charset=utf-8"), Unprocessable, 'content type "text/html; charset=utf-8"'),
    ],
)
def test_only_recordable_content_is_recorded(content: Content, error: type, fragment: str):
    with pytest.raises(error, match=fragment):
        File.create("f1", "a.txt", "", content, "j1")


def test_a_folder_keeps_its_children_and_names_may_hold_slashes():
    folder = Folder.create("d1", "2024/05", "")
    folder.attach("f1")
    folder.attach("f1")  # once
    folder.attach("d2")
    folder.detach("f1")
    folder.rename("may")
    folder.move("d0")
    assert folder.children == ["d2"] and folder.unique_values() == {NODE_NAME: "d0:may"}
    with pytest.raises(Unprocessable, match=MISSING_NAME):
        folder.rename("")
    folder.delete()
    with pytest.raises(NotFound):
        folder.attach("f3")  # a child cannot land in a deleted folder
    assert [name for name, _ in envelopes(folder)] == [
        "folder.created", "folder.child_attached", "folder.child_attached", "folder.child_detached",
        "folder.renamed", "folder.moved", "folder.deleted",
    ]


def test_a_folder_never_moves_into_itself_or_below_itself():
    with pytest.raises(BadRequest, match="cannot move a folder into itself"):
        check_move_target("d1", "d1", [])
    with pytest.raises(BadRequest, match=r"cannot move folder d1 into itself or one of its subfolders \(target d3\)"):
        check_move_target("d1", "d3", ["d2", "d1"])
    check_move_target("d1", "d4", ["d5"])
