"""Stand-ins for the image providers, on 127.0.0.1, written from each provider's public API
reference (not from our engines): Replicate's predictions API, OpenAI's Images API and
Google's Gemini API (generateContent with image output, Imagen predict). They check the auth
header each provider wants, answer with its status codes and field names, run Replicate's
asynchronous prediction lifecycle, and can be told to throttle (429 + Retry-After)."""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

from PIL import Image

COLOUR = (40, 160, 90)  # every stand-in draws this, so a test can tell its image in our store


def png(width: int, height: int, colour: tuple[int, int, int] = COLOUR) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Provider:
    """State shared by a stand-in's handler threads."""

    token: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    throttle: int = 0  # the next N creates answer 429
    url: str = ""

    def record(self, method: str, path: str, headers: dict[str, str], body: Any) -> None:
        with self.lock:
            self.requests.append((method, path, headers, body))

    def take_throttle(self) -> bool:
        with self.lock:
            if self.throttle > 0:
                self.throttle -= 1
                return True
            return False

    def calls(self, method: str, pattern: str) -> list[tuple[dict[str, str], Any]]:
        with self.lock:
            return [(h, b) for m, p, h, b in self.requests if m == method and re.search(pattern, p)]


class JsonHandler(BaseHTTPRequestHandler):
    provider: Provider

    def log_message(self, *_args: object) -> None:
        pass

    def reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header(
            "Content-Type", "application/json" if not isinstance(body, bytes) else "image/png"
        )
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self) -> Any:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Type", "").startswith("application/json"):
            return json.loads(raw or b"{}")
        return raw

    def headers_dict(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}


# Replicate -------------------------------------------------------------------------------------


class Replicate(Provider):
    """https://replicate.com/docs/reference/http: predictions that start, process for
    `seconds` (an input `prompt` containing "slow" takes 60 s), then succeed with output file
    URLs; "fail me" fails; "bad input" is a 422. Cancels are recorded."""

    def __init__(self, token: str, seconds: float = 0.3):
        super().__init__(token)
        self.seconds = seconds
        self.predictions: dict[str, dict[str, Any]] = {}
        self.cancelled: list[str] = []
        self.running_max = 0
        self.poll_errors = 0  # the next N polls answer 503

    def state(self, prediction: dict[str, Any]) -> dict[str, Any]:
        if prediction["status"] in ("succeeded", "failed", "canceled"):
            return prediction
        elapsed = time.monotonic() - prediction["_started"]
        if elapsed >= prediction["_seconds"]:
            if "fail me" in prediction["input"]["prompt"]:
                prediction.update(status="failed", error="CUDA out of memory (stand-in)")
            else:
                n = int(prediction["input"].get("num_outputs", 1))
                prediction["output"] = [
                    f"{self.url}/files/{prediction['id']}/out-{i}.png" for i in range(n)
                ]
                prediction["status"] = "succeeded"
            prediction["completed_at"] = now_iso()
        elif elapsed > 0.05:
            prediction.update(status="processing", started_at=prediction["started_at"] or now_iso())
        return prediction

    def running(self) -> int:
        return sum(
            1
            for p in self.predictions.values()
            if self.state(p)["status"] in ("starting", "processing")
        )


def public(prediction: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in prediction.items() if not k.startswith("_")}


