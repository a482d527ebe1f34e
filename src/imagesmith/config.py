"""One typed settings object, read from `IMAGESMITH_*` environment variables."""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def warmup_buckets(value: str) -> tuple[tuple[int, int, int], ...]:
    """'1x1024x1024,4x768x1024' → ((1, 1024, 1024), (4, 768, 1024)): batch, width, height.
    'auto' → (): the engine derives them (Settings.compile_warmup_auto)."""
    if value.strip().lower() == "auto":
        return ()
    buckets = []
    for part in value.split(","):
        if not part.strip():
            continue
        pieces = part.strip().lower().split("x")
        if len(pieces) != 3 or not all(piece.isdigit() for piece in pieces):
            raise ValueError(f"compile_warmup part '{part.strip()}' is not BATCHxWIDTHxHEIGHT")
        batch, width, height = (int(piece) for piece in pieces)
        if not 1 <= batch <= 64 or width % 8 or height % 8 or not width or not height:
            raise ValueError(
                f"compile_warmup part '{part.strip()}': batch must be 1-64 and the sides "
                "positive multiples of 8"
            )
        buckets.append((batch, width, height))
    return tuple(buckets)


def retry_delays(value: str) -> tuple[float, ...]:
    """'5,300,1800' → (5.0, 300.0, 1800.0): seconds before each retry."""
    delays = []
    for part in value.split(","):
        if not part.strip():
            continue
        try:
            delay = float(part)
        except ValueError:
            raise ValueError(
                f"webhook_retry_schedule part '{part.strip()}' is not seconds"
            ) from None
        if not 0 <= delay <= 7 * 24 * 3600:
            raise ValueError(
                f"webhook_retry_schedule part '{part.strip()}' must be 0 to 604800 seconds"
            )
        delays.append(delay)
    if len(delays) > 50:
        raise ValueError("webhook_retry_schedule has more than 50 retries")
    return tuple(delays)


