"""Replicate's HTTP API (https://replicate.com/docs/reference/http), as its reference describes:

* create: `POST /v1/models/{owner}/{name}/predictions` for a model named `owner/name` (an
  official model; a community model answers 404 there and runs as `latest_version.id` from
  `GET /v1/models/{owner}/{name}`), or `POST /v1/predictions` with `{"version": …}` for
  `owner/name:version` or a bare version id;
  `Authorization: Bearer <token>`, `Prefer: wait=N` (hold the request up to N s);
* the prediction: `{id, status: starting|processing|succeeded|failed|canceled, output, error,
  urls {get, cancel}}`; poll `urls.get` until it ends; `output` is a URL or a list of them;
* cancel: `POST urls.cancel`;
* errors are `{"title", "detail", "status"}` (422 adds `invalid_fields`); 429 carries
  Retry-After.

Inputs follow Stability AI's SDXL on Replicate (prompt, negative_prompt, width, height,
num_outputs, num_inference_steps, guidance_scale, seed, scheduler, image + prompt_strength);
a registry entry's `extra.input` adds or overrides inputs, and `extra.size = "aspect_ratio"`
sends `aspect_ratio` instead of pixels (FLUX-style models)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any, ClassVar

import httpx

from imagesmith.catalog.models import ModelSpec
from imagesmith.engines.remote.base import (
    ProviderBusy,
    ProviderConfig,
    ProviderRejected,
    RemoteCancelled,
    RemoteJob,
    RemoteResult,
    data_uri,
    error_text,
    raise_for,
    same_origin,
    send,
    sleep_or_cancel,
)
from imagesmith.engines.remote.sizes import multiple_of, nearest_ratio

VERSION = re.compile(r"^[0-9a-f]{64}\Z")
HOLD_SECONDS = 5  # Prefer: wait: a quick job comes back in the create's own answer
POLL_MIN, POLL_MAX = 0.25, 2.0
POLL_ERRORS_MAX = 20  # consecutive failed polls (429/5xx/network) before giving up
ASPECT_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
# Our scheduler ids (Stablecog's) → the names SDXL's Replicate model takes.
SCHEDULERS = {
    "DDIM": "DDIM",
    "K_EULER": "K_EULER",
    "K_EULER_ANCESTRAL": "K_EULER_ANCESTRAL",
    "DPM++_2M": "DPMSolverMultistep",
    "DPM++_2M_KARRAS": "KarrasDPM",
    "HEUN": "HeunDiscrete",
    "PNDM": "PNDM",
}
ERROR_PATHS = (("detail",), ("title",), ("error",))


class ReplicateEngine:
    provider: ClassVar[str] = "replicate"
    cancels: ClassVar[bool] = True  # it watches `cancelled` and cancels the prediction itself

    def __init__(self, config: ProviderConfig):
        self.config = config
        self.base = config.base_url.rstrip("/")
        self._versions: dict[str, str] = {}  # community model → its latest version id

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        return headers

    def inputs(self, spec: ModelSpec, job: RemoteJob) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the prediction's input, what we say about the mapping)."""
        p = job.params
        inputs: dict[str, Any] = {"prompt": job.prompt, "num_outputs": p.num_outputs}
        info: dict[str, Any] = {}
        if spec.extra.get("size") == "aspect_ratio":
            inputs["aspect_ratio"] = info["aspectRatio"] = nearest_ratio(
                p.width, p.height, ASPECT_RATIOS
            )
        else:
            inputs["width"], inputs["height"] = multiple_of(p.width), multiple_of(p.height)
            info["size"] = f"{inputs['width']}x{inputs['height']}"
        if job.negative_prompt:
            inputs["negative_prompt"] = job.negative_prompt
        inputs["num_inference_steps"] = p.steps
        inputs["guidance_scale"] = p.guidance_scale
        inputs["seed"] = p.seed
        if p.scheduler in SCHEDULERS:
            inputs["scheduler"] = SCHEDULERS[p.scheduler]
        elif p.scheduler:
            info["scheduler"] = f"{p.scheduler} has no Replicate name: the model's default ran"
        if job.init_image is not None:
            inputs["image"] = data_uri(job.init_image)
            inputs["prompt_strength"] = p.prompt_strength
        inputs.update(spec.extra.get("input", {}))
        return inputs, info

    def _create_request(
        self, source: str, inputs: dict[str, Any], version: str | None = None
    ) -> httpx.Request:
        headers = {**self._headers(), "Prefer": f"wait={HOLD_SECONDS}"}
        if version is None and (":" in source or VERSION.match(source)):
            version = source.split(":", 1)[1] if ":" in source else source
        if version is not None:
            body: dict[str, Any] = {"version": version, "input": inputs}
            url = f"{self.base}/v1/predictions"
        else:
            body = {"input": inputs}
            url = f"{self.base}/v1/models/{source}/predictions"
        return httpx.Request("POST", url, json=body, headers=headers)

    async def _create(
        self, client: httpx.AsyncClient, source: str, inputs: dict[str, Any]
    ) -> httpx.Response:
        """Create the prediction. A model named without a version is run through its
        models endpoint (official models); a community model answers that with 404, and then
        runs as its latest version (`GET /v1/models/{owner}/{name}` → `latest_version.id`)."""
        version = self._versions.get(source)
        response = await send(client, "Replicate", self._create_request(source, inputs, version))
        named_only = version is None and ":" not in source and not VERSION.match(source)
        if response.status_code != 404 or not named_only:
            return response
        found = await send(
            client,
            "Replicate",
            httpx.Request("GET", f"{self.base}/v1/models/{source}", headers=self._headers()),
        )
        raise_for("Replicate", found, error_text(found, *ERROR_PATHS))
        try:
            latest = found.json()["latest_version"]["id"]
        except (ValueError, KeyError, TypeError):
            raise ProviderRejected(f"Replicate has no runnable version of {source}") from None
        if not isinstance(latest, str):
            raise ProviderRejected(f"Replicate has no runnable version of {source}")
        self._versions[source] = latest
        return await send(client, "Replicate", self._create_request(source, inputs, latest))

    async def run(
        self,
        client: httpx.AsyncClient,
        spec: ModelSpec,
        job: RemoteJob,
        cancelled: asyncio.Event,
    ) -> RemoteResult:
        inputs, info = self.inputs(spec, job)
        response = await self._create(client, spec.source, inputs)
        raise_for("Replicate", response, error_text(response, *ERROR_PATHS))
        prediction = self._prediction(response)
        info.update(provider="replicate", model=spec.source, predictionId=prediction["id"])
        delay = POLL_MIN
        errors = 0
        while prediction.get("status") not in ("succeeded", "failed", "canceled"):
            if cancelled.is_set():
                await self._cancel(client, prediction)
                raise RemoteCancelled("cancelled; Replicate was told to cancel the prediction")
            await sleep_or_cancel(cancelled, delay)
            if cancelled.is_set():
                continue
            try:
                polled = await send(client, "Replicate", self._get_request(prediction))
                raise_for("Replicate", polled, error_text(polled, *ERROR_PATHS))
            except ProviderBusy as exc:  # a poll is safe to repeat: never re-create
                errors += 1
                if errors >= POLL_ERRORS_MAX:
                    raise ProviderRejected(
                        f"gave up polling the prediction: {exc.message}"
                    ) from None
                await sleep_or_cancel(cancelled, exc.retry_after or delay)
                continue
            errors = 0
            prediction = self._prediction(polled)
            delay = min(delay * 1.5, POLL_MAX)
        status = prediction["status"]
        if status == "failed":
            raise ProviderRejected(
                f"Replicate: {prediction.get('error') or 'the prediction failed'}"
            )
        if status == "canceled":
            raise ProviderRejected("Replicate canceled the prediction")
        output = prediction.get("output")
        urls = [output] if isinstance(output, str) else list(output or [])
        if not urls or not all(isinstance(u, str) for u in urls):
            raise ProviderRejected(
                "Replicate's prediction succeeded without an image in its output"
            )
        return RemoteResult(urls=urls, info=info)

    def _prediction(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise ProviderRejected("Replicate answered with something that is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise ProviderRejected("Replicate answered without a prediction id")
        return body

    def _url(self, prediction: dict[str, Any], name: str, fallback: str) -> str:
        """`urls.get` / `urls.cancel` when they point at the API we hold a token for."""
        url = (prediction.get("urls") or {}).get(name)
        if isinstance(url, str) and same_origin(url, self.base):
            return url
        return fallback

    def _get_request(self, prediction: dict[str, Any]) -> httpx.Request:
        url = self._url(prediction, "get", f"{self.base}/v1/predictions/{prediction['id']}")
        return httpx.Request("GET", url, headers=self._headers())

    async def _cancel(self, client: httpx.AsyncClient, prediction: dict[str, Any]) -> None:
        url = self._url(
            prediction, "cancel", f"{self.base}/v1/predictions/{prediction['id']}/cancel"
        )
        with contextlib.suppress(httpx.HTTPError):  # best effort: cancelled here either way
            await client.send(httpx.Request("POST", url, headers=self._headers()))
