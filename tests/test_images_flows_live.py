"""Images, @aliases, flows, references, CDN paths and live URLs against a real server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagesmith.api.client_ip import parse_networks, real_client
from imagesmith.limits.rate import ip_bucket
from tests.pictures import huge_png, png
from tests.serverproc import Server, create_key, run_cli

WAIT = {"Prefer": "wait=60"}


@pytest.fixture(scope="module")
def lib_key(server: Server) -> str:
    return create_key(server.env, "lib", "site")


@pytest.fixture()
def api(server: Server, lib_key: str) -> Iterator[httpx.Client]:
    with server.client(lib_key) as client:
        yield client


def upload(api: httpx.Client, data: bytes | None = None, **fields: str) -> httpx.Response:
    return api.post(
        "/api/v1/images/upload",
        files={"file": ("x.png", data if data is not None else png(), "image/png")},
        data=fields,
    )


def test_upload_alias_cdn_and_conflict(api: httpx.Client, server: Server) -> None:
    alias = f"@logo-{uuid.uuid4().hex[:6]}"
    response = upload(api, alias=alias, meta='{"team": "brand"}')
    assert response.status_code == 201, response.text
    image = response.json()["data"]
    assert image["source"] == "uploaded" and image["alias"] == alias
    assert (image["width"], image["height"], image["mimeType"]) == (64, 64, "image/png")
    assert image["meta"] == {"team": "brand"} and len(image["sha256"]) == 64
    assert uuid.UUID(image["flowId"])  # omitted flowId → a new flow
    by_id = httpx.get(image["storageUrl"])
    by_alias = httpx.get(f"{server.url}/cdn/lib/site/img/{alias}")
    assert by_id.status_code == by_alias.status_code == 200
    assert by_id.content == by_alias.content == png()
    assert by_alias.headers["etag"] and by_alias.headers["cache-control"] == "public, no-cache"
    assert api.get(f"/api/v1/images/{alias}").json()["data"]["id"] == image["id"]
    taken = upload(api, alias=alias)
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "ALIAS_CONFLICT"
    none_flow = upload(api, flowId="null").json()["data"]
    assert none_flow["flowId"] is None


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"GIF89a" + b"\x00" * 64, 400, "UNSUPPORTED_IMAGE"),
        (png()[:70], 400, "INVALID_IMAGE"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * (6 * 1024 * 1024), 413, "PAYLOAD_TOO_LARGE"),
        (huge_png(20000, 20000), 400, "INVALID_IMAGE"),
    ],
    ids=["gif", "truncated", "6MB", "20000x20000"],
)
def test_bad_uploads_store_nothing(
    api: httpx.Client, server: Server, data: bytes, status: int, code: str
) -> None:
    before = server.stored_keys()
    total = api.get("/api/v1/images").json()["pagination"]["total"]
    response = upload(api, data)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert server.stored_keys() == before
    assert api.get("/api/v1/images").json()["pagination"]["total"] == total


def test_library_list_update_alias_delete(api: httpx.Client, server: Server) -> None:
    flow = str(uuid.uuid4())
    first = upload(api, flowId=flow).json()["data"]
    second = upload(api, flowId=flow, flowAlias="@bg").json()["data"]
    listed = api.get("/api/v1/images", params={"flowId": flow}).json()
    assert listed["pagination"]["total"] == 2
    assert [i["id"] for i in listed["data"]] == [second["id"], first["id"]]
    uploads = api.get("/api/v1/images", params={"source": "uploaded", "limit": 1}).json()
    assert uploads["pagination"]["hasMore"] is True
    # Technical and flow aliases resolve in context.
    assert api.get("/api/v1/images/@upload").json()["data"]["id"] == second["id"]
    assert (
        api.get("/api/v1/images/@bg", params={"flowId": flow}).json()["data"]["id"] == second["id"]
    )
    assert api.get("/api/v1/images/@bg").status_code == 404  # no flow in context
    updated = api.put(
        f"/api/v1/images/{first['id']}",
        json={"focalPoint": {"x": 0.25, "y": 0.75}, "meta": {"k": 1}},
    ).json()["data"]
    assert updated["focalPoint"] == {"x": 0.25, "y": 0.75} and updated["meta"] == {"k": 1}
    bad = api.put(f"/api/v1/images/{first['id']}", json={"focalPoint": {"x": 2, "y": 0}})
    assert bad.status_code == 400
    alias = f"@hero-{uuid.uuid4().hex[:6]}"
    assert api.put(f"/api/v1/images/{first['id']}/alias", json={"alias": alias}).status_code == 200
    clash = api.put(f"/api/v1/images/{second['id']}/alias", json={"alias": alias})
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "ALIAS_CONFLICT"
    assert api.put(f"/api/v1/images/{first['id']}/alias", json={"alias": "nope"}).status_code == 400
    cleared = api.put(f"/api/v1/images/{first['id']}/alias", json={"alias": None}).json()["data"]
    assert cleared["alias"] is None
    # Delete cleans the flow alias map and the object.
    assert api.delete(f"/api/v1/images/{second['id']}").json()["data"]["id"] == second["id"]
    assert api.get(f"/api/v1/images/{second['id']}").status_code == 404
    assert f"lib/site/img/{second['id']}" not in server.stored_keys()
    flow_after = api.get(f"/api/v1/flows/{flow}")
    assert flow_after.status_code == 200, flow_after.text
    assert flow_after.json()["data"]["aliases"] == {}


def test_references_from_prompt_and_list(api: httpx.Client) -> None:
    alias = f"@ref-{uuid.uuid4().hex[:6]}"
    ref = upload(api, alias=alias).json()["data"]
    other = upload(api).json()["data"]
    created = api.post(
        "/api/v1/generations",
        headers=WAIT,
        json={
            "prompt": f"a poster in the style of {alias} and @nobody-knows",
            "referenceImages": [other["id"], alias],
        },
    )
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert data["status"] == "success"
    assert [r["id"] for r in data["referenceImages"]] == [other["id"], ref["id"]]
    assert data["referencedImages"][1] == {"imageId": ref["id"], "alias": alias}
    # The first reference became the img2img init image at the documented default strength.
    assert data["initImage"] == other["id"] and data["promptStrength"] == 0.75
    unknown = api.post("/api/v1/generations", json={"prompt": "x", "referenceImages": ["@ghost"]})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "IMAGE_NOT_FOUND"
    prompt_only = api.post(
        "/api/v1/generations", headers=WAIT, json={"prompt": f"{alias} on a wall"}
    ).json()["data"]
    assert [r["id"] for r in prompt_only["referenceImages"]] == [ref["id"]]


def test_flow_chain_aliases_and_delete(api: httpx.Client, server: Server) -> None:
    first = api.post(
        "/api/v1/generations", headers=WAIT, json={"prompt": "scene one", "flowAlias": "@scene"}
    ).json()["data"]
    flow = first["flowId"]
    second = api.post(
        "/api/v1/generations",
        headers=WAIT,
        json={"prompt": "scene two from @scene", "flowId": flow},
    ).json()["data"]
    assert second["referenceImages"][0]["id"] == first["outputImageId"]
    info = api.get(f"/api/v1/flows/{flow}").json()["data"]
    assert info["aliases"] == {"@scene": first["outputImageId"]}
    assert info["generationCount"] == 2 and info["imageCount"] == 2
    assert {f["id"] for f in api.get("/api/v1/flows", params={"limit": 100}).json()["data"]} >= {
        flow
    }
    gens = api.get(f"/api/v1/flows/{flow}/generations").json()["data"]
    assert [g["id"] for g in gens] == [second["id"], first["id"]]
    assert len(api.get(f"/api/v1/flows/{flow}/images").json()["data"]) == 2
    assert (
        api.get("/api/v1/images/@last", params={"flowId": flow}).json()["data"]["id"]
        == second["outputImageId"]
    )
    assert (
        api.get("/api/v1/images/@first", params={"flowId": flow}).json()["data"]["id"]
        == first["outputImageId"]
    )
    merged = api.put(
        f"/api/v1/flows/{flow}/aliases", json={"aliases": {"@final": second["outputImageId"]}}
    ).json()["data"]
    assert set(merged["aliases"]) == {"@scene", "@final"}
    removed = api.delete(f"/api/v1/flows/{flow}/aliases/@scene").json()["data"]
    assert set(removed["aliases"]) == {"@final"}
    regen = api.post(f"/api/v1/flows/{flow}/regenerate")
    assert regen.status_code == 200 and regen.json()["data"]["id"] == second["id"]
    # Keep one image through the flow's deletion with a project alias.
    keep = f"@keep-{uuid.uuid4().hex[:6]}"
    api.put(f"/api/v1/images/{first['outputImageId']}/alias", json={"alias": keep})
    assert api.delete(f"/api/v1/flows/{flow}").status_code == 200
    assert api.get(f"/api/v1/flows/{flow}").status_code == 404
    assert api.get(f"/api/v1/generations/{first['id']}").status_code == 404
    kept = api.get(f"/api/v1/images/{keep}").json()["data"]
    assert kept["id"] == first["outputImageId"] and kept["flowId"] is None
    assert api.get(f"/api/v1/images/{second['outputImageId']}").status_code == 404


def test_generation_alias_survives_generation_delete(api: httpx.Client, server: Server) -> None:
    alias = f"@banner-{uuid.uuid4().hex[:6]}"
    data = api.post(
        "/api/v1/generations", headers=WAIT, json={"prompt": "banner", "alias": alias}
    ).json()["data"]
    assert api.delete(f"/api/v1/generations/{data['id']}").status_code == 200
    kept = httpx.get(f"{server.url}/cdn/lib/site/img/{alias}")
    assert kept.status_code == 200 and kept.headers["x-image-id"] == data["outputImageId"]


def test_regenerated_image_is_revalidated_not_stale(api: httpx.Client, server: Server) -> None:
    data = api.post("/api/v1/generations", headers=WAIT, json={"prompt": "v1"}).json()["data"]
    url = data["outputImage"]["storageUrl"]
    first = httpx.get(url)
    assert httpx.get(url, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    api.post(f"/api/v1/generations/{data['id']}/regenerate", headers=WAIT)
    after = httpx.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert after.status_code == 200 and after.content != first.content
    assert after.headers["etag"] != first.headers["etag"]


def test_other_projects_cannot_see_library(server: Server, api: httpx.Client, key_b: str) -> None:
    image = upload(api).json()["data"]
    flow = image["flowId"]
    with server.client(key_b) as other:
        assert other.get(f"/api/v1/images/{image['id']}").status_code == 404
        assert other.delete(f"/api/v1/images/{image['id']}").status_code == 404
        assert other.get(f"/api/v1/flows/{flow}").status_code == 404
        assert (
            other.post(
                "/api/v1/generations", json={"prompt": "x", "referenceImages": [image["id"]]}
            ).status_code
            == 404
        )
    assert httpx.get(f"{server.url}/cdn/globex/app/img/{image['id']}").status_code == 404


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("live"),
        models_dir,
        live_ip_limit="3/hour",
        trusted_proxies="127.0.0.1",
    ).start()
    yield srv
    srv.stop()


def live(server: Server, scope: str, **params: Any) -> httpx.Response:
    params.setdefault("prompt", "a red circle")
    return httpx.get(f"{server.url}/cdn/live/site/live/{scope}", params=params, timeout=120)


def enable_live(server: Server, org: str, project: str, *scopes: str) -> None:
    args = [a for scope in scopes for a in ("--scope", scope)]
    result = run_cli(server.env, "live", "enable", "--org", org, "--project", project, *args)
    assert result.returncode == 0, result.stderr


def test_live_url_miss_then_hit_and_limits(live_server: Server) -> None:
    key = create_key(live_server.env, "live", "site")
    enable_live(live_server, "live", "site", "hero")
    miss = live(live_server, "hero")
    assert miss.status_code == 200, miss.text
    assert miss.headers["x-cache-status"] == "MISS" and miss.headers["content-type"] == "image/png"
    hit = live(live_server, "hero")
    assert hit.headers["x-cache-status"] == "HIT" and hit.content == miss.content
    assert hit.headers["x-generation-id"] == miss.headers["x-generation-id"]
    with live_server.client(key) as api:
        scope = api.get("/api/v1/live/scopes/hero").json()["data"]
        assert scope["currentGenerations"] == 1 and scope["newGenerationsLimit"] == 30
        generation = api.get(f"/api/v1/generations/{miss.headers['x-generation-id']}").json()
        assert generation["data"]["meta"] == {"scope": "hero", "isLiveUrl": True}
        # Other parameters are another cache entry: misses count against the per-IP limit.
        assert live(live_server, "hero", aspectRatio="16:9").headers["x-cache-status"] == "MISS"
        assert live(live_server, "hero", autoEnhance="false").status_code == 200
        limited = live(live_server, "hero", template="comic")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
        assert live(live_server, "hero").headers["x-cache-status"] == "HIT"  # hits are free
        # Scope management.
        made = api.post(
            "/api/v1/live/scopes", json={"slug": "closed", "allowNewGenerations": False}
        )
        assert made.status_code == 201
        dup = api.post("/api/v1/live/scopes", json={"slug": "closed"})
        assert dup.status_code == 409 and dup.json()["error"]["code"] == "SCOPE_ALREADY_EXISTS"
        assert live(live_server, "closed").status_code == 403
        bad = api.post("/api/v1/live/scopes", json={"slug": "no spaces"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "SCOPE_INVALID_FORMAT"
        capped = api.put("/api/v1/live/scopes/hero", json={"newGenerationsLimit": 0}).json()
        assert capped["data"]["newGenerationsLimit"] == 0
        regen = api.post("/api/v1/live/scopes/hero/regenerate", json={})
        assert miss.headers["x-generation-id"] in regen.json()["data"]["regenerated"]
        listed = api.get("/api/v1/live/scopes").json()
        assert {s["slug"] for s in listed["data"]} == {"hero", "closed"}
        assert api.delete("/api/v1/live/scopes/closed").status_code == 200
        assert api.get("/api/v1/live/scopes/closed").status_code == 404
    assert live(live_server, "hero", prompt="").status_code == 400
    assert live(live_server, "hero", aspectRatio="5:4").status_code == 400
    assert (
        httpx.get(f"{live_server.url}/cdn/nobody/none/live/x", params={"prompt": "x"}).status_code
        == 404
    )


def test_a_live_client_that_hangs_up_ends_its_wait_and_its_job_runs_on(
    live_server: Server,
) -> None:
    """The wait behind a live URL ends when its client leaves (a 499 in /metrics); the job
    runs on and is the URL's cached answer for the next request."""
    key = create_key(live_server.env, "leaving", "site")
    enable_live(live_server, "leaving", "site", "hero")
    url = f"{live_server.url}/cdn/leaving/site/live/hero"
    with live_server.client(key) as api:
        slow = api.post(
            "/api/v1/generations",
            json={"prompt": "ahead of the live job", "width": 512, "height": 512, "steps": 50},
        ).json()["data"]
        try:
            # The miss that queues the job, then a request that finds it cached and waits.
            for count in (1, 2):
                with pytest.raises(httpx.ReadTimeout):
                    httpx.get(url, params={"prompt": "a leaver"}, timeout=1)
                counted = (
                    f'route="/cdn/{{org}}/{{project}}/live/{{scope}}",status="499"}} {count}.0'
                )
                deadline = time.monotonic() + 20  # a wait lasts live_wait_seconds
                while counted not in (metrics := httpx.get(f"{live_server.url}/metrics").text):
                    assert time.monotonic() < deadline, [
                        line for line in metrics.splitlines() if "/live/" in line
                    ]
                    time.sleep(0.2)
            listed = api.get("/api/v1/generations").json()["data"]
            [left] = [g for g in listed if g["meta"].get("isLiveUrl")]
            assert left["status"] in ("pending", "processing"), left
        finally:
            api.post(f"/api/v1/generations/{slow['id']}/cancel")
        again = httpx.get(url, params={"prompt": "a leaver"}, timeout=120)
        assert again.status_code == 200 and again.headers["x-generation-id"] == left["id"]
        hit = httpx.get(url, params={"prompt": "a leaver"}, timeout=60)
        # The two served after the miss count; the one that left unserved does not.
        assert hit.headers["x-cache-status"] == "HIT", hit.headers
        assert hit.headers["x-cache-hits"] == "2", hit.headers


