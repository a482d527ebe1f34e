"""Webhooks, end to end: a real server sends to a local receiver on 127.0.0.1 that checks every
delivery with the `standardwebhooks` library and the secret the CLI printed; receivers that
fail, vanish (410) or ask to wait; a rotation; another tenant; a server killed between two
attempts of one delivery."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from imagesmith.client import Client
from tests.pictures import png
from tests.serverproc import Server, create_key, run_cli, wait_terminal
from tests.stubs import QuietHandler, local_server
from tests.test_abuse import BROKEN_MODEL
from tests.test_devkit import App

ORG, PROJECT = "hookco", "site"
Call = tuple[dict[str, str], bytes]  # one delivery as received: headers, body


Answer = tuple[int, dict[str, str], float]  # status, headers, seconds to stall first


class Receiver:
    """Records every POST; answers each path from its script, then 200."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, dict[str, str], bytes]] = []
        self.scripts: dict[str, list[Answer]] = {}
        self.url = ""

    def script(self, path: str, *answers: int | tuple[int, dict[str, str]] | Answer) -> str:
        script: list[Answer] = []
        for answer in answers:
            if isinstance(answer, int):
                script.append((answer, {}, 0.0))
            elif len(answer) == 2:
                script.append((answer[0], answer[1], 0.0))
            else:
                script.append(answer)  # type: ignore[arg-type]
        with self.lock:
            self.scripts[path] = script
        return self.url + path

    def at(self, path: str) -> list[Call]:
        with self.lock:
            return [(headers, body) for p, headers, body in self.calls if p == path]

    def wait(
        self, path: str, count: int, timeout: float = 60
    ) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            calls = self.at(path)
            if len(calls) >= count:
                return calls
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.at(path))} deliveries, expected {count}")

    def handler(self) -> type[QuietHandler]:
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    receiver.calls.append((self.path, headers, body))
                    script = receiver.scripts.get(self.path, [])
                    status, extra, stall = script.pop(0) if script else (200, {}, 0.0)
                time.sleep(stall)
                reply = extra.get("body", "ok").encode()
                self.send_response(status)
                for name, value in extra.items():
                    if name != "body":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        return Handler


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    with local_server(found.handler()) as url:
        found.url = url
        yield found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("webhooks")
    models_file = data / "models.toml"
    models_file.write_text(BROKEN_MODEL)
    srv = Server(
        data,
        models_dir,
        models_file=models_file,
        allow_private_urls="true",
        webhook_retry_schedule="0.3,0.3,0.3",
        webhook_poll_seconds=0.2,
        webhook_progress_seconds=0.1,
        webhook_timeout_seconds=2,
        public_url="http://images.example.test",
    ).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return create_key(server.env, ORG, PROJECT)


@pytest.fixture(scope="module")
def secret(server: Server, key: str) -> str:
    printed = run_cli(server.env, "webhooks", "secret", "--org", ORG, "--project", PROJECT)
    assert printed.returncode == 0, printed.stderr
    value = printed.stdout.strip().splitlines()[-1]
    assert value.startswith("whsec_")
    return value


def verified(secret: str, delivery: Call) -> dict[str, Any]:
    headers, body = delivery
    payload: dict[str, Any] = Webhook(secret).verify(body, headers)
    return payload


def create(server: Server, key: str, **body: Any) -> dict[str, Any]:
    with server.client(key) as client:
        made = client.post(
            "/api/v1/generations", json={"prompt": "a red circle", "autoEnhance": False, **body}
        )
        assert made.status_code == 201, made.text
        return dict(made.json()["data"])


def test_a_generations_own_webhook_is_signed_and_carries_the_native_record(
    server: Server, key: str, secret: str, receiver: Receiver
) -> None:
    url = receiver.script("/own")
    made = create(server, key, webhookUrl=url, seed=3)
    started, completed = receiver.wait("/own", 2)
    first, last = verified(secret, started), verified(secret, completed)
    assert first["type"] == "generation.started" and first["data"]["status"] == "processing"
    assert last["type"] == "generation.completed" and last["data"]["id"] == made["id"]
    data = last["data"]
    assert data["status"] == "success" and data["seed"] == 3
    assert data["outputImage"]["storageUrl"].startswith("http://images.example.test/cdn/")
    assert last["timestamp"].endswith("Z")
    assert started[0]["webhook-id"] != completed[0]["webhook-id"]
    with pytest.raises(Exception):  # noqa: B017 - a forged body does not verify
        Webhook(secret).verify(completed[1].replace(b"success", b"failure"), completed[0])
    with server.client(key) as client:
        log = client.get(f"/api/v1/generations/{made['id']}/webhooks").json()
    assert log["pagination"]["total"] == 2
    assert {(d["eventType"], d["status"], d["attempts"]) for d in log["data"]} == {
        ("generation.started", "delivered", 1),
        ("generation.completed", "delivered", 1),
    }


