"""The devkit4ai dialect against a real server, as its docs and starter kit use it: end users
register and log in per project, send example images plus instructions, poll until completed,
toggle public, delete; every invalid request gets its documented code in FastAPI's `{detail}`
shape; tokens, keys and headers of one project never work with another's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pictures import encoded, png
from tests.serverproc import Server, create_key, run_cli

SEED_INSTRUCTIONS = '{"prompt": "Generate a futuristic cityscape with neon lights"}'


def jpeg(color: tuple[int, int, int]) -> bytes:
    return encoded("JPEG", (64, 64), color)


def gif() -> bytes:
    return encoded("GIF", (8, 8), (1, 2, 3))


class App:
    """One developer's project, as its app talks to the server."""

    def __init__(self, server: Server, org: str, project: str):
        self.server = server
        self.key = create_key(server.env, org, project)
        developer = run_cli(
            server.env, "keys", "create", "--org", org, "--project", project, "--type", "developer"
        )
        assert developer.returncode == 0, developer.stderr
        self.developer_key = developer.stdout.strip().splitlines()[-1]
        info = httpx.get(f"{server.url}/api/info", headers={"X-API-Key": self.key}).json()
        self.project_id = info["project"]["id"]
        self.org, self.project = org, project

    def headers(self, token: str | None = None, **override: str) -> dict[str, str]:
        headers = {
            "X-API-Key": self.key,
            "X-Project-ID": self.project_id,
            "X-Developer-Key": self.developer_key,
            "X-User-Role": "end_user",
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        headers.update(override)
        return headers

    def post(self, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers(token), **kwargs.pop("headers", {})}
        return httpx.post(f"{self.server.url}{path}", headers=headers, timeout=60, **kwargs)

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers(token), **kwargs.pop("headers", {})}
        return httpx.get(f"{self.server.url}{path}", headers=headers, timeout=60, **kwargs)

    def user(self, email: str) -> dict[str, Any]:
        body = {"email": email, "password": "correct horse", "full_name": "Ada"}
        registered = self.post("/api/v1/auth/register", json=body)
        assert registered.status_code == 201, registered.text
        return dict(registered.json())

    def generate(self, token: str | None, files: list[tuple[str, bytes, str]], text: str) -> Any:
        return self.post(
            "/api/v1/generation/generate-v2",
            token,
            files=[("files", f) for f in files],
            data={"instructions": text},
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("devkit"), models_dir, lease_seconds=5).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def app(server: Server) -> App:
    return App(server, "devco", "shop")