class ReplicateHandler(JsonHandler):
    provider: Replicate

    def authorised(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.provider.token}":
            return True
        self.reply(
            401,
            {
                "title": "Unauthenticated",
                "detail": "You did not pass a valid authentication token",
                "status": 401,
            },
        )
        return False

    def do_POST(self) -> None:
        p = self.provider
        body = self.body()
        p.record("POST", self.path, self.headers_dict(), body)
        if not self.authorised():
            return
        cancel = re.fullmatch(r"/v1/predictions/([a-z0-9]+)/cancel", self.path)
        if cancel:
            with p.lock:
                prediction = p.predictions.get(cancel.group(1))
                if prediction is None:
                    self.reply(404, {"title": "Not found", "detail": "Not found", "status": 404})
                    return
                p.cancelled.append(prediction["id"])
                if p.state(prediction)["status"] not in ("succeeded", "failed"):
                    prediction.update(status="canceled", completed_at=now_iso())
                self.reply(200, public(prediction))
            return
        model = re.fullmatch(r"/v1/models/([\w.-]+)/([\w.-]+)/predictions", self.path)
        if model and model.group(1) == "community":  # only official models run by name
            self.reply(404, {"title": "Not found", "detail": "Model not found", "status": 404})
            return
        if not model and self.path != "/v1/predictions":
            self.reply(404, {"title": "Not found", "detail": "Not found", "status": 404})
            return
        if self.path == "/v1/predictions" and not body.get("version"):
            self.reply(
                422, {"title": "Invalid version", "detail": "version required", "status": 422}
            )
            return
        if p.take_throttle():
            self.reply(
                429,
                {"title": "Too Many Requests", "detail": "Request was throttled. Expected "
                 "available in 1 second.", "status": 429},
                {"Retry-After": "1"},
            )  # fmt: skip
            return
        inputs = body.get("input") or {}
        if not isinstance(inputs.get("prompt"), str) or "bad input" in inputs["prompt"]:
            self.reply(
                422,
                {
                    "title": "Input validation failed",
                    "detail": "- input.prompt: Does not match the model's schema",
                    "status": 422,
                    "invalid_fields": [{"type": "invalid", "field": "input.prompt"}],
                },
            )
            return
        pid = secrets.token_hex(13)
        prediction: dict[str, Any] = {
            "id": pid,
            "model": f"{model.group(1)}/{model.group(2)}" if model else "stability-ai/sdxl",
            "version": body.get("version") or "hidden",
            "input": inputs,
            "logs": "",
            "output": None,
            "data_removed": False,
            "error": None,
            "status": "starting",
            "created_at": now_iso(),
            "started_at": None,
            "completed_at": None,
            "urls": {
                "get": f"{p.url}/v1/predictions/{pid}",
                "cancel": f"{p.url}/v1/predictions/{pid}/cancel",
                "stream": f"{p.url}/v1/predictions/{pid}/stream",
                "web": f"https://replicate.com/p/{pid}",
            },
            "metrics": {},
            "_started": time.monotonic(),
            "_seconds": 60.0 if "slow" in inputs["prompt"] else p.seconds,
        }
        with p.lock:
            p.predictions[pid] = prediction
            p.running_max = max(p.running_max, p.running())
        wait = re.search(r"wait=(\d+)", self.headers.get("Prefer", ""))
        if wait:  # hold the request until it ends or the wait runs out
            deadline = time.monotonic() + min(int(wait.group(1)), 60)
            while time.monotonic() < deadline:
                with p.lock:
                    if p.state(prediction)["status"] in ("succeeded", "failed", "canceled"):
                        break
                time.sleep(0.02)
        with p.lock:
            self.reply(201, public(p.state(prediction)))

    def do_GET(self) -> None:
        p = self.provider
        p.record("GET", self.path, self.headers_dict(), None)
        file = re.fullmatch(r"/files/([a-z0-9]+)/out-(\d+)\.png", self.path)
        if file:  # output files are public (replicate.delivery needs no token)
            prediction = p.predictions.get(file.group(1))
            if prediction is None:
                self.reply(404, {"detail": "Not found"})
                return
            inputs = prediction["input"]
            self.reply(200, png(int(inputs.get("width", 1024)), int(inputs.get("height", 1024))))
            return
        if not self.authorised():
            return
        named = re.fullmatch(r"/v1/models/([\w.-]+)/([\w.-]+)", self.path)
        if named:
            latest = {"id": "c0ffee" * 10 + "c0ff", "created_at": now_iso()}
            self.reply(
                200,
                {"owner": named.group(1), "name": named.group(2), "latest_version": latest},
            )
            return
        with p.lock:
            failing = p.poll_errors > 0
            p.poll_errors -= 1 if failing else 0
        if failing:
            self.reply(503, {"title": "Service Unavailable", "detail": "try again", "status": 503})
            return
        got = re.fullmatch(r"/v1/predictions/([a-z0-9]+)", self.path)
        with p.lock:
            prediction = p.predictions.get(got.group(1)) if got else None
            if prediction is None:
                self.reply(404, {"title": "Not found", "detail": "Not found", "status": 404})
                return
            self.reply(200, public(p.state(prediction)))


# OpenAI ----------------------------------------------------------------------------------------

