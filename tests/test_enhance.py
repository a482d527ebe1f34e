"""Prompt enhancement: the built-in templates, and the LLM path against a local server that
speaks the OpenAI chat-completions protocol."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagesmith.generation.enhance import TEMPLATES, PromptEnhancer, builtin_enhance
from tests.serverproc import Server, create_key, run_cli
from tests.stubs import QuietHandler, local_server

pytestmark = pytest.mark.stack_independent  # CI runs it on the embedded stack only


@pytest.mark.parametrize("template", TEMPLATES)
def test_short_prompt_gets_the_full_template(template: str) -> None:
    out = builtin_enhance("a cat", template)
    assert "cat" in out and len(out.split()) >= 12
    assert out == builtin_enhance("a cat", template)  # deterministic


def test_templates_differ() -> None:
    assert len({builtin_enhance("a cat", t) for t in TEMPLATES}) == len(TEMPLATES)


def test_detailed_prompt_changes_little() -> None:
    detailed = (
        "A photorealistic photograph of an old fisherman mending nets on a wooden pier at "
        "golden hour, shot on a 50mm lens, shallow depth of field, weathered hands, highly "
        "detailed skin texture, calm sea behind"
    )
    out = builtin_enhance(detailed, "photorealistic")
    assert out.startswith(detailed)
    assert len(out) - len(detailed) < 40


def test_partial_prompt_gets_only_what_is_missing() -> None:
    prompt = "a studio portrait of a ceramic teapot with soft window light on a wooden table"
    out = builtin_enhance(prompt, "photorealistic")
    assert "window lighting" not in out  # it already names its light
    assert out.count(",") <= 2


class FakeOpenAI(QuietHandler):
    """POST /v1/chat/completions like OpenAI; behaviour chosen by words in the user prompt."""

    requests: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.requests.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        prompt = body["messages"][-1]["content"]
        if "[slow]" in prompt:
            time.sleep(3)
        if "[broken]" in prompt:
            self.send_body(500, b'{"error": {"message": "upstream exploded"}}', "application/json")
            return
        answer = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": f'"LLM version of: {prompt}"'},
                }
            ],
        }
        self.send_body(200, json.dumps(answer).encode(), "application/json")


@pytest.fixture(scope="module")
def llm_url() -> Iterator[str]:
    with local_server(FakeOpenAI) as base:
        yield f"{base}/v1"


def test_llm_enhancer_speaks_chat_completions(llm_url: str) -> None:
    enhancer = PromptEnhancer(base_url=llm_url, model="test-model", api_key="sk-test", timeout=2)
    result = asyncio.run(enhancer.enhance("ein Hund", "comic"))
    assert result.prompt == "LLM version of: ein Hund" and result.method == "llm:test-model"
    sent = FakeOpenAI.requests[-1]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer sk-test"
    assert sent["body"]["model"] == "test-model"
    assert "comic" in sent["body"]["messages"][0]["content"].lower()


@pytest.mark.parametrize("marker", ["[slow]", "[broken]"])
def test_llm_failures_fall_back_to_builtin(llm_url: str, marker: str) -> None:
    enhancer = PromptEnhancer(base_url=llm_url, model="m", timeout=1)
    result = asyncio.run(enhancer.enhance(f"a cat {marker}", "sticker"))
    assert result.prompt == builtin_enhance(f"a cat {marker}", "sticker")
    assert result.method.startswith("builtin (llm failed")


def test_llm_unreachable_falls_back(tmp_path: Path) -> None:
    enhancer = PromptEnhancer(base_url="http://127.0.0.1:9/v1", timeout=1)
    assert asyncio.run(enhancer.enhance("a cat", "general")).method.startswith(
        "builtin (llm failed"
    )


def test_server_uses_the_configured_llm(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, llm_url: str
) -> None:
    srv = Server(
        tmp_path_factory.mktemp("llm"),
        models_dir,
        llm_base_url=llm_url,
        llm_model="house-model",
        llm_timeout_seconds=1,
    ).start("--no-worker")
    try:
        key = create_key(srv.env, "llm", "site")
        with srv.client(key) as api:
            ok = api.post("/api/v1/generations", json={"prompt": "a lighthouse"}).json()["data"]
            assert (
                ok["prompt"] == "LLM version of: a lighthouse"
                and ok["enhancedBy"] == "llm:house-model"
            )
            fallback = api.post(
                "/api/v1/generations", json={"prompt": "a lighthouse [broken]"}
            ).json()["data"]
            assert fallback["prompt"] == builtin_enhance("a lighthouse [broken]", "general")
            raw = api.post("/api/v1/generations", json={"prompt": "as is", "autoEnhance": False})
            assert raw.json()["data"]["prompt"] == "as is"
            # Out of credits: the LLM is not asked, and a create that asks nothing paid is
            # refused as well (by the charge when its row would be committed); nothing queued.
            args = ("credits", "set", "--org", "llm", "--project", "site", "0")
            assert run_cli(srv.env, *args).returncode == 0
            asked = len(FakeOpenAI.requests)
            total = api.get("/api/v1/generations").json()["pagination"]["total"]
            for body in ({"prompt": "a moon"}, {"prompt": "a moon", "autoEnhance": False}):
                refused = api.post("/api/v1/generations", json=body)
                assert refused.status_code == 402, refused.text
                assert refused.json()["error"]["code"] == "INSUFFICIENT_CREDITS"
            assert len(FakeOpenAI.requests) == asked
            assert api.get("/api/v1/generations").json()["pagination"]["total"] == total
        assert httpx.get(f"{srv.url}/health").status_code == 200
    finally:
        srv.stop()
