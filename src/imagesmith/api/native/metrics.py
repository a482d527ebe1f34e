"""`/metrics`: Prometheus text format. Loopback clients may read it; anyone else needs
`Authorization: Bearer <IMAGESMITH_METRICS_TOKEN>`. A request that came through a proxy the
operator has not declared trusted is not taken for loopback (a reverse proxy on the same host
would otherwise open it to the world)."""

from __future__ import annotations

import hmac
import ipaddress
import time
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from imagesmith import metrics
from imagesmith.api.client_ip import client_ip, is_trusted, parse_networks
from imagesmith.api.deps import RuntimeDep
from imagesmith.errors import Forbidden
from imagesmith.generation.service import GenerationService
from imagesmith.webhooks.service import WebhookService

router = APIRouter(tags=["operations"])
HEARTBEATS_SHOWN = timedelta(hours=1)
LIVE = timedelta(seconds=30)


def may_read(request: Request, token: str | None) -> bool:
    if token:
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            return True
    settings = request.app.state.runtime.settings
    peer = request.client.host if request.client else ""
    proxied = "x-forwarded-for" in request.headers or "forwarded" in request.headers
    if proxied and not is_trusted(peer, parse_networks(settings.trusted_proxies)):
        return False
    try:
        return ipaddress.ip_address(client_ip(request, settings.trusted_proxies)).is_loopback
    except ValueError:
        return False


@router.get("/metrics", include_in_schema=False)
async def metrics_text(request: Request, runtime: RuntimeDep) -> Response:
    if not may_read(request, runtime.settings.metrics_token):
        raise Forbidden(
            "/metrics is open to loopback clients only; send Authorization: Bearer "
            "<IMAGESMITH_METRICS_TOKEN> from elsewhere"
        )
    depth, workers = await GenerationService(runtime).gauges(HEARTBEATS_SHOWN)
    waiting = await WebhookService(runtime).waiting()
    metrics.QUEUE_DEPTH.clear()
    for status in ("pending", "processing"):  # both always present, so a drained queue shows 0
        metrics.QUEUE_DEPTH.labels(status, runtime.settings.default_model).set(0)
    for status, model, count in depth:
        metrics.QUEUE_DEPTH.labels(status, model).set(count)
    metrics.WORKER_HEARTBEAT.clear()
    live = 0
    for worker in workers:
        metrics.WORKER_HEARTBEAT.labels(worker.id, worker.hostname, worker.device or "").set(
            worker.heartbeat_at.timestamp()
        )
        live += worker.heartbeat_at.timestamp() >= time.time() - LIVE.total_seconds()
    metrics.WORKERS_LIVE.set(live)
    metrics.WEBHOOKS_WAITING.set(waiting)
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
