"""The Python SDK (`imagesmith.client`, sync and async) and the client commands, against a real
server: generate with progress from the event stream, every resource, the error tree, retries
that honour Retry-After with one idempotency key, and a fresh virtualenv where
`pip install imagesmith` brings no torch and `imagesmith generate` draws what it is told."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import venv
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from imagesmith.client import (
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    GenerationEvent,
    GenerationFailedError,
    NotFoundError,
    RateLimitError,
    WaitTimeoutError,
)
from tests.pictures import png
from tests.serverproc import Server, create_key, pip_install

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("imagesmith"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("sdk"), models_dir, default_model="demo").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return create_key(server.env, "sdk", "app")


@pytest.fixture()
def client(server: Server, key: str) -> Iterator[Client]:
    with Client(server.url, api_key=key) as sdk:
        yield sdk


def red_on_blue(path: Path) -> tuple[int, int]:
    """Red-dominant and blue-dominant pixels of a picture."""
    pixels = list(Image.open(path).convert("RGB").getdata())
    reds = sum(1 for r, g, b in pixels if r > b + 60 and r > g + 60)
    blues = sum(1 for r, g, b in pixels if b > r + 60 and b > g + 30)
    return reds, blues


def test_generate_follows_progress_and_downloads(client: Client, tmp_path: Path) -> None:
    events: list[GenerationEvent] = []
    generation = client.generate(
        "a red circle on a blue background", seed=7, steps=30, on_progress=events.append
    )
    assert generation.status == "success" and generation.seed == 7 and generation.steps == 30
    assert events[-1].status == "success" and events[0].status in ("pending", "processing")
    steps = [e.progress.step for e in events if e.progress is not None]
    assert steps == sorted(steps) and steps[-1] == 30
    saved = generation.download(tmp_path / "circle.png")
    reds, blues = red_on_blue(saved)
    assert reds > 200 and blues > 1000, (reds, blues)  # 64x64: a red disc on blue
    # The same picture through the image's own record.
    image = client.images.get(generation.output_image_id or "")
    assert image.download(tmp_path).read_bytes() == saved.read_bytes()


def test_a_generation_deleted_while_followed_ends_its_events_and_its_wait_says_404(
    client: Client,
) -> None:
    made = client.generations.create(
        prompt="a slow one", model="tiny-sd", width=512, height=512, steps=50
    )
    seen = []
    for event in client.generations.events(made.id):
        seen.append(event.status)
        if len(seen) == 1:
            client.generations.delete(made.id)
    assert seen and seen[-1] in ("pending", "processing")  # and no error: the stream ended
    with pytest.raises(NotFoundError):
        client.wait(made.id, timeout=30)


def test_every_resource(client: Client, tmp_path: Path) -> None:
    made = [client.generations.create(f"a green square {i}", steps=2) for i in range(3)]
    done = [client.wait(g.id) for g in made]
    assert all(g.status == "success" for g in done)
    # Auto-pagination walks pages of one.
    page = client.generations.list(limit=1)
    assert len(page.data) == 1 and page.has_more
    walked = [g.id for g in page]
    assert {g.id for g in made} <= set(walked) and len(walked) == page.total
    updated = client.generations.update(made[0].id, meta={"by": "sdk"})
    assert updated.meta == {"by": "sdk"}
    rerun = client.wait(client.generations.regenerate(made[1].id).id)
    assert rerun.output_image_id == done[1].output_image_id  # in place: same image id
    slow = client.generations.create(
        "a slow purple triangle", model="tiny-sd", steps=50, width=256, height=256
    )
    assert client.generations.cancel(slow.id).status == "cancelled"
    assert client.generations.delete(made[2].id) == made[2].id
    with pytest.raises(NotFoundError):
        client.generations.get(made[2].id)

    uploaded = client.images.upload(png((64, 64), (0, 0, 255)), alias="@sky", filename="sky.png")
    assert uploaded.alias == "@sky" and client.images.get("@sky").id == uploaded.id
    assert client.images.set_alias(uploaded.id, "@sea").alias == "@sea"
    assert any(i.id == uploaded.id for i in client.images.list(source="uploaded"))
    flow = client.flows.get(done[0].flow_id or "")
    flow = client.flows.set_aliases(flow.id, {"@hero": done[0].output_image_id or ""})
    assert flow.aliases == {"@hero": done[0].output_image_id}
    assert client.flows.delete_alias(flow.id, "@hero").aliases == {}
    assert [g.id for g in client.flows.generations(flow.id)] == [done[0].id]
    assert client.images.delete(uploaded.id) == uploaded.id

    scope = client.live.create("sdk-scope", new_generations_limit=3)
    assert client.live.get("sdk-scope").new_generations_limit == 3
    assert client.live.update("sdk-scope", new_generations_limit=5).new_generations_limit == 5
    assert [s.slug for s in client.live.list(slug="sdk-scope")] == [scope.slug]
    assert client.live.delete("sdk-scope")


def test_errors_are_the_sdks_own(server: Server, client: Client) -> None:
    with Client(server.url, api_key="ims_wrong") as stranger, pytest.raises(AuthenticationError):
        stranger.generations.list()
    with pytest.raises(BadRequestError) as bad:
        client.generations.create("x", width=100, height=64)
    assert bad.value.status_code == 400 and "multiple of 8" in bad.value.message
    with pytest.raises(NotFoundError) as missing:
        client.generations.get("00000000-0000-0000-0000-000000000000")
    assert missing.value.code == "GENERATION_NOT_FOUND"
    # sd15's weights are not on this machine: the generation fails, and says why.
    with pytest.raises(GenerationFailedError) as failed:
        client.generate("a cat", model="sd15")
    assert failed.value.generation.status == "failed" and "sd15" in str(failed.value)
    kept = client.generate("a cat", model="sd15", raise_on_failure=False)
    assert kept.status == "failed" and kept.error_message
    # A wait ends at its timeout even while the job sits in the queue (no event comes then).
    # (tiny-sd draws at the size asked for; the demo draws 64 px and scales up: fast.)
    busy = client.generations.create("a slow cat", model="tiny-sd", steps=50, width=256, height=256)
    with pytest.raises(WaitTimeoutError) as late:
        client.generate("a queued cat", timeout=1.0)
    assert late.value.generation.status == "pending"
    for generation_id in (busy.id, late.value.generation.id):
        client.generations.cancel(generation_id)


def test_retries_honour_retry_after_with_one_idempotency_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 429 then a 503 then the answer: two waits (the server's Retry-After, then backoff), and
    every attempt of the create carries the same Idempotency-Key, so the server makes one."""
    seen: list[httpx.Request] = []
    answers = [
        httpx.Response(429, headers={"Retry-After": "3"}, json={"success": False}),
        httpx.Response(503, json={"success": False, "error": {"message": "busy"}}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if answers:
            return answers.pop(0)
        return httpx.Response(
            201, json={"success": True, "data": {"id": "g1", "status": "pending", "prompt": "p"}}
        )

    # time.sleep is the time module's, shared by every thread in this process: count only the
    # client's own waits (a sampler thread left by another test once slept 0.25 s in here).
    waits: list[float] = []
    this_thread, real_sleep = threading.get_ident(), time.sleep

    def sleep(seconds: float) -> None:
        if threading.get_ident() == this_thread:
            waits.append(seconds)
        else:
            real_sleep(seconds)

    monkeypatch.setattr("imagesmith.client._sync.time.sleep", sleep)
    transport = httpx.MockTransport(handler)
    with Client("http://sdk.test", api_key="k", http_client=httpx.Client(transport=transport)) as c:
        assert c.generations.create("p").id == "g1"
        assert len({r.headers["Idempotency-Key"] for r in seen}) == 1 and len(seen) == 3
        assert waits[0] == 3.0 and 0 < waits[1] < 2
        # A quota that resets in a day is raised at once, not slept through.
        answers.append(httpx.Response(429, headers={"Retry-After": "86400"}, json={}))
        with pytest.raises(RateLimitError) as limited:
            c.generations.get("g1")
        assert limited.value.retry_after == 86400 and len(waits) == 2


def test_the_async_client(server: Server, key: str, tmp_path: Path) -> None:
    async def go() -> None:
        async with AsyncClient(server.url, api_key=key) as sdk:
            steps: list[int] = []

            async def progress(event: GenerationEvent) -> None:
                if event.progress:
                    steps.append(event.progress.step)

            generation = await sdk.generate("an async red circle", steps=4, on_progress=progress)
            assert generation.status == "success" and steps[-1] == 4
            url = generation.output_images[0].storage_url
            assert (await sdk.download(url, tmp_path / "a.png")).stat().st_size > 0
            page = await sdk.generations.list(limit=1)
            assert len([g async for g in page]) == page.total >= 1
            assert len([g async for g in sdk.generations.list(limit=1)]) == page.total
            with pytest.raises(NotFoundError):
                await sdk.images.get("@nothing")

    asyncio.run(go())


def cli(env: dict[str, str], *args: str, exe: str = CLI) -> subprocess.CompletedProcess[str]:
    return subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=300)


def test_client_commands(server: Server, key: str, tmp_path: Path) -> None:
    env = {**os.environ, "IMAGESMITH_URL": server.url, "IMAGESMITH_API_KEY": key}
    out = tmp_path / "two.png"
    made = cli(env, "generate", "a yellow triangle", "-n", "2", "--seed", "3", "-o", str(out))
    assert made.returncode == 0, made.stderr
    assert made.stdout.split() == [str(out), str(tmp_path / "two-2.png")]
    assert "seed 3" in made.stderr
    listed = cli(env, "generations", "list", "--limit", "1", "--json")
    assert listed.returncode == 0, listed.stderr
    generation_id = httpx.Response(200, content=listed.stdout).json()[0]["id"]
    got = cli(env, "generations", "get", generation_id)
    assert got.returncode == 0 and "success" in got.stdout and "a yellow triangle" in got.stdout
    refused = cli(env, "generations", "cancel", generation_id)  # it is finished
    assert refused.returncode == 1 and "409" in refused.stderr
    assert cli(env, "generations", "delete", generation_id).returncode == 0
    gone = cli(env, "generations", "get", generation_id)
    assert gone.returncode == 1 and "not found" in gone.stderr
    (tmp_path / "logo.png").write_bytes(png((64, 64), (255, 0, 0)))
    uploaded = cli(env, "images", "upload", str(tmp_path / "logo.png"), "--alias", "@logo")
    assert uploaded.returncode == 0 and "@logo" in uploaded.stdout
    failed = cli(env, "generate", "a cat", "--model", "sd15", "-o", str(tmp_path / "cat.png"))
    assert (
        failed.returncode == 1 and "sd15" in failed.stderr and not (tmp_path / "cat.png").exists()
    )
    keyless = {k: v for k, v in env.items() if k != "IMAGESMITH_API_KEY"}
    assert cli(keyless, "generate", "x").returncode == 2


@pytest.mark.stack_independent  # the SDK alone talks HTTP to the server: any stack will do
def test_a_fresh_virtualenv_gets_the_sdk_without_the_server(
    server: Server, key: str, tmp_path: Path
) -> None:
    """`pip install imagesmith` (no extras) into a new virtualenv: no torch, no FastAPI; its
    `imagesmith generate` draws a red circle on blue; a server command says what to install."""
    home = tmp_path / "venv"
    venv.create(home, with_pip=True)
    python = str(home / "bin" / "python")
    install = pip_install(python, str(REPO), timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    probe = "import importlib.util as u; print([m for m in ('torch', 'fastapi', 'sqlalchemy', "
    probe += "'diffusers') if u.find_spec(m)]); import imagesmith.client"
    absent = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    assert absent.returncode == 0 and absent.stdout.strip() == "[]", absent.stderr
    exe = str(home / "bin" / "imagesmith")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    out = tmp_path / "out.png"
    args = ("--server", server.url, "--key", key, "--seed", "5", "-o", str(out))
    drawn = cli(env, "generate", "a red circle on a blue background", *args, exe=exe)
    assert drawn.returncode == 0, drawn.stderr
    reds, blues = red_on_blue(out)
    assert reds > 200 and blues > 1000, (reds, blues)
    serve = cli(env, "serve", exe=exe)
    assert serve.returncode == 1 and "imagesmith[server]" in serve.stderr
