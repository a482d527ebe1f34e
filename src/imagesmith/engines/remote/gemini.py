"""Google's Gemini API (https://ai.google.dev/api): image-output Gemini models through
`POST /v1beta/models/{model}:generateContent` (text, and the init image as inline data, in;
`responseModalities: ["TEXT", "IMAGE"]`, `imageConfig.aspectRatio`; images come back as
`candidates[].content.parts[].inlineData {mimeType, data}`), and Imagen through
`POST /v1beta/models/{model}:predict` (`instances: [{prompt}]`, `parameters {sampleCount,
aspectRatio}` → `predictions[].bytesBase64Encoded`). The key goes in `x-goog-api-key` (never
in the URL, where a log line would keep it). Errors: `{"error": {"code", "message", "status"}}`;
429 RESOURCE_EXHAUSTED is retried."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, ClassVar

import httpx

from imagesmith.catalog.models import ModelSpec
from imagesmith.engines.remote.base import (
    ProviderBusy,
    ProviderConfig,
    ProviderRejected,
    RemoteJob,
    RemoteResult,
    decode_b64,
    error_text,
    raise_for,
    send,
)
from imagesmith.engines.remote.sizes import nearest_ratio

GEMINI_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
IMAGEN_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")
ERROR_PATHS = (("error", "message"), ("message",))


class GeminiEngine:
    provider: ClassVar[str] = "gemini"

    def __init__(self, config: ProviderConfig):
        self.config = config

    def _url(self, spec: ModelSpec, method: str) -> str:
        base = (spec.base_url or self.config.base_url).rstrip("/")
        return f"{base}/v1beta/models/{spec.source}:{method}"

    def _headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.config.api_key} if self.config.api_key else {}

    async def run(
        self,
        client: httpx.AsyncClient,
        spec: ModelSpec,
        job: RemoteJob,
        cancelled: asyncio.Event,
    ) -> RemoteResult:
        p = job.params
        imagen = spec.source.startswith("imagen")
        ratio = nearest_ratio(p.width, p.height, IMAGEN_RATIOS if imagen else GEMINI_RATIOS)
        result = RemoteResult(info={"provider": "gemini", "model": spec.source})
        result.info["aspectRatio"] = ratio
        if imagen:
            if job.init_image is not None:
                raise ProviderRejected(f"{spec.source} (Imagen) does not take an init image")
            await self._predict(client, spec, job, ratio, result)
        else:
            for _ in range(p.num_outputs):  # one image per call
                await self._generate_content(client, spec, job, ratio, result)
        return result

    async def _predict(
        self,
        client: httpx.AsyncClient,
        spec: ModelSpec,
        job: RemoteJob,
        ratio: str,
        result: RemoteResult,
    ) -> None:
        body = {
            "instances": [{"prompt": job.prompt}],
            "parameters": {"sampleCount": job.params.num_outputs, "aspectRatio": ratio},
        }
        request = httpx.Request(
            "POST", self._url(spec, "predict"), json=body, headers=self._headers()
        )
        response = await send(client, "Gemini", request)
        raise_for("Gemini", response, error_text(response, *ERROR_PATHS))
        predictions = _json(response).get("predictions")
        found = [
            decode_b64(item["bytesBase64Encoded"], "Gemini")
            for item in predictions or []
            if isinstance(item, dict) and isinstance(item.get("bytesBase64Encoded"), str)
        ]
        if not found:
            raise ProviderRejected("Gemini (Imagen) answered without images (filtered?)")
        result.images.extend(found)

    async def _generate_content(
        self,
        client: httpx.AsyncClient,
        spec: ModelSpec,
        job: RemoteJob,
        ratio: str,
        result: RemoteResult,
    ) -> None:
        parts: list[dict[str, Any]] = [{"text": job.prompt}]
        if job.init_image is not None:
            encoded = base64.b64encode(job.init_image).decode()
            parts.append({"inline_data": {"mime_type": "image/png", "data": encoded}})
        body = {
            "contents": [{"role": "user", "parts": parts}],
            "generationConfig": {
                "responseModalities": ["TEXT", "IMAGE"],
                "imageConfig": {"aspectRatio": ratio},
                "seed": job.params.seed % 2**31,
            },
        }
        url = self._url(spec, "generateContent")
        request = httpx.Request("POST", url, json=body, headers=self._headers())
        response = await send(client, "Gemini", request)
        raise_for("Gemini", response, error_text(response, *ERROR_PATHS))
        answer = _json(response)
        images = []
        for candidate in answer.get("candidates") or []:
            for part in ((candidate or {}).get("content") or {}).get("parts") or []:
                inline = (
                    part.get("inlineData") or part.get("inline_data")
                    if isinstance(part, dict)
                    else None
                )
                if isinstance(inline, dict) and isinstance(inline.get("data"), str):
                    images.append(decode_b64(inline["data"], "Gemini"))
        if not images:
            blocked = (answer.get("promptFeedback") or {}).get("blockReason")
            reasons = [
                c.get("finishReason") for c in answer.get("candidates") or [] if isinstance(c, dict)
            ]
            why = blocked or ", ".join(r for r in reasons if r) or "no image part"
            raise ProviderRejected(f"Gemini answered without an image ({why})")
        result.images.append(images[0])


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise ProviderBusy("Gemini answered with something that is not JSON") from None
    if not isinstance(body, dict):
        raise ProviderRejected("Gemini answered with unexpected JSON")
    return body