JWT_SECRET_MIN_BYTES = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMAGESMITH_", extra="ignore")

    data_dir: Path = Field(
        default=Path("./imagesmith-data"),
        description="Holds the SQLite file and the local image folder by default.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; sqlite:///… or postgresql://…. Default: SQLite in data_dir.",
    )
    storage_dir: Path | None = Field(
        default=None, description="Local image folder. Default: data_dir/images."
    )
    storage_url: str | None = Field(
        default=None,
        description="s3://bucket/prefix for S3-compatible storage; default: the local folder.",
    )
    storage_create_bucket: bool = Field(
        default=True, description="Create the S3 bucket on start when it is missing."
    )
    storage_url_mode: Literal["cdn", "presigned", "public"] = Field(
        default="cdn",
        description="storageUrl links: the server's /cdn route, presigned S3 URLs, or a public "
        "bucket URL (storage_public_base_url).",
    )
    storage_public_base_url: str | None = None
    presign_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    # The standard AWS variables, read here once and handed to boto3 explicitly.
    aws_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("IMAGESMITH_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"),
    )
    aws_region: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION")
    )
    s3_addressing_style: Literal["auto", "path", "virtual"] = "path"
    redis_url: str | None = Field(
        default=None,
        description="Shared state for several API replicas (rate-limit counters). Optional.",
    )
    rate_limit: str | None = Field(
        default=None,
        description="Per-key request limit, e.g. '100/hour' (Banatie's); unlimited by default.",
    )
    models_dir: Path | None = Field(
        default=None,
        description="Built-in model builds and pulled weights. Default: data_dir/models.",
    )
    public_url: str | None = Field(
        default=None,
        description="Base URL used in storageUrl links; default: the URL the request came in on.",
    )
    default_model: str = Field(
        default="demo",
        description="Model used when a request names none; the built-in `demo` draws shapes.",
    )
    models_file: Path | None = Field(
        default=None, description="TOML file with extra [[models]] entries (see README)."
    )

    # Worker and queue.
    worker_batch_size: int = Field(
        default=4,
        ge=1,
        le=16,
        description="Compatible queued jobs run in one pipeline call, up to this many images in "
        "all (a job with more outputs runs alone). With 300 "
        "clients on the demo model it doubled the jobs done per second on a 2-core CPU "
        "(bench/RESULTS.md); a batch that does not fit the device runs its jobs one at a time.",
    )
    lease_seconds: float = Field(default=30.0, gt=0)
    poll_seconds: float = Field(default=1.0, gt=0)
    wait_recheck_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often one sweep per process re-reads the jobs its waiting requests and "
        "event streams wait on, for what a wake-up could miss (waiters wake on the notifier: "
        "in-process, or NOTIFY on PostgreSQL). A SQLite API started with --no-worker sweeps "
        "every poll_seconds instead: SQLite carries no wake-ups between processes.",
    )
    max_retries: int = Field(default=3, ge=0)
    store_retry_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="How long a worker keeps a finished batch's images and retries storing "
        "them (growing, jittered waits from 0.5 s to 8 s) when the store or the database "
        "refuses, before it hands the jobs back to run again. A storage blip then costs no "
        "rerun; 0 hands them back at once.",
    )
    job_timeout_seconds: float = Field(default=600.0, gt=0)
    shutdown_grace_seconds: float = Field(
        default=30.0, ge=0, description="On stop, how long a running batch may finish."
    )
    keep_alive_seconds: int = Field(
        default=75,
        ge=1,
        description="How long an idle client connection stays open. Longer than the idle "
        "timeouts of clients' pools (httpx: 5 s) and load balancers (AWS ALB: 60 s): a server "
        "that closes first races the next request on that connection, which then fails.",
    )
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:N or mps")
    # Speed on a GPU: each "auto" is on (or half precision) on CUDA and as before on CPU.
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto",
        description="Weights' dtype. auto: float32 on CPU; on CUDA and MPS float16, or "
        "bfloat16 for a model whose variant is bf16.",
    )
    attention: Literal["auto", "sdpa", "default"] = Field(
        default="auto",
        description="UNet and VAE attention: sdpa (torch's scaled_dot_product_attention, "
        "what auto means) or default (diffusers' plain eager processor).",
    )
    channels_last: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="UNet and VAE in channels-last memory format. auto: on for CUDA only.",
    )
    compile: Literal["off", "on"] = Field(
        default="off",
        description="torch.compile the UNet at load (minutes per bucket on first use).",
    )
    compile_mode: Literal[
        "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
    ] = Field(default="default", description="torch.compile mode when compile is on.")
    compile_warmup: str = Field(
        default="",
        description="With compile on, the BATCHxWIDTHxHEIGHT buckets to compile right after "
        "a model loads, e.g. '1x1024x1024,4x1024x1024' (the batch is the images per "
        "pipeline call); 'auto': every batch from 1 to worker_batch_size at each model's "
        "default size. Empty: each compiles on its first job.",
    )
    compile_max_graphs: int = Field(
        default=8,
        ge=1,
        le=256,
        description="With compile on, the most (batch, size) buckets compiled per model, the "
        "warm-up's included; jobs of any other bucket run the UNet uncompiled (logged once "
        "per bucket as model.compile_skipped). Bounds the compile time and memory that new "
        "sizes can cost a worker.",
    )

    @field_validator("compile_warmup")
    @classmethod
    def _buckets(cls, value: str) -> str:
        warmup_buckets(value)  # ValueError names the bad part
        return value

    torch_threads: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="CPU threads torch uses in the model child (intra-op). Default: on CPU one "
        "fewer than the cores the process may use (at least 1), so the API and the supervisor "
        "keep a core; on a GPU torch's own.",
    )
    adaptive_threads: bool = Field(
        default=False,
        description="On CPU, with torch_threads unset: choose torch's threads before each "
        "batch, leaving the rest of the machine the cores it used over the last second and, "
        "while it is quiet, using whichever of all the cores or half of them ran that batch "
        "shape faster (worker/cpu_share.py). Faster where the API is not busy (16 clients at "
        "256 px on 2 cores: 2.56 -> 3.70 img/s), but a seed's image is then byte-identical "
        "only between batches that ran on the same thread count: a different count changes "
        "the last bits (about one intensity level).",
    )
    png_compress_level: int = Field(
        default=1,
        ge=0,
        le=9,
        description="zlib level of the PNGs the worker writes (0 none … 9 smallest). 1 encodes "
        "a 1024 px picture in about 60 % of the time of Pillow's default 6, for files about "
        "10 % larger: the encode is part of every job's latency.",
    )
    model_cache_gb: float = Field(
        default=12.0,
        gt=0,
        description="Loaded models kept in memory, least recently used dropped first.",
    )
    allow_downloads: bool = Field(
        default=False,
        description="Let the worker fetch missing model weights from the hub on first use.",
    )

    # Remote providers (models with `provider = …` in the models file). Keys are never logged
    # or returned.
    replicate_api_token: str | None = None
    replicate_base_url: str = "https://api.replicate.com"
    openai_api_key: str | None = None
    openai_base_url: str = "https://api.openai.com"
    openai_compatible_api_key: str | None = Field(
        default=None, description="Bearer key for openai-compatible models (their base_url)."
    )
    gemini_api_key: str | None = None
    gemini_base_url: str = "https://generativelanguage.googleapis.com"
    remote_concurrency: int = Field(
        default=4, ge=1, le=256, description="Jobs one worker runs at once per provider."
    )
    remote_request_timeout_seconds: float = Field(
        default=120.0, gt=0, description="One HTTP call to a provider."
    )
    remote_max_output_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1024, description="Largest image fetched from a provider."
    )

    # Prompt enhancement through any OpenAI-compatible chat-completions endpoint (optional).
    llm_base_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_api_key: str | None = None
    llm_timeout_seconds: float = Field(default=15.0, gt=0)

    # Remote images (img2img init_image_url).
    allow_private_urls: bool = Field(
        default=False,
        description="Let image URLs point at loopback/private/link-local hosts (testing only).",
    )
    url_fetch_timeout_seconds: float = Field(default=10.0, gt=0)
    reference_strength: float = Field(
        default=0.75,
        ge=0.05,
        le=1.0,
        description="img2img strength when the first reference image is the init image.",
    )

    # Live URLs (/cdn/{org}/{project}/live/{scope}).
    login_failures_limit: str = Field(
        default="10/15minutes",
        description="Failed end-user logins per account (devkit4ai); past it the account's "
        "logins answer 429 until the window moves on. Per account, not per IP: an app's "
        "server sends every user's login from one address.",
    )
    live_ip_limit: str = Field(
        default="10/hour", description="New live generations per client IP (cache hits are free)."
    )
    live_scope_limit: int = Field(default=30, ge=0, description="Default newGenerationsLimit.")
    live_wait_seconds: float = Field(default=120.0, gt=0)
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses or CIDR ranges of your reverse proxies. Only when "
        "a request comes from one of them is X-Forwarded-For read (right to left, skipping "
        "trusted hops) for the client IP that per-IP limits count.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip():
                ipaddress.ip_network(part.strip(), strict=False)  # ValueError names the part
        return value

    # Webhooks (Standard Webhooks signatures; a durable outbox, webhooks/).
    webhook_retry_schedule: str = Field(
        default="5,300,1800,7200,18000,36000,36000",
        description="Seconds to wait before each retry of a failed delivery, comma-separated "
        "(Standard Webhooks' 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h); after the last one "
        "the delivery is marked failed.",
    )

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        retry_delays(value)  # ValueError names the bad part
        return value

    webhook_timeout_seconds: float = Field(
        default=15.0, gt=0, le=300, description="One delivery attempt's deadline, in all."
    )
    webhook_concurrency: int = Field(
        default=8, ge=1, le=256, description="Deliveries one process sends at once."
    )
    webhook_poll_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often a sender looks for due retries and deliveries a dead process "
        "left (new deliveries written in the process wake it at once).",
    )
    webhook_progress_seconds: float = Field(
        default=2.0, gt=0, description="At most one generation.progress event per this."
    )
    webhook_secret_overlap_hours: float = Field(
        default=24.0,
        ge=0,
        description="After a secret rotation, how long the previous secret also signs.",
    )
    webhook_max_endpoints: int = Field(default=20, ge=1, le=1000, description="Per project.")
    webhook_project_concurrency: int = Field(
        default=2,
        ge=1,
        le=256,
        description="Deliveries of one project a process sends at once (one tenant's slow "
        "endpoints never hold every slot).",
    )
    webhook_retention_days: float = Field(
        default=30.0,
        gt=0,
        description="Delivered and failed deliveries older than this are deleted (the log).",
    )

    # Operations.
    metrics_token: str | None = Field(
        default=None,
        description="Bearer token that lets a scraper read /metrics from anywhere; without "
        "it only loopback clients may.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object per line, for log shippers."
    )
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        default="auto",
        description="The event loop of `serve` and `worker`. auto: uvloop where it is installed "
        "(it is not by default), else asyncio's own.",
    )
    http_parser: Literal["auto", "h11", "httptools"] = Field(
        default="auto",
        description="uvicorn's HTTP/1.1 parser. auto: httptools (C) where installed, else h11.",
    )

    # API behaviour.
    max_wait_seconds: float = Field(default=300.0, ge=0)
    stablecog_wait_seconds: float = Field(
        default=240.0, gt=0, description="How long Stablecog's create waits before TIMEOUT."
    )
    project_key_days: int = Field(default=90, ge=1)
    openai_default_model: str | None = Field(
        default=None,
        description="The model OpenAI's names (gpt-image-1, dall-e-3, …) run on; default: the "
        "server's default model.",
    )
    openai_wait_seconds: float = Field(
        default=300.0, gt=0, description="How long an OpenAI-dialect call waits for its images."
    )

    # End users (devkit4ai dialect).
    jwt_secret: str | None = Field(
        default=None,
        description="Signs end users' tokens; every API replica must share it. Default: a "
        "random secret kept in DATA_DIR/jwt-secret (fine for one server).",
    )
    jwt_previous_secrets: str = Field(
        default="",
        description="Comma-separated older secrets still accepted while tokens signed with them "
        "expire (rotation: move the old secret here, set a new one, drop it after 7 days).",
    )

    @field_validator("jwt_secret", "jwt_previous_secrets")
    @classmethod
    def _long_secrets(cls, value: str | None) -> str | None:
        # HS256 with a short secret is guessed offline from one token, and then every token of
        # every project can be forged.
        for secret in (value or "").split(","):
            if secret.strip() and len(secret.strip().encode()) < JWT_SECRET_MIN_BYTES:
                raise ValueError(
                    f"a JWT secret must be at least {JWT_SECRET_MIN_BYTES} bytes "
                    "(make one with: openssl rand -hex 32)"
                )
        return value

    access_token_minutes: int = Field(default=30, ge=1, le=24 * 60)
    refresh_token_days: int = Field(default=7, ge=1, le=365)
    developer_keys_max: int = Field(default=10, ge=1, le=1000)

    @cached_property
    def resolved_database_url(self) -> str:
        url = self.database_url or f"sqlite:///{(self.data_dir / 'imagesmith.db').resolve()}"
        if url.startswith("postgres://"):
            url = "postgresql://" + url.removeprefix("postgres://")
        return url

    @property
    def resolved_storage_dir(self) -> Path:
        return (self.storage_dir or self.data_dir / "images").resolve()

    @property
    def resolved_models_dir(self) -> Path:
        return (self.models_dir or self.data_dir / "models").resolve()

    @property
    def resolved_compile_warmup(self) -> tuple[tuple[int, int, int], ...]:
        return warmup_buckets(self.compile_warmup)

    @property
    def compile_warmup_auto(self) -> int:
        """With compile_warmup 'auto': the largest batch to warm up (the worker's); else 0."""
        return self.worker_batch_size if self.compile_warmup.strip().lower() == "auto" else 0

    @property
    def resolved_retry_delays(self) -> tuple[float, ...]:
        return retry_delays(self.webhook_retry_schedule)

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")