OPENAI_SIZES = {
    "gpt-image-1": ("1024x1024", "1536x1024", "1024x1536", "auto"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
}


class OpenAIHandler(JsonHandler):
    """https://platform.openai.com/docs/api-reference/images/create"""

    def error(self, status: int, message: str, kind: str, code: str | None, **headers: str) -> None:
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        self.reply(status, body, headers)

    def do_POST(self) -> None:
        p = self.provider
        multipart = self.headers.get("Content-Type", "").startswith("multipart/form-data")
        body = self.body()
        p.record("POST", self.path, self.headers_dict(), body)
        if self.headers.get("Authorization") != f"Bearer {p.token}":
            self.error(
                401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
            return
        if self.path not in ("/v1/images/generations", "/v1/images/edits"):
            self.error(404, "Not found", "invalid_request_error", None)
            return
        if p.take_throttle():
            self.error(
                429, "Rate limit reached for images per minute.", "requests",
                "rate_limit_exceeded", **{"retry-after": "1"},
            )  # fmt: skip
            return
        if multipart:  # an edit: the fields are form parts; we only need to see the image part
            fields = dict(re.findall(rb'name="(\w+)"\r\n\r\n([^\r]*)', body))
            model = fields.get(b"model", b"").decode()
            prompt = fields.get(b"prompt", b"").decode()
            size = fields.get(b"size", b"1024x1024").decode()
            n = int(fields.get(b"n", b"1"))
            if b'name="image"' not in body:
                self.error(400, "image is required", "invalid_request_error", None)
                return
        else:
            model, prompt = body.get("model", "dall-e-2"), body.get("prompt", "")
            size, n = body.get("size", "1024x1024"), int(body.get("n", 1))
        allowed = OPENAI_SIZES.get(model)
        if allowed and size not in allowed:
            self.error(
                400, f"Invalid value: '{size}'. Supported values are: {', '.join(allowed)}.",
                "invalid_request_error", "invalid_value",
            )  # fmt: skip
            return
        if model == "dall-e-3" and n != 1:
            self.error(400, "n must be 1 for dall-e-3", "invalid_request_error", None)
            return
        if "forbidden" in prompt:
            self.error(
                400, "Your request was rejected as a result of our safety system.",
                "image_generation_user_error", "content_policy_violation",
            )  # fmt: skip
            return
        w, h = (1024, 1024) if size == "auto" else (int(x) for x in size.split("x"))
        image = base64.b64encode(png(w, h)).decode()
        # Real servers send fewer than n (a moderation filter), some ignore n, and a URL output
        # can be gone by the time it is fetched: prompts that ask for each.
        if "lost output" in prompt:
            lost = [{"url": f"{p.url}/gone.png"}] * n
            self.reply(200, {"created": int(time.time()), "data": lost})
            return
        count = max(1, n - 1) if "fewer" in prompt else n + 3 if "extra" in prompt else n
        self.reply(200, {"created": int(time.time()), "data": [{"b64_json": image}] * count})


# Gemini ----------------------------------------------------------------------------------------

RATIO_SIZES = {"1:1": (1024, 1024), "16:9": (1344, 768), "9:16": (768, 1344), "4:3": (1184, 864),
               "3:4": (864, 1184), "3:2": (1248, 832), "2:3": (832, 1248), "21:9": (1536, 672),
               "4:5": (896, 1152), "5:4": (1152, 896)}  # fmt: skip


class GeminiHandler(JsonHandler):
    """https://ai.google.dev/api/generate-content and Imagen's :predict"""

    def error(self, status: int, message: str, state: str) -> None:
        self.reply(status, {"error": {"code": status, "message": message, "status": state}})

    def do_POST(self) -> None:
        p = self.provider
        body = self.body()
        p.record("POST", self.path, self.headers_dict(), body)
        if self.headers.get("x-goog-api-key") != p.token:
            self.error(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT")
            return
        route = re.fullmatch(r"/v1beta/models/([\w.-]+):(generateContent|predict)", self.path)
        if not route:
            self.error(404, "Not found", "NOT_FOUND")
            return
        if p.take_throttle():
            self.error(429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED")
            return
        if route.group(2) == "predict":
            parameters = body.get("parameters", {})
            w, h = RATIO_SIZES[parameters.get("aspectRatio", "1:1")]
            count = int(parameters.get("sampleCount", 4))
            image = base64.b64encode(png(w, h)).decode()
            predictions = [{"bytesBase64Encoded": image, "mimeType": "image/png"}] * count
            self.reply(200, {"predictions": predictions})
            return
        config = body.get("generationConfig", {})
        if "IMAGE" not in config.get("responseModalities", []):
            self.reply(200, {"candidates": [{"content": {"parts": [{"text": "no image asked"}]}}]})
            return
        text = body["contents"][0]["parts"][0]["text"]
        if "blocked" in text:
            self.reply(200, {"promptFeedback": {"blockReason": "SAFETY"}})
            return
        w, h = RATIO_SIZES[config.get("imageConfig", {}).get("aspectRatio", "1:1")]
        data = base64.b64encode(png(w, h)).decode()
        parts = [
            {"text": "Here is your image."},
            {"inlineData": {"mimeType": "image/png", "data": data}},
        ]
        self.reply(200, {"candidates": [{"content": {"role": "model", "parts": parts},
                                         "finishReason": "STOP"}]})  # fmt: skip


def handler_for(kind: type[JsonHandler], provider: Provider) -> type[JsonHandler]:
    return type(f"{kind.__name__}Bound", (kind,), {"provider": provider})