def test_a_live_prompt_cannot_name_the_projects_images(live_server: Server) -> None:
    """`@last` or a project alias in a stranger's prompt stays text: as a reference it would
    make the project's newest (or a private) image the init image of a public picture."""
    key = create_key(live_server.env, "aliasing", "site")
    enable_live(live_server, "aliasing", "site", "hero")
    with live_server.client(key) as api:
        made = api.post(
            "/api/v1/generations", json={"prompt": "private", "alias": "@secret"}, headers=WAIT
        )
        assert made.json()["data"]["status"] == "success", made.text
        url = f"{live_server.url}/cdn/aliasing/site/live/hero"
        drawn = httpx.get(url, params={"prompt": "a copy of @last and @secret"}, timeout=120)
        assert drawn.status_code == 200, drawn.text
        generation = api.get(f"/api/v1/generations/{drawn.headers['x-generation-id']}").json()
        assert generation["data"]["referenceImages"] == [], generation


def test_a_burst_of_misses_takes_no_more_than_the_scopes_limit(live_server: Server) -> None:
    """Misses from many networks at once: each takes the scope's slot in one conditional write
    before its generation is made (they all used to read `used < limit` first, then generate)."""
    from concurrent.futures import ThreadPoolExecutor

    key = create_key(live_server.env, "burst", "site")
    enable_live(live_server, "burst", "site")
    with live_server.client(key) as api:
        made = api.post("/api/v1/live/scopes", json={"slug": "hero", "newGenerationsLimit": 2})
        assert made.status_code == 201, made.text
    url = f"{live_server.url}/cdn/burst/site/live/hero"

    def miss(i: int) -> httpx.Response:
        headers = {"X-Forwarded-For": f"198.51.100.{i}"}
        return httpx.get(url, params={"prompt": f"shape {i}"}, headers=headers, timeout=120)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(miss, range(8)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 200] + [429] * 6, [(r.status_code, r.text[:100]) for r in answers]
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.json()["error"]["code"] == "SCOPE_LIMIT_REACHED"
    with live_server.client(key) as api:
        scope = api.get("/api/v1/live/scopes/hero").json()["data"]
        assert scope["currentGenerations"] == 2
        listed = api.get("/api/v1/generations").json()["pagination"]["total"]
        assert listed == 2


