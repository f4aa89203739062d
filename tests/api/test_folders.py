"""/folders on SQLite and PostgreSQL: create, rename, move (never into itself or below itself), the recursive
delete that takes everything below with it; and files and folders with security on — the creator's entry,
the resource checks of §2.7."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chainloom.infra.settings import Settings
from tests.api.helpers import assert_error, call
from tests.api.identity_helpers import FAST_HASHES, JWT_SECRET, bearer, register
from tests.api.test_files import TEXT, age_blobs, blob_path, create, folder, form, hashes_on_log, pending_jobs
from tests.conftest import POSTGRES_URL, make_settings, reset_postgres
from tests.integration.serve_process import log_events

API_KEY = "service-key"

FOLDER_KEYS = {"id", "path", "name", "createdAt", "updatedAt"}


def secured_identity(store_kind: str, tmp_path: Path) -> Settings:
    if store_kind == "postgres":
        reset_postgres(POSTGRES_URL)
    values = {"security_enabled": True, "jwt_secret": JWT_SECRET, "api_token": API_KEY, "reconciler": False, **FAST_HASHES}
    return make_settings(store_kind, tmp_path / "data", **values)


async def test_folders_are_created_renamed_and_moved_with_their_conflicts(client):
    docs = await folder(client, "docs")
    assert set(docs) == FOLDER_KEYS and (docs["path"], docs["name"]) == ("docs", "docs")  # no parentId at the root
    sub = await folder(client, "2024/05", docs["id"])
    assert (sub["path"], sub["parentId"]) == ("docs/2024/05", docs["id"])
    assert_error(*await call(client, "POST", "/folders", {"name": ""}), 422, "missing 'name'")
    assert_error(*await call(client, "POST", "/folders", {"name": "x", "parentId": "nowhere"}), 404, "not found")
    assert_error(*await call(client, "POST", "/folders", {"name": "docs"}), 409, "unique constraint violation")
    file = await create(client, TEXT, "docs.txt")
    assert_error(*await call(client, "POST", "/folders", {"name": "docs.txt"}), 409, "already exists")  # files and folders share names
    assert_error(*await call(client, "POST", "/folders", {"name": "x", "parentId": file["id"]}), 422, "is not a folder")

    status, renamed = await call(client, "PUT", f"/folders/{sub['id']}/name", {"name": "may"})
    assert status == 200 and (renamed["path"], renamed["parentId"]) == ("docs/may", docs["id"])
    assert_error(*await call(client, "PUT", f"/folders/{file['id']}/name", {"name": "y"}), 422, "target is not a folder")
    assert_error(*await call(client, "PUT", "/folders/unknown/name", {"name": "y"}), 404, "not found")
    assert_error(*await call(client, "PUT", f"/folders/{docs['id']}/name", {"name": "docs.txt"}), 409, "already exists")

    inner = await folder(client, "inner", sub["id"])
    assert_error(*await call(client, "PUT", f"/folders/{docs['id']}/move", {"newParentId": docs["id"]}), 400, "cannot move a folder into itself")
    status, body = await call(client, "PUT", f"/folders/{docs['id']}/move", {"newParentId": inner["id"]})
    assert_error(status, body, 400, f"cannot move folder {docs['id']} into itself or one of its subfolders (target {inner['id']})")
    status, body = await call(client, "PUT", f"/api/folders/{docs['id']}/move", {"newParentId": docs["id"]})
    assert status == 400 and "cannot move a folder into itself" in body["error"]
    assert_error(*await call(client, "PUT", f"/folders/{inner['id']}/move", {"newParentId": "nowhere"}), 404, "not found")
    status, moved = await call(client, "PUT", f"/folders/{inner['id']}/move", {"newParentId": ""})
    assert status == 200 and moved["path"] == "inner" and "parentId" not in moved
    await folder(client, "inner", docs["id"])
    assert_error(
        *await call(client, "PUT", f"/folders/{inner['id']}/move", {"newParentId": docs["id"]}),
        409,
        "an item named 'inner' already exists in the target folder",
    )
    status, moved = await call(client, "PUT", f"/folders/{sub['id']}/move", {"newParentId": inner["id"]})
    assert status == 200 and moved["path"] == "inner/may"
    assert not [job for job in await pending_jobs(client) if job["entityId"] != file["id"]]  # folders queue nothing


async def test_a_folder_is_deleted_with_everything_below_it(client, settings):
    top = await folder(client, "top")
    mid = await folder(client, "mid", top["id"])
    files = [
        await create(client, TEXT, "a.txt", parentid=top["id"]),
        await create(client, b"only below\n", "b.txt", parentid=mid["id"]),
    ]
    bottom = await folder(client, "bottom", mid["id"])
    kept = await create(client, TEXT, "kept.txt")  # shares a's content, outside the folder
    hashes = hashes_on_log(settings)
    age_blobs(settings)

    assert await call(client, "DELETE", f"/folders/{top['id']}") == (200, {"message": "folder removed"})
    for node in (*files,):
        assert_error(*await call(client, "GET", f"/files/{node['id']}"), 404, "not found")
    status, root = await call(client, "GET", "/files")
    assert status == 200 and [row["id"] for row in root] == [kept["id"]]
    assert {job["entityId"] for job in await pending_jobs(client)} == {kept["id"]}
    assert blob_path(settings, hashes[kept["id"]]).exists()
    assert not blob_path(settings, hashes[files[1]["id"]]).exists()
    deleted = {e["aggregate_id"] for e in log_events(settings) if e["event_type"] in ("file.deleted", "folder.deleted")}
    assert deleted == {top["id"], mid["id"], bottom["id"], *(f["id"] for f in files)}
    assert_error(*await call(client, "DELETE", f"/folders/{top['id']}"), 404, "not found")
    assert_error(*await call(client, "DELETE", f"/folders/{kept['id']}"), 422, "target is not a folder")
    assert_error(*await call(client, "POST", "/folders", {"name": "x", "parentId": mid["id"]}), 404, "not found")


# -- with security on ---------------------------------------------------------------------------------------


async def test_with_security_on_creators_manage_their_files_and_others_are_refused(service_for, tmp_path, store_kind):
    async with service_for(secured_identity(store_kind, tmp_path)) as client:
        admin = bearer((await register(client, "admin@admin.com"))["token"])
        users = {}
        for email in ("bob@x.io", "eve@x.io"):
            registered = await register(client, email)
            user, token = registered["user"], registered["token"]
            entry = {"identity": user["id"], "resource": "fileservice", "resourceType": "system", "permission": "manage"}
            assert (await call(client, "POST", "/access-control", entry, headers=admin))[0] == 201
            users[email] = (user["id"], token)
        # (``call`` adds a JSON Content-Type to the headers it is given: uploads get fresh ones.)
        bob_id, bob_token = users["bob@x.io"]
        bob, eve = bearer(bob_token), bearer(users["eve@x.io"][1])

        async with client.post("/files", data=form(TEXT, "bob.txt"), headers=bearer(bob_token)) as response:
            assert response.status == 201, await response.text()
            file = await response.json()
        status, own = await call(client, "POST", "/folders", {"name": "bobs"}, headers=bob)
        assert status == 201, own
        status, entries = await call(client, "GET", "/access-control", params={"identity": bob_id}, headers=admin)
        granted = {(e["resource"], e["resourceType"], e["permission"]) for e in entries}
        assert {(file["id"], "files", "manage"), (own["id"], "files", "manage")} <= granted

        # Eve holds the service, not the file: refused on it (403; 401 under /api), whatever she asks.
        for method, path, body in [
            ("GET", f"/files/{file['id']}", None),
            ("GET", f"/files/{file['id']}/download", None),
            ("PUT", f"/files/{file['id']}/name", {"name": "mine.txt"}),
            ("PUT", f"/files/{file['id']}/move", {"newParentId": ""}),
            ("DELETE", f"/files/{file['id']}", None),
            ("DELETE", f"/folders/{own['id']}", None),
        ]:
            assert_error(*await call(client, method, path, body, headers=eve), 403, "lacks permission")
        status, body = await call(client, "GET", f"/api/files/{file['id']}", headers=eve)
        assert status == 401 and "lacks permission view" in body["error"]
        status, _ = await upload_as(client, bearer(users["eve@x.io"][1]), f"/files/{file['id']}")
        assert status == 403
        # The API key acts as the admin; the creator may read, rename, move into their folder, and delete.
        assert (await call(client, "GET", f"/files/{file['id']}", headers={"X-API-Key": API_KEY}))[0] == 200
        assert (await call(client, "GET", f"/files/{file['id']}", headers=bob))[0] == 200
        async with client.get(f"/files/{file['id']}/download", headers=bob) as response:
            assert response.status == 200 and await response.read() == TEXT
        assert (await call(client, "PUT", f"/files/{file['id']}/name", {"name": "b2.txt"}, headers=bob))[0] == 200
        assert (await call(client, "PUT", f"/files/{file['id']}/move", {"newParentId": own["id"]}, headers=bob))[0] == 200
        async with client.post("/files", data=form(TEXT, "other.txt"), headers=bearer(bob_token)) as response:
            other = await response.json()
            assert response.status == 201, other
        assert await call(client, "DELETE", f"/files/{other['id']}", headers=bob) == (200, {"message": "file removed"})
        # The folder goes with the file in it.
        assert await call(client, "DELETE", f"/folders/{own['id']}", headers=bob) == (200, {"message": "folder removed"})
        assert_error(*await call(client, "GET", f"/files/{file['id']}", headers={"X-API-Key": API_KEY}), 404, "not found")
        # Their entries went with them.
        status, entries = await call(client, "GET", "/access-control", params={"identity": bob_id}, headers=admin)
        assert {e["resource"] for e in entries} == {"server", "fileservice"}


async def upload_as(client: Any, headers: dict[str, str], path: str) -> tuple[int, Any]:
    async with client.put(path, data=form(TEXT, "x.txt"), headers=headers) as response:
        return response.status, await response.read()