def wait_completed(app: App, token: str, generation_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        path = f"/api/v1/generation/generations-v2/{generation_id}/status"
        data: dict[str, Any] = app.get(path, token).json()
        if data["status"] in ("completed", "failed"):
            return data
        time.sleep(0.2)
    raise AssertionError(f"{generation_id} did not finish")


def test_an_end_user_generates_from_example_images(app: App) -> None:
    user = app.user("ada@example.com")
    assert user["role"] == "end_user" and user["token_type"] == "bearer"
    login = app.post(
        "/api/v1/auth/login", json={"email": "ADA@example.com", "password": "correct horse"}
    )
    assert login.status_code == 200 and set(login.json()) == {
        "access_token",
        "refresh_token",
        "token_type",
    }
    token = login.json()["access_token"]
    assert app.get("/api/v1/auth/me", token).json()["email"] == "ada@example.com"
    files = [
        ("a.jpg", jpeg((200, 30, 30)), "image/jpeg"),
        ("b.jpg", jpeg((30, 30, 200)), "image/jpeg"),
    ]
    created = app.generate(token, files, SEED_INSTRUCTIONS)  # the seed's example, byte for byte
    assert created.status_code == 200, created.text
    body = created.json()
    assert (
        body["status"] == "pending"
        and body["message"] == "Generation request submitted successfully"
    )
    done = wait_completed(app, token, body["id"])
    assert done["status"] == "completed" and done["instructions"] == SEED_INSTRUCTIONS
    assert done["result_image_url"] == done["generated_image_url"]
    assert len(done["example_images"]) == 2
    image = httpx.get(done["generated_image_url"])
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    listed = app.get("/api/v1/generation/generations-v2", token, params={"per_page": 5}).json()
    assert listed["total"] == 1 and listed["per_page"] == 5 and listed["page"] == 1
    public = httpx.patch(
        f"{app.server.url}/api/v1/generation/generations-v2/{body['id']}/public",
        headers=app.headers(token),
        data={"is_public": "true"},
    )
    assert public.status_code == 200 and public.json()["is_public"] is True
    shown = app.get("/api/v1/generation/public-generations-v2").json()
    assert [g["id"] for g in shown["generations"]] == [body["id"]]
    deleted = httpx.delete(
        f"{app.server.url}/api/v1/generation/generations-v2/{body['id']}",
        headers=app.headers(token),
    )
    assert deleted.status_code == 200
    gone = app.get(f"/api/v1/generation/generations-v2/{body['id']}/status", token)
    assert gone.status_code == 404 and "detail" in gone.json()


def test_plain_text_instructions_and_engine_keys(app: App) -> None:
    token = app.user("text@example.com")["access_token"]
    text = app.generate(token, [("a.png", png(), "image/png")], "a red circle on a blue background")
    assert text.status_code == 200, text.text
    keyed = app.generate(
        token,
        [("a.png", png(), "image/png")],
        '{"prompt": "a square", "seed": 42, "steps": 4, "style": "flat", "mood": "calm"}',
    )
    done = wait_completed(app, token, keyed.json()["id"])
    assert done["status"] == "completed"
    # Another end user's prompt names the project's newest and oldest images (this user's) and
    # a project alias: to an end user they are words, never references.
    with httpx.Client(base_url=app.server.url, headers={"X-API-Key": app.key}) as api:
        made = api.post(
            "/api/v1/generations",
            json={"prompt": "the logo", "alias": "@logo"},
            headers={"Prefer": "wait=60"},
        )
        assert made.status_code == 201, made.text
    other = app.user("other@example.com")["access_token"]
    prying = app.generate(other, [("a.png", png(), "image/png")], "x @last @first @logo")
    assert prying.status_code == 200, prying.text
    seen = wait_completed(app, other, prying.json()["id"])
    assert len(seen["example_images"]) == 1, seen["example_images"]


BAD_UPLOADS: list[tuple[str, list[tuple[str, bytes, str]], str, int, str]] = [
    ("no images", [], SEED_INSTRUCTIONS, 422, "example image"),
    ("six images", [("a.png", png(), "image/png")] * 6, SEED_INSTRUCTIONS, 422, "5"),
    ("a GIF", [("a.gif", gif(), "image/gif")], SEED_INSTRUCTIONS, 422, "format"),
    ("bad JSON", [("a.png", png(), "image/png")], '{"prompt": ', 422, "JSON"),
    ("no prompt", [("a.png", png(), "image/png")], '{"style": "x"}', 422, "prompt"),
    ("too long", [("a.png", png(), "image/png")], "x" * 1001, 422, "1000"),
    ("nested too deep", [("a.png", png(), "image/png")], "[" * 1000, 422, "JSON"),
    ("NaN", [("a.png", png(), "image/png")], '{"prompt": "x", "style": NaN}', 422, "NaN"),
    (
        "11 MB",
        [("a.png", png() + b"\0" * 11 * 1024 * 1024, "image/png")],
        SEED_INSTRUCTIONS,
        413,
        "limit",
    ),
]


@pytest.mark.parametrize(("case", "files", "text", "status", "fragment"), BAD_UPLOADS)
def test_invalid_requests_get_the_documented_code_and_store_nothing(
    app: App, case: str, files: list[tuple[str, bytes, str]], text: str, status: int, fragment: str
) -> None:
    token = app.post(
        "/api/v1/auth/login", json={"email": "ada@example.com", "password": "correct horse"}
    ).json()["access_token"]
    before = app.server.stored_keys()
    if not files:
        response = app.post(
            "/api/v1/generation/generate-v2",
            token,
            files={"other": ("x.txt", b"x")},
            data={"instructions": text},
        )
    else:
        response = app.generate(token, files, text)
    assert response.status_code == status, (case, response.text)
    detail = response.json()["detail"]
    assert fragment in (detail if isinstance(detail, str) else str(detail)), (case, detail)
    assert app.server.stored_keys() == before, case


def test_headers_tokens_and_keys_of_one_project_never_work_for_another(
    app: App, server: Server
) -> None:
    token = app.user("bob@example.com")["access_token"]
    ada = app.post(
        "/api/v1/auth/login", json={"email": "ada@example.com", "password": "correct horse"}
    ).json()["access_token"]
    made = app.generate(ada, [("a.png", png(), "image/png")], "ada's picture").json()
    # Another end user of the same project: 404, never the record.
    other_user = app.get(f"/api/v1/generation/generations-v2/{made['id']}/status", token)
    assert other_user.status_code == 404
    assert app.get("/api/v1/generation/generations-v2", token).json()["total"] == 0
    # No token, a bad token.
    assert app.get("/api/v1/auth/me").status_code == 401
    bad = app.get("/api/v1/auth/me", "not-a-jwt")
    assert bad.status_code == 401 and bad.json() == {"detail": "Could not validate credentials"}
    # Headers that disagree.
    other = App(server, "otherco", "site")
    for name, value in (
        ("X-Project-ID", other.project_id),
        ("X-Developer-Key", other.developer_key),
        ("X-User-Role", "developer"),
    ):
        refused = app.get("/api/v1/auth/me", token, headers={name: value})
        assert refused.status_code == 403, (name, refused.text)
        assert isinstance(refused.json()["detail"], str)
    # This project's token with the other project's headers.
    crossed = httpx.get(f"{server.url}/api/v1/auth/me", headers=other.headers(token))
    assert crossed.status_code == 401
    # The other project's key with this project's id.
    mixed = app.get("/api/v1/auth/me", token, headers={"X-API-Key": other.key})
    assert mixed.status_code == 403


def test_failed_logins_are_limited_per_account_not_per_address(app: App) -> None:
    """Every end user's login comes from the app's server, so the limit is the account's: ten
    wrong passwords in 15 minutes, then even the right one waits; other accounts log in."""
    app.user("guessed@example.com")
    app.user("bystander@example.com")

    def login(email: str, password: str) -> httpx.Response:
        return app.post("/api/v1/auth/login", json={"email": email, "password": password})

    for attempt in range(10):
        wrong = login("guessed@example.com", f"wrong password {attempt}")
        assert wrong.status_code == 401, wrong.text
    refused = login("GUESSED@example.com", "correct horse")
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1, refused.text
    assert "detail" in refused.json()
    assert login("bystander@example.com", "correct horse").status_code == 200


async def test_password_hashing_runs_off_the_event_loop_and_an_unknown_address_costs_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Argon2id holds a core for tens of milliseconds: on the event loop it stalled every
    request of the process. A login for an unknown address checks a hash too, so its timing
    does not say which addresses are registered."""
    import asyncio
    import threading

    from imagesmith.auth import end_users
    from imagesmith.auth.service import KeyService
    from imagesmith.config import Settings
    from imagesmith.db import migrate
    from imagesmith.errors import Unauthorized
    from imagesmith.runtime import Runtime

    threads: list[tuple[str, bool]] = []
    for name in ("hash_password", "verify_password"):
        real = getattr(end_users, name)

        def recorded(*args: Any, _real: Any = real, _name: str = name) -> Any:
            threads.append((_name, threading.current_thread() is threading.main_thread()))
            return _real(*args)

        monkeypatch.setattr(end_users, name, recorded)
    settings = Settings(data_dir=tmp_path)
    await asyncio.to_thread(migrate.upgrade, settings)
    runtime = Runtime.open(settings)
    try:
        async with runtime.db.transaction() as session:
            _org, project = await KeyService(session).ensure_project("o", "p")
        users = end_users.EndUserService(runtime)
        await users.register(project.id, "a@example.com", "correct horse", None)
        await users.login(project.id, "a@example.com", "correct horse")
        with pytest.raises(Unauthorized):
            await users.login(project.id, "nobody@example.com", "correct horse")
    finally:
        await runtime.close()
    assert threads == [
        ("hash_password", False),
        ("verify_password", False),
        ("verify_password", False),
    ]


def test_refresh_tokens_rotate_and_a_reused_one_signs_the_user_out(app: App) -> None:
    first = app.user("carol@example.com")
    rotated = app.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200 and rotated.json()["refresh_token"] != first["refresh_token"]
    reused = app.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reused.status_code == 401
    # The theft response: the rotated token is retired too.
    later = app.post(
        "/api/v1/auth/refresh", json={"refresh_token": rotated.json()["refresh_token"]}
    )
    assert later.status_code == 401
    again = app.post(
        "/api/v1/auth/register", json={"email": "carol@example.com", "password": "x" * 8}
    )
    assert again.status_code == 409
    short = app.post(
        "/api/v1/auth/register", json={"email": "dan@example.com", "password": "short"}
    )
    assert short.status_code == 422 and isinstance(short.json()["detail"], list)


def test_a_free_plan_with_three_a_month_refuses_the_fourth_and_a_second_at_once(
    server: Server,
) -> None:
    app = App(server, "tierco", "free")
    result = run_cli(
        server.env, "plan", "set", "--org", "tierco", "--project", "free", "free", "--monthly", "3"
    )
    assert result.returncode == 0, result.stderr
    token = app.user("eve@example.com")["access_token"]
    one = [("a.png", png(), "image/png")]
    first = app.generate(token, one, "first").json()
    at_once = app.generate(token, one, "second while the first runs")
    if at_once.status_code == 429:  # the first was still pending or processing
        assert at_once.json()["retry_after"] == 5 and at_once.headers["Retry-After"] == "5"
    wait_completed(app, token, first["id"])
    statuses = []
    for i in range(4):
        response = app.generate(token, one, f"picture {i}")
        statuses.append(response.status_code)
        if response.status_code == 200:
            wait_completed(app, token, response.json()["id"])
    assert statuses.count(429) >= 1 and statuses[-1] == 429
    refused = app.generate(token, one, "over")
    assert refused.status_code == 429
    assert refused.json()["retry_after"] == int(refused.headers["Retry-After"]) > 0


def test_anonymous_generation_is_off_until_the_project_enables_it(server: Server) -> None:
    app = App(server, "anonco", "demo")
    form = {"files": ("a.png", png(), "image/png")}
    off = app.post(
        "/api/v1/generation/generate-anonymous-v2", files=form, data={"instructions": "x"}
    )
    assert off.status_code == 403
    enable = ("anonymous", "enable", "--org", "anonco", "--project", "demo", "--daily", "1")
    assert run_cli(server.env, *enable).returncode == 0
    made = app.post(
        "/api/v1/generation/generate-anonymous-v2", files=form, data={"instructions": "x"}
    )
    assert made.status_code == 200, made.text
    status = app.get(f"/api/v1/generation/anonymous-generations-v2/{made.json()['id']}/status")
    assert status.status_code == 200 and status.json()["user_id"] is None
    again = app.post(
        "/api/v1/generation/generate-anonymous-v2", files=form, data={"instructions": "y"}
    )
    assert again.status_code == 429 and "retry_after" in again.json()


def test_developer_routes_run_the_app(app: App) -> None:
    developer = {"X-User-Role": "developer", "X-Developer-Key": app.developer_key}
    base = app.server.url
    keys = httpx.get(f"{base}/api/v1/auth/developer-keys", headers=developer)
    assert keys.status_code == 200 and len(keys.json()) >= 1
    made = httpx.post(f"{base}/api/v1/auth/developer-keys", headers=developer, json={"name": "ci"})
    assert made.status_code == 201 and made.json()["key"]
    assert (
        httpx.delete(
            f"{base}/api/v1/auth/developer-keys/{made.json()['id']}", headers=developer
        ).status_code
        == 204
    )
    project_keys = f"{base}/api/v1/projects/{app.project_id}/api-keys"
    new_key = httpx.post(project_keys, headers=developer, json={"name": "mobile"}).json()
    assert new_key["key"] and new_key["is_active"]
    listed = httpx.get(project_keys, headers=developer).json()
    assert new_key["id"] in {k["id"] for k in listed} and all("key" not in k for k in listed)
    assert httpx.delete(f"{project_keys}/{new_key['id']}", headers=developer).status_code == 204
    users = httpx.get(f"{base}/api/v1/projects/{app.project_id}/users", headers=developer).json()
    assert users["total"] >= 2 and users["page_size"] == 50
    assert {"ada@example.com"} <= {u["email"] for u in users["users"]}
    as_user = httpx.get(f"{base}/api/v1/projects/{app.project_id}/users", headers=app.headers())
    assert as_user.status_code == 403


def test_a_per_end_user_quota_caps_each_user_separately(server: Server) -> None:
    app = App(server, "peruser", "app")
    args = ("plan", "set", "--org", "peruser", "--project", "app", "starter")
    assert run_cli(server.env, *args, "--end-user-monthly", "1").returncode == 0
    ann, ben = (app.user(f"{n}@example.com")["access_token"] for n in ("ann", "ben"))
    one = [("a.png", png(), "image/png")]
    assert app.generate(ann, one, "first").status_code == 200
    refused = app.generate(ann, one, "second")
    assert refused.status_code == 429 and "end user" in refused.json()["detail"]
    assert app.generate(ben, one, "ben's first").status_code == 200


def test_a_short_jwt_secret_is_refused_at_start() -> None:
    """HS256 with a short secret is guessed offline from one token; then any end user's token
    of any project can be forged. The compose file has no default to forget to change."""
    from pydantic import ValidationError

    from imagesmith.config import Settings

    for setting in ({"jwt_secret": "change-me"}, {"jwt_previous_secrets": "a" * 40 + ",short"}):
        with pytest.raises(ValidationError, match="at least 32 bytes"):
            Settings(**setting)
    assert Settings(jwt_secret="a" * 64, jwt_previous_secrets="b" * 32).jwt_secret == "a" * 64
    compose = (Path(__file__).parents[1] / "deploy" / "compose.yaml").read_text()
    assert "IMAGESMITH_JWT_SECRET: ${IMAGESMITH_JWT_SECRET:?" in compose