def test_live_urls_are_opt_in_and_strangers_cannot_mint_scopes(live_server: Server) -> None:
    key = create_key(live_server.env, "closed", "site")
    url = f"{live_server.url}/cdn/closed/site/live"
    off = httpx.get(f"{url}/anything", params={"prompt": "x"}, timeout=60)
    assert off.status_code == 403 and off.json()["error"]["code"] == "LIVE_URLS_DISABLED"
    enable_live(live_server, "closed", "site", "banner")
    for i in range(6):  # the review's repro: each new name used to bring a fresh scope and limit
        minted = httpx.get(f"{url}/s{i}", params={"prompt": "x"}, timeout=60)
        assert minted.status_code == 404 and minted.json()["error"]["code"] == "SCOPE_NOT_FOUND"
    with live_server.client(key) as api:
        assert api.get("/api/v1/live/scopes").json()["pagination"]["total"] == 0
        opened = httpx.get(f"{url}/banner", params={"prompt": "x"}, timeout=120)
        assert opened.status_code == 200 and opened.headers["x-cache-status"] == "MISS"
        assert [s["slug"] for s in api.get("/api/v1/live/scopes").json()["data"]] == ["banner"]


def test_per_ip_limits_count_the_real_client_not_what_it_claims(live_server: Server) -> None:
    """Behind the trusted proxy (127.0.0.1) the client is the rightmost untrusted hop; the
    entries to its left are the client's own words and change nothing."""
    create_key(live_server.env, "proxied", "site")
    enable_live(live_server, "proxied", "site", "hero")
    url = f"{live_server.url}/cdn/proxied/site/live/hero"

    def miss(prompt: str, forwarded: str) -> httpx.Response:
        headers = {"X-Forwarded-For": forwarded}
        return httpx.get(url, params={"prompt": prompt}, headers=headers, timeout=120)

    for i in range(3):
        assert miss(f"a {i}", f"10.9.9.{i}, 203.0.113.7").status_code == 200
    spoofed = miss("a 3", "10.9.9.99, 203.0.113.7")
    assert spoofed.status_code == 429 and "203.0.113.7" in spoofed.json()["error"]["message"]
    assert miss("a 3", "198.51.100.9").status_code == 200  # another real client


