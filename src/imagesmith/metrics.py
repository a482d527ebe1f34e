"""Prometheus gauges (the `prometheus-client` library), one registry per process.

Counters and histograms are what this process saw: the API's requests, and the jobs and
webhook deliveries its embedded worker or sender handled. A separate `imagesmith worker`
serves its own (`--metrics-port`). The fleet-wide numbers (queue depth by status and model,
worker heartbeats, webhook deliveries waiting) are read from the database when the API's
`/metrics` is scraped, so any replica answers them for the whole fleet."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

HTTP_REQUESTS = Counter(
    "imagesmith_http_requests_total",
    "HTTP requests answered, by route template and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "imagesmith_http_request_duration_seconds",
    "Time to the end of the response, by route template and status (a long poll counts its wait).",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
JOBS = Counter(
    "imagesmith_jobs_total",
    "Jobs that ended, by model and outcome (success, failed, cancelled).",
    ["model", "outcome"],
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "imagesmith_job_duration_seconds",
    "From the claim to the recorded result, by model.",
    ["model"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "imagesmith_queue_wait_seconds",
    "From the create (or regenerate) to the claim, by model.",
    ["model"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
DENOISE_STEPS = Counter(
    "imagesmith_denoise_steps_total",
    "Denoising steps run, counted per image: a step of a batch of 4 counts 4 (rate() of this "
    "is image-steps per second, the throughput).",
    ["model"],
    registry=REGISTRY,
)
DENOISE_RATE = Gauge(
    "imagesmith_denoise_steps_per_second",
    "Pipeline steps per second of the latest batch (one step denoises the whole batch; "
    "it/s in the diffusers progress bar), by model.",
    ["model"],
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "imagesmith_webhook_deliveries_total",
    "Webhook delivery attempts, by outcome (delivered, retrying, failed).",
    ["outcome"],
    registry=REGISTRY,
)

# Read from the database at scrape time (set by the /metrics route).
QUEUE_DEPTH = Gauge(
    "imagesmith_queue_jobs",
    "Jobs pending or processing now, by status and model (the whole fleet).",
    ["status", "model"],
    registry=REGISTRY,
)
WORKER_HEARTBEAT = Gauge(
    "imagesmith_worker_last_heartbeat_timestamp_seconds",
    "Unix time of each worker's latest heartbeat (workers heard from in the last hour).",
    ["worker_id", "hostname", "device"],
    registry=REGISTRY,
)
WORKERS_LIVE = Gauge(
    "imagesmith_workers_live",
    "Workers with a heartbeat in the last 30 seconds.",
    registry=REGISTRY,
)
WEBHOOKS_WAITING = Gauge(
    "imagesmith_webhook_deliveries_pending",
    "Webhook deliveries not yet delivered and not given up (the whole fleet).",
    registry=REGISTRY,
)
