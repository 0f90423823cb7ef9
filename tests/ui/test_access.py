"""A studio open to a network is no open door (issue 19 item 6): it needs a login unless the
person opts out by name, each user sees and opens only their own projects, and the REST API
takes a key. Plans (`ui.access`), the real server (login, 401), the handlers (isolation)."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import httpx
import pytest
from test_slow_bodies import uvicorn_server

from ui import access as access_module
from ui.access import (
    AccessError,
    hash_password,
    is_loopback,
    plan_access,
    read_users,
    summary,
)
from ui.handlers.common import tab_id


def hashed_users(**passwords: str) -> str:
    return "".join(f"{name}:{hash_password(pw)}\n" for name, pw in passwords.items())


@pytest.fixture()
def users_file(tmp_path):
    path = tmp_path / "users.txt"
    path.write_text("# who may log in\n" + hashed_users(alice="pw-alice") + "\n"
                    + hashed_users(bob="pw:with:colons"))
    return str(path)


@pytest.mark.parametrize("host, share, exposed", [
    ("127.0.0.1", False, False),  # this machine only
    ("localhost", False, False),
    ("::1", False, False),
    ("0.0.0.0", False, True),     # every interface
    ("192.168.1.5", False, True),
    ("my-host", False, True),     # a name may resolve to anything
    ("127.0.0.1", True, True),    # a gradio.live link
])
def test_exposed_starts_need_a_login_and_a_rest_key(host, share, exposed):
    assert is_loopback(host) == (not exposed or share)
    access = plan_access(host, share, None, None, no_login=False)
    assert access.exposed == exposed
    if exposed:  # a user and a key made at start, printed
        name, password = access.generated
        assert list(access.users) == [name] and len(password) >= 12
        assert password not in access.users[name]  # kept hashed, even in memory
        assert access.rest_key and len(access.rest_key) >= 24
        text = summary(access, "http://x/", rest=True)
        assert password in text and access.rest_key in text and "OPEN TO THE NETWORK" in text
        assert access.auth()(name, password) and not access.auth()(name, "wrong")
    else:
        assert access.users == {} and access.rest_key is None and access.auth() is None


def test_the_opt_out_is_explicit_and_said_at_start():
    access = plan_access("0.0.0.0", False, None, None, no_login=True)
    assert access.auth() is None and access.rest_key is None
    assert "--insecure-no-login" in summary(access, "http://x/", rest=True)


def test_users_file_and_a_given_key(users_file):
    access = plan_access("0.0.0.0", False, users_file, "my-key", no_login=False)
    assert list(access.users) == ["alice", "bob"]
    assert access.auth()("alice", "pw-alice") and not access.auth()("alice", "pw-bob")
    assert access.rest_key == "my-key" and access.generated is None
    assert access.auth()("bob", "pw:with:colons") and not access.auth()("carol", "x")
    local = plan_access("127.0.0.1", False, users_file, None, no_login=False)
    assert local.auth() is not None and local.rest_key is None  # logins asked for: given


@pytest.mark.parametrize("text, problem", [
    ("alice\n", "expected 'name:password'"),
    (":pw\n", "expected 'name:password'"),
    ("alice:\n", "expected 'name:password'"),
    ("alice:a\nalice:b\n", "given twice"),
    ("# nobody\n", "no user"),
    ("alice:pw-alice\n", "plain text.*python -m ui.access hash-file"),  # the old form
])
def test_a_bad_users_file_is_refused_with_the_line(tmp_path, text, problem):
    path = tmp_path / "users.txt"
    path.write_text(text)
    with pytest.raises(AccessError, match=problem):
        read_users(path)


def test_the_users_file_stores_salted_hashes_and_old_files_are_migrated(tmp_path, capsys):
    path = tmp_path / "users.txt"
    path.write_text("alice:pw-alice\nbob:pw:with:colons\n")  # the old plain-text form
    with pytest.raises(AccessError, match="plain text"):
        read_users(path)
    assert access_module.main(["hash-file", str(path)]) == 0
    text = path.read_text()
    assert "pw-alice" not in text and "pw:with:colons" not in text
    users = read_users(path)
    assert users["alice"] != users["bob"]
    assert hash_password("same") != hash_password("same")  # salted
    check = plan_access("0.0.0.0", False, str(path), None, no_login=False).auth()
    assert check("alice", "pw-alice") and check("bob", "pw:with:colons")
    assert not check("alice", "pw:with:colons") and not check("alice", "")
    assert path.stat().st_mode & 0o077 == 0  # the owner's only


def test_add_user_makes_and_changes_a_line(tmp_path, monkeypatch):
    import io

    path = tmp_path / "users.txt"
    for name, password in [("carol", "first"), ("dave", "d-pw"), ("carol", "second")]:
        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
        assert access_module.main(["add-user", str(path), name, "--password-stdin"]) == 0
    assert "first" not in path.read_text() and "second" not in path.read_text()
    check = plan_access("0.0.0.0", False, str(path), None, no_login=False).auth()
    assert check("carol", "second") and not check("carol", "first") and check("dave", "d-pw")


def test_projects_of_nobody_are_seen_only_once_claimed(tmp_path):
    """Projects made before logins were on belong to nobody: no user lists or opens them,
    until a person gives them to one (`python -m ui.access claim`)."""
    from owl_core.project.library import ProjectLibrary

    library = ProjectLibrary(tmp_path / "projects")
    old = library.create("made before logins").folder.name
    mine = library.create("alice's").folder.name
    library.set_owner(mine, "alice")
    assert [i.id for i in library.list("alice")] == [mine]
    assert not library.exists(old, "alice") and not library.exists(old, "bob")
    assert access_module.main(["claim", str(tmp_path / "projects"), "alice"]) == 0
    assert library.owner(old) == "alice" and library.owner(mine) == "alice"
    assert library.exists(old, "alice") and not library.exists(old, "bob")


# ---------------------------------------------------------------- the real server
@pytest.fixture(scope="module")
def guarded_server(tiny_model, tmp_path_factory):
    """`python app.py --host 0.0.0.0 --users FILE --rest-key KEY` (served on 127.0.0.1)."""
    from ui import StudioConfig, build_demo
    from ui.main import build_server_app, parse_args

    folder = tmp_path_factory.mktemp("guarded")
    (folder / "users.txt").write_text(hashed_users(alice="pw-alice", bob="pw-bob"))
    args = parse_args(["--host", "0.0.0.0", "--users", str(folder / "users.txt"),
                       "--rest-key", "the-key"])
    access = plan_access(args.host, args.share, args.users, args.rest_key, False)
    config = StudioConfig(random_preset="tiny", max_sessions=2, work_dir=str(folder / "w"),
                          projects_dir=str(folder / "p"), cache_bytes=64 * 2**20)
    demo = build_demo(tiny_model, config)
    demo.queue(default_concurrency_limit=2)
    try:
        with uvicorn_server(build_server_app(tiny_model, demo, args, access)) as port:
            yield f"http://127.0.0.1:{port}"
    finally:
        demo.studio.close()


def test_the_studio_refuses_without_a_login(guarded_server):
    with httpx.Client(base_url=guarded_server, timeout=30) as client:
        assert client.get("/config").status_code == 401
        assert client.post("/gradio_api/upload", files={"files": ("a.txt", b"x")}
                           ).status_code == 401
        wrong = client.post("/login", data={"username": "alice", "password": "nope"})
        assert wrong.status_code == 400
        assert client.get("/config").status_code == 401
        right = client.post("/login", data={"username": "alice", "password": "pw-alice"})
        assert right.status_code == 200
        assert client.get("/config").status_code == 200


def _logged_in(url: str, name: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30)
    assert client.post("/login", data={"username": name, "password": password}
                       ).status_code == 200
    return client


def test_a_users_files_are_not_served_to_another_user(guarded_server):
    """Gradio serves every file of its upload/cache folder to anyone logged in; with logins a
    user gets only the files the studio handed to them (an upload, a picture or a download
    named in what the app sent them)."""
    alice = _logged_in(guarded_server, "alice", "pw-alice")
    bob = _logged_in(guarded_server, "bob", "pw-bob")
    try:
        path = alice.post("/gradio_api/upload",
                          files={"files": ("secret.txt", b"alice's secret")}).json()[0]
        assert alice.get(f"/gradio_api/file={path}").content == b"alice's secret"
        refused = bob.get(f"/gradio_api/file={path}")
        assert refused.status_code == 403 and b"secret" not in refused.content
        assert bob.get(f"/file={path}").status_code in (403, 404)
        # bob's own upload of the same bytes lands in the same folder: handed to him, his
        same = bob.post("/gradio_api/upload",
                        files={"files": ("secret.txt", b"alice's secret")}).json()[0]
        assert bob.get(f"/gradio_api/file={same}").status_code == 200
    finally:
        alice.close()
        bob.close()


def test_file_folders_named_in_a_streamed_answer_are_the_users(tmp_path):
    """The grant is read from what the app sends, also when a name is split between two
    chunks of a stream (an event's answer)."""
    import asyncio

    from ui.file_access import UserFilesMiddleware

    root = tmp_path / "gradio"
    folder = "ab" * 32
    (root / folder).mkdir(parents=True)
    (root / folder / "export.zip").write_bytes(b"zip")
    text = f'data: {{"url": "gradio_api/file={root}/{folder}/export.zip"}}\n\n'.encode()
    cut = len(text) - 30

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": text[:cut], "more_body": True})
        await send({"type": "http.response.body", "body": text[cut:]})

    app.auth, app.auth_dependency, app.cookie_id = object(), None, "c"
    app.tokens = {"ta": "alice", "tb": "bob"}
    guard = UserFilesMiddleware(app, roots=[str(root)])

    def request(token: str, path: str) -> int:
        sent: list = []

        async def send(message):
            sent.append(message)

        async def receive():
            return {"type": "http.request", "body": b""}

        scope = {"type": "http", "path": path, "app": app,
                 "headers": [(b"cookie", f"access-token-c={token}".encode())]}
        asyncio.run(guard(scope, receive, send))
        return sent[0]["status"]

    file_path = f"/gradio_api/file={root}/{folder}/export.zip"
    assert request("ta", file_path) == 403  # nothing handed out yet
    assert request("ta", "/gradio_api/queue/data") == 200  # the stream naming the file
    assert request("ta", file_path) == 200
    assert request("tb", file_path) == 403
    assert request("ta", f"/gradio_api/file={root}/{folder}/../{folder}/export.zip") == 200


@pytest.mark.parametrize("headers, allowed", [
    ({}, False),                                   # no key
    ({"X-API-Key": "wrong"}, False),
    ({"Authorization": "Bearer wrong"}, False),
    ({"X-API-Key": "the-key"}, True),
    ({"Authorization": "Bearer the-key"}, True),
])
def test_the_rest_api_takes_the_key(guarded_server, headers, allowed):
    response = httpx.post(f"{guarded_server}/owlv2/infer", json={}, headers=headers,
                          timeout=30)
    assert (response.status_code != 401) == allowed, response.text
    if not allowed:
        assert "X-API-Key" in response.json()["message"]


# ---------------------------------------------------------------- one user, their projects
@pytest.fixture()
def studio(tiny_model, tmp_path):
    from ui import Studio, StudioConfig, build_demo

    config = StudioConfig(work_dir=str(tmp_path / "work"), projects_dir=str(tmp_path / "p"),
                          cache_bytes=64 * 2**20)
    studio = Studio(tiny_model, config)
    build_demo(tiny_model, config, studio=studio)
    try:
        yield studio
    finally:
        studio.close()


def _tab(user: str, session: str = "tab", project: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(session_hash=session, username=user,
                           query_params={"project": project} if project else {})


def _listed(studio, request) -> list[str]:
    out = studio.library.on_refresh_list(request)
    return [value for _, value in out[studio.c.project_list]["choices"]]


def test_each_user_sees_and_opens_only_their_own_projects(studio):
    alice, bob = _tab("alice"), _tab("bob")
    studio.on_load(None, alice)
    studio.project.on_project_name("alice's secret", alice)
    studio.library.on_duplicate(alice)  # a second project of hers (saved, named)
    theirs = studio.session(alice).project_id
    assert studio.projects.owner(theirs) == "alice"
    assert theirs in _listed(studio, alice)

    studio.on_load(None, bob)
    assert theirs not in _listed(studio, bob)
    assert set(_listed(studio, bob)).isdisjoint(_listed(studio, alice))
    # by id: in the URL, from the list's Open, Delete
    studio.on_load(None, _tab("bob", project=theirs))
    assert studio.session(bob).project_id != theirs
    with pytest.raises(gr.Error):
        studio.library.on_open(theirs, bob)
    with pytest.raises(gr.Error):
        studio.library.on_delete(theirs, bob)
    assert studio.projects.exists(theirs, "alice")
    # the same tab hash sent by another user is another tab
    assert studio.session(_tab("bob")) is not studio.session(_tab("alice"))
    # a closed tab of a logged-in user is freed
    studio.on_unload(alice)
    assert studio.store.peek(tab_id(alice)) is None
    # without logins (no user) nothing changes: every project is listed
    assert theirs in _listed(studio, SimpleNamespace(session_hash="local", query_params={}))