def test_each_delivery_opens_its_own_connection(server: Server, key: str) -> None:
    """Deliveries go to the checked address with SNI and Host set by hand; a kept-alive
    connection (pooled by address) would carry the next host's payload over a TLS session
    verified for another host at the same address. A keep-alive receiver sees new sockets."""
    ports: list[int] = []

    class KeepAlive(QuietHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            ports.append(self.client_address[1])
            self.send_body(200, b"ok", "text/plain")

    with local_server(KeepAlive) as url:
        create(server, key, webhookUrl=f"{url}/kept")
        deadline = time.monotonic() + 60
        while len(ports) < 2:  # generation.started, then generation.completed
            assert time.monotonic() < deadline, ports
            time.sleep(0.05)
    assert len(set(ports)) == len(ports), ports


def test_a_failing_receiver_gets_the_same_webhook_id_until_it_answers(
    server: Server, key: str, secret: str, receiver: Receiver
) -> None:
    url = receiver.script("/flaky", 500, 500)
    with server.client(key) as client:
        made = client.post("/api/v1/webhooks", json={"url": url, "events": ["completed"]})
        assert made.status_code == 201, made.text
        endpoint = made.json()["data"]
        assert endpoint["events"] == ["generation.completed"] and endpoint["enabled"] is True
        generation = create(server, key)
        calls = receiver.wait("/flaky", 3)
        assert len({headers["webhook-id"] for headers, _ in calls}) == 1
        assert all(verified(secret, call)["data"]["id"] == generation["id"] for call in calls)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = client.get(f"/api/v1/webhooks/{endpoint['id']}/deliveries").json()["data"]
            if rows and rows[0]["status"] == "delivered":
                break
            time.sleep(0.1)
        row = rows[0]
        assert row["status"] == "delivered" and row["attempts"] == 3, row
        assert [a["statusCode"] for a in row["attemptLog"]] == [500, 500, 200]
        assert row["webhookId"] == calls[0][0]["webhook-id"] and row["nextAttemptAt"] is None
        assert client.delete(f"/api/v1/webhooks/{endpoint['id']}").status_code == 200


def test_410_disables_the_endpoint_and_a_dead_one_fails_after_the_schedule(
    server: Server, key: str, receiver: Receiver
) -> None:
    gone = receiver.script("/gone", 410)
    down = receiver.script("/down", 500, 500, 500, 500, 500)
    with server.client(key) as client:
        ids = [
            client.post("/api/v1/webhooks", json={"url": u, "events": ["completed"]}).json()[
                "data"
            ]["id"]
            for u in (gone, down)
        ]
        create(server, key)
        receiver.wait("/down", 4)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            dead = client.get(f"/api/v1/webhooks/{ids[1]}/deliveries").json()["data"][0]
            if dead["status"] == "failed":
                break
            time.sleep(0.1)
        assert (
            dead["status"] == "failed" and dead["attempts"] == 4 and dead["lastStatusCode"] == 500
        )
        disabled = client.get(f"/api/v1/webhooks/{ids[0]}").json()["data"]
        assert disabled["enabled"] is False and "410" in disabled["disabledReason"]
        create(server, key)
        receiver.wait("/down", 5)  # the next event still reaches the live one …
        assert len(receiver.at("/gone")) == 1  # … and never the one that said Gone
        retried = client.post(f"/api/v1/webhooks/deliveries/{dead['id']}/retry")
        assert retried.status_code == 200 and retried.json()["data"]["status"] == "pending"
        assert receiver.wait("/down", 6)[-1][0]["webhook-id"] == dead["webhookId"]
        for endpoint_id in ids:
            client.delete(f"/api/v1/webhooks/{endpoint_id}")


def test_failed_and_cancelled_generations_say_so(
    server: Server, key: str, secret: str, receiver: Receiver
) -> None:
    failing = receiver.script("/failing")
    broken = create(server, key, webhookUrl=failing, model="broken")
    cancelling = receiver.script("/cancelling")
    doomed = create(server, key, webhookUrl=cancelling, webhookEvents=["cancelled"], steps=50)
    with server.client(key) as client:
        assert client.post(f"/api/v1/generations/{doomed['id']}/cancel").status_code == 200
    (cancelled,) = receiver.wait("/cancelling", 1)
    event = verified(secret, cancelled)
    assert event["type"] == "generation.cancelled" and event["data"]["status"] == "cancelled"
    calls = receiver.wait("/failing", 2)
    last = verified(secret, calls[-1])
    assert last["type"] == "generation.failed" and last["data"]["id"] == broken["id"]
    assert last["data"]["errorMessage"]


def test_the_sdk_names_a_webhook_too(
    server: Server, key: str, secret: str, receiver: Receiver
) -> None:
    url = receiver.script("/sdk")
    with Client(server.url, api_key=key) as sdk:
        made = sdk.generate("a sdk circle", webhook_url=url, webhook_events=["completed"])
    (delivery,) = receiver.wait("/sdk", 1)
    assert verified(secret, delivery)["data"]["id"] == made.id


def test_during_a_rotation_both_secrets_sign(
    server: Server, key: str, secret: str, receiver: Receiver
) -> None:
    url = receiver.script("/rotated")
    rotated = run_cli(
        server.env, "webhooks", "secret", "--org", ORG, "--project", PROJECT, "--rotate"
    )
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip().splitlines()[-1]
    assert new.startswith("whsec_") and new != secret
    create(server, key, webhookUrl=url, webhookEvents=["generation.completed"])
    (delivery,) = receiver.wait("/rotated", 1)
    assert len(delivery[0]["webhook-signature"].split()) == 2
    assert verified(secret, delivery) == verified(new, delivery)
    with server.client(key) as client:
        shown = client.get("/api/v1/webhooks/secret").json()["data"]
    assert shown == {"secret": new, "signingSecrets": 2}


def test_progress_only_when_asked_and_other_dialects_name_a_webhook_too(
    server: Server, key: str, secret: str, receiver: Receiver
) -> None:
    url = receiver.script("/progress")
    create(
        server, key, webhookUrl=url, webhookEvents=["progress", "completed"], steps=50, width=256,
        height=256,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    kinds: list[str] = []
    while "generation.completed" not in kinds and time.monotonic() < deadline:
        kinds = [verified(secret, call)["type"] for call in receiver.at("/progress")]
        time.sleep(0.05)
    assert kinds[-1] == "generation.completed" and "generation.progress" in kinds, kinds
    assert "generation.started" not in kinds
    stablecog = receiver.script("/stablecog")
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as sc:
        made = sc.post(
            "/v1/image/generation/create",
            json={
                "prompt": "a blue square",
                "webhook_url": stablecog,
                "webhook_events": ["completed"],
            },
            timeout=120,
        )
    assert made.status_code == 200, made.text
    (done,) = receiver.wait("/stablecog", 1)
    assert verified(secret, done)["data"]["status"] == "success"
    # An app's end user cannot point the project's signed webhooks at a URL of their own; the
    # developer's endpoint hears their generations.
    app = App(server, "hookdev", "shop")
    token = app.user("hook@example.com")["access_token"]
    devkit = receiver.script("/devkit")
    before = app.server.stored_keys()
    instructions = json.dumps({"prompt": "a green square", "webhook_url": devkit})
    refused = app.generate(token, [("a.png", png(), "image/png")], instructions)
    assert refused.status_code == 422 and "end user" in str(refused.json()["detail"]), refused.text
    assert app.server.stored_keys() == before  # refused before the examples were stored
    with httpx.Client(base_url=server.url, headers={"X-API-Key": app.key}) as dev:
        assert dev.post("/api/v1/webhooks", json={"url": devkit}).status_code == 201
    instructions = json.dumps({"prompt": "a green square"})
    made = app.generate(token, [("a.png", png(), "image/png")], instructions)
    assert made.status_code == 200, made.text
    done = [call[1] for call in receiver.wait("/devkit", 2)]
    assert json.loads(done[-1])["type"] == "generation.completed"
    assert json.loads(done[-1])["data"]["id"] == made.json()["id"]


def test_slow_and_redirecting_receivers_are_failures_not_followed(
    server: Server, key: str, receiver: Receiver
) -> None:
    slow = receiver.script("/slow", (200, {}, 3.0))  # answers only after the 2 s deadline
    # Found by review: a Retry-After that is a digit but not ASCII, and a body with NUL and line
    # breaks (PostgreSQL refuses NUL; line breaks would forge log lines) left the row pending,
    # re-sent every 45 s forever. Now they are ordinary failed attempts.
    weird = receiver.script(
        "/weird", (503, {"Retry-After": "\u00b2", "body": "down\x00\nwebhook.delivered x=1"})
    )
    create(server, key, webhookUrl=weird, webhookEvents=["completed"])
    moved = receiver.script("/moved", *[(302, {"Location": receiver.url + "/own"})] * 4)
    create(server, key, webhookUrl=slow, webhookEvents=["completed"])
    generation = create(server, key, webhookUrl=moved, webhookEvents=["completed"])
    assert len(receiver.wait("/slow", 2)) == 2  # the stalled attempt, then the retry
    receiver.wait("/moved", 4)
    with server.client(key) as client:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            (row,) = client.get(f"/api/v1/generations/{generation['id']}/webhooks").json()["data"]
            if row["status"] == "failed":
                break
            time.sleep(0.1)
    assert row["status"] == "failed" and row["lastStatusCode"] == 302
    assert "redirects are not followed" in row["lastError"]
    first = [e for e in row["attemptLog"] if e["statusCode"] == 302]
    assert len(first) == 4
    slow_rows = [
        d
        for d in server.sql("SELECT url, status, attempt_log FROM webhook_deliveries")
        if d[0] == slow
    ]
    (slow_row,) = slow_rows
    log = json.loads(slow_row[2]) if isinstance(slow_row[2], str) else slow_row[2]
    assert slow_row[1] == "delivered" and "no answer within 2 s" in log[0]["error"]
    (weird_row,) = [
        d
        for d in server.sql("SELECT url, status, last_error FROM webhook_deliveries")
        if d[0] == weird
    ]
    assert weird_row[1] == "delivered" and len(receiver.at("/weird")) == 2
    assert "\x00" not in server.log() and "\nwebhook.delivered x=1" not in server.log()


def test_a_retry_goes_to_the_endpoints_new_url(
    server: Server, key: str, secret: str, receiver: Receiver
) -> None:
    old = receiver.script("/old-home", 500, 500, 500, 500)
    with server.client(key) as client:
        endpoint = client.post(
            "/api/v1/webhooks", json={"url": old, "events": ["completed"]}
        ).json()["data"]
        create(server, key)
        (first,) = receiver.wait("/old-home", 1)
        moved = client.patch(
            f"/api/v1/webhooks/{endpoint['id']}", json={"url": receiver.url + "/new-home"}
        )
        assert moved.status_code == 200 and moved.json()["data"]["url"].endswith("/new-home")
        (second,) = receiver.wait("/new-home", 1)
        assert second[0]["webhook-id"] == first[0]["webhook-id"]
        assert verified(secret, second)["type"] == "generation.completed"
        client.delete(f"/api/v1/webhooks/{endpoint['id']}")


def test_a_master_key_manages_any_projects_endpoints(
    server: Server, key: str, receiver: Receiver
) -> None:
    master = run_cli(
        server.env, "keys", "create", "--org", ORG, "--project", PROJECT, "--type", "master"
    )
    assert master.returncode == 0, master.stderr
    admin = master.stdout.strip().splitlines()[-1]
    base = f"/api/admin/projects/{ORG}/{PROJECT}/webhooks"
    with server.client(admin) as client:
        made = client.post(base, json={"url": receiver.url + "/admin", "events": ["failed"]})
        assert made.status_code == 201, made.text
        endpoint = made.json()["data"]
        assert client.get(f"/api/admin/projects/{ORG}/nope/webhooks").status_code == 404
        listed = client.get(base).json()["data"]
    with server.client(key) as client:  # the project's own key sees the same endpoint
        assert [e["id"] for e in client.get("/api/v1/webhooks").json()["data"]] == [
            e["id"] for e in listed
        ]
        assert client.get(base).status_code == 403  # … but not through the admin routes
    listed_cli = run_cli(server.env, "webhooks", "list", "--org", ORG, "--project", PROJECT)
    assert endpoint["id"] in listed_cli.stdout
    removed = run_cli(
        server.env, "webhooks", "delete", "--org", ORG, "--project", PROJECT, endpoint["id"]
    )
    assert removed.returncode == 0, removed.stderr
    with server.client(admin) as client:
        assert client.get(f"{base}/{endpoint['id']}").status_code == 404


def test_strangers_and_bad_input_get_a_clear_4xx(
    server: Server, key: str, receiver: Receiver
) -> None:
    other = create_key(server.env, "othercorp", "app")
    with server.client(key) as client:
        mine = client.post("/api/v1/webhooks", json={"url": receiver.url + "/x"}).json()["data"]
        generation = create(server, key)
        bad = [
            client.post("/api/v1/webhooks", json={"url": "ftp://example.com/x"}),
            client.post("/api/v1/webhooks", json={"url": "http://"}),
            client.post("/api/v1/webhooks", json={"url": receiver.url, "events": ["sold"]}),
            client.post("/api/v1/webhooks", json={"url": receiver.url, "events": []}),
            client.post("/api/v1/webhooks", json={"url": "http://x.test/" + "a" * 3000}),
            client.post("/api/v1/webhooks", json={"url": "http://[::1"}),  # was a 500
            client.patch(f"/api/v1/webhooks/{mine['id']}", json={"enabled": "yes"}),
            client.post(
                "/api/v1/generations", json={"prompt": "x", "webhookUrl": "javascript:alert(1)"}
            ),
        ]
        for response in bad:
            assert response.status_code in (400, 422), response.text
            assert response.json()["success"] is False
        client.delete(f"/api/v1/webhooks/{mine['id']}")
    with server.client(other) as stranger:
        for path in (
            f"/api/v1/webhooks/{mine['id']}",
            f"/api/v1/webhooks/{mine['id']}/deliveries",
            f"/api/v1/generations/{generation['id']}/webhooks",
        ):
            assert stranger.get(path).status_code == 404
        assert stranger.get("/api/v1/webhooks").json()["data"] == []
        assert stranger.get("/api/v1/webhooks/secret").json()["data"]["secret"] != ""
    closed = Server(server.data_dir.parent / "closed", server.data_dir.parent / "unused")
    closed.env.update(server.env)  # the same database: only private URLs change
    closed.env.pop("IMAGESMITH_ALLOW_PRIVATE_URLS")
    closed.start("--no-worker")
    try:
        with closed.client(key) as client:
            for url in (receiver.url, "http://169.254.169.254/latest/meta-data", "http://[::1]/"):
                refused = client.post("/api/v1/webhooks", json={"url": url})
                assert refused.status_code == 400, refused.text
                assert "public address" in refused.json()["error"]["message"]
    finally:
        closed.stop()


def test_killing_the_server_between_attempts_loses_no_delivery(
    server: Server, key: str, secret: str, receiver: Receiver
) -> None:
    url = receiver.script("/durable", (503, {"Retry-After": "4"}))
    generation = create(server, key, webhookUrl=url, webhookEvents=["completed"])
    (first,) = receiver.wait("/durable", 1)
    # A delivered row from long ago: the restarted sender prunes the log on its first round.
    server.sql(
        "UPDATE webhook_deliveries SET created_at = :old WHERE status = 'delivered' AND url = :u",
        old="2020-01-01 00:00:00",
        u=receiver.url + "/own",
    )
    server.kill()  # the retry is due in 4 s; nothing of this process survives
    server.start("--no-worker")  # the API alone: its sender finds the pending row
    calls = receiver.wait("/durable", 2)
    assert calls[1][0]["webhook-id"] == first[0]["webhook-id"]
    assert verified(secret, calls[1])["data"]["id"] == generation["id"]
    with server.client(key) as client:
        data = client.get(f"/api/v1/generations/{generation['id']}").json()["data"]
        assert wait_terminal(client, generation["id"])["status"] == "success" == data["status"]
    left = server.sql(
        "SELECT count(*) FROM webhook_deliveries WHERE url = :u", u=receiver.url + "/own"
    )
    assert left == [(0,)]  # pruned: older than IMAGESMITH_WEBHOOK_RETENTION_DAYS