def test_client_addresses_and_their_rate_buckets() -> None:
    trusted = parse_networks("127.0.0.1, 10.0.0.0/8")
    assert real_client("127.0.0.1", "1.2.3.4, 5.6.7.8", ()) == "127.0.0.1"  # no proxy trusted
    assert real_client("9.9.9.9", "1.2.3.4", trusted) == "9.9.9.9"  # not from our proxy
    assert real_client("127.0.0.1", "1.2.3.4, 5.6.7.8, 10.1.1.1", trusted) == "5.6.7.8"
    assert real_client("127.0.0.1", None, trusted) == "127.0.0.1"
    assert ip_bucket("2001:db8:1:2:aaaa::1") == ip_bucket("2001:db8:1:2:ffff::9")
    assert ip_bucket("2001:db8:1:3::1") != ip_bucket("2001:db8:1:2::1")
    assert ip_bucket("203.0.113.7") == "203.0.113.7"


def test_live_urls_through_the_admin_api(live_server: Server) -> None:
    create_key(live_server.env, "adminlive", "site")
    master = run_cli(live_server.env, "keys", "create", "--type", "master").stdout.splitlines()[-1]
    path = f"{live_server.url}/api/admin/projects/adminlive/site/live"
    on = httpx.put(path, headers={"X-API-Key": master}, json={"enabled": True, "openScopes": ["a"]})
    assert on.status_code == 200 and on.json()["data"] == {
        "organizationSlug": "adminlive",
        "projectSlug": "site",
        "enabled": True,
        "openScopes": ["a"],
    }
    bad = httpx.put(
        path, headers={"X-API-Key": master}, json={"enabled": True, "openScopes": ["a b"]}
    )
    assert bad.status_code == 400
