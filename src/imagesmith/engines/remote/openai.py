"""OpenAI's Images API (https://platform.openai.com/docs/api-reference/images), and any server
that speaks it (LocalAI, aquiles-image, another imagesmith): `POST /v1/images/generations`
(JSON: model, prompt, n, size) and, for img2img, `POST /v1/images/edits` (multipart: image,
prompt, model, n, size); the answer is `{"data": [{"b64_json"} or {"url"}]}`, an error
`{"error": {"message", "type", "code"}}`. `Authorization: Bearer <key>`.

Sizes go to the nearest the model takes (gpt-image-1: 1024x1024, 1536x1024, 1024x1536;
dall-e-3: 1024x1024, 1792x1024, 1024x1792; dall-e-2: 256, 512 or 1024 square); an
OpenAI-compatible server gets the size asked for. dall-e-3 makes one image a call, so n > 1 is
several calls. OpenAI takes no seed, steps, guidance or negative prompt: the record says so."""

from __future__ import annotations

import asyncio
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
from imagesmith.engines.remote.sizes import nearest_size

SIZES: dict[str, tuple[str, ...]] = {
    "gpt-image-1": ("1024x1024", "1536x1024", "1024x1536"),
    "gpt-image-1-mini": ("1024x1024", "1536x1024", "1024x1536"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
}
ONE_PER_CALL = ("dall-e-3",)
ERROR_PATHS = (("error", "message"), ("detail",), ("message",))


class OpenAIEngine:
    provider: ClassVar[str] = "openai"

    def __init__(self, config: ProviderConfig):
        self.config = config
        self.name = "OpenAI" if config.name == "openai" else "the OpenAI-compatible server"

    def _base(self, spec: ModelSpec) -> str:
        base = (spec.base_url or self.config.base_url).rstrip("/")
        return base if base.endswith("/v1") else base + "/v1"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}

    def size(self, spec: ModelSpec, job: RemoteJob) -> str:
        p = job.params
        choices = SIZES.get(spec.source)
        if choices is None:
            return f"{p.width}x{p.height}"
        return nearest_size(p.width, p.height, choices)

    async def run(
        self,
        client: httpx.AsyncClient,
        spec: ModelSpec,
        job: RemoteJob,
        cancelled: asyncio.Event,
    ) -> RemoteResult:
        size = self.size(spec, job)
        n = job.params.num_outputs
        calls = [1] * n if spec.source in ONE_PER_CALL else [n]
        result = RemoteResult(info={"provider": self.config.name, "model": spec.source})
        result.info["size"] = size
        ignored = [
            name
            for name, given in (
                ("negativePrompt", job.negative_prompt),
                ("seed", self.config.name == "openai"),
                ("steps", self.config.name == "openai"),
                ("guidanceScale", self.config.name == "openai"),
            )
            if given
        ]
        if ignored:
            result.info["ignored"] = ignored
        for count in calls:
            request = self._request(spec, job, size, count)
            response = await send(client, self.name, request)
            raise_for(self.name, response, error_text(response, *ERROR_PATHS))
            self._collect(response, result)
        return result

    def _request(self, spec: ModelSpec, job: RemoteJob, size: str, n: int) -> httpx.Request:
        base = self._base(spec)
        fields: dict[str, Any] = {"model": spec.source, "prompt": job.prompt, "n": n, "size": size}
        if not spec.source.startswith("gpt-image"):
            fields["response_format"] = "b64_json"  # gpt-image models always answer base64
        if self.config.name != "openai":  # compatible servers often take these; OpenAI refuses
            fields.update(seed=job.params.seed, steps=job.params.steps)
            if job.negative_prompt:
                fields["negative_prompt"] = job.negative_prompt
        if job.init_image is None:
            return httpx.Request(
                "POST", f"{base}/images/generations", json=fields, headers=self._headers()
            )
        form = {key: str(value) for key, value in fields.items()}
        files = {"image": ("image.png", job.init_image, "image/png")}
        return httpx.Request(
            "POST", f"{base}/images/edits", data=form, files=files, headers=self._headers()
        )

    def _collect(self, response: httpx.Response, result: RemoteResult) -> None:
        try:
            data = response.json().get("data")
        except (ValueError, AttributeError):
            raise ProviderBusy(f"{self.name} answered with something that is not JSON") from None
        if not isinstance(data, list) or not data:
            raise ProviderRejected(f"{self.name} answered without images")
        for item in data:
            if isinstance(item, dict) and isinstance(item.get("b64_json"), str):
                result.images.append(decode_b64(item["b64_json"], self.name))
            elif isinstance(item, dict) and isinstance(item.get("url"), str):
                result.urls.append(item["url"])
            else:
                raise ProviderRejected(f"{self.name} answered an image without b64_json or url")
        revised = [d.get("revised_prompt") for d in data if isinstance(d, dict)]
        if any(revised):
            result.info["revisedPrompt"] = next(r for r in revised if r)
