"""The `imagesmith` command. Client commands (generate, generations, images) talk to a server
over HTTP and need only the SDK's dependencies; server commands (serve, worker, keys, models,
migrate, plan, credits, …) import the server's parts when they run, so `pip install imagesmith`
without the server extra still gives a working `imagesmith generate`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from imagesmith.client.cli import add_client_commands
from imagesmith.logging import configure_logging

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from imagesmith.config import Settings
    from imagesmith.limits.quotas import Limits
    from imagesmith.models import Project
    from imagesmith.runtime import Runtime

# Modules only the server extra installs: a server command without them says how to get them.
SERVER_MODULES = {
    "fastapi", "uvicorn", "sqlalchemy", "alembic", "pydantic_settings", "minio", "redis",
    "limits", "jwt", "argon2", "PIL", "numpy", "multipart", "aiosqlite", "asyncpg",
    "psycopg",
    "prometheus_client",
}  # fmt: skip
# The local engine's (the `diffusers` extra): only commands that run a model here need them.
ENGINE_MODULES = {"torch", "diffusers", "transformers", "accelerate", "safetensors", "scipy"}

app = typer.Typer(
    help="imagesmith: a self-hosted image-generation API server.", no_args_is_help=True
)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
models_app = typer.Typer(help="Inspect and prepare models.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(models_app, name="models")
credits_app = typer.Typer(help="Project credit balances.", no_args_is_help=True)
app.add_typer(credits_app, name="credits")
plan_app = typer.Typer(help="Plans: monthly quotas and concurrency caps.", no_args_is_help=True)
app.add_typer(plan_app, name="plan")
anonymous_app = typer.Typer(
    help="devkit4ai anonymous generation (project headers, no end user).", no_args_is_help=True
)
app.add_typer(anonymous_app, name="anonymous")
live_app = typer.Typer(help="Live URLs: public generate-on-first-GET links.", no_args_is_help=True)
app.add_typer(live_app, name="live")
webhooks_app = typer.Typer(
    help="Webhooks: a project's endpoints, its signing secret, delivery logs.",
    no_args_is_help=True,
)
app.add_typer(webhooks_app, name="webhooks")
console = Console(stderr=True)
add_client_commands(app)


def load_settings() -> Settings:
    """The server's settings (imported here: the client commands run without them)."""
    from imagesmith.config import Settings

    return Settings()


def table_console() -> Console:
    """Tables on a pipe get a wide page, so ids and prefixes are never cut."""
    out = Console()
    return out if out.is_terminal else Console(width=240)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Run the API only")] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
) -> None:
    """Start the API and one embedded worker (SQLite + local folder by default)."""
    from imagesmith import serve_process, serving
    from imagesmith.db import migrate

    settings = load_settings()
    configure_logging(log_level, settings.log_format)
    # Before any thread starts; the app's own migration step then finds the database at head.
    migrate.upgrade_in_child(settings)
    # Plain lines: rich read "[no embedded worker]" as markup (and printed nothing of it) and
    # wrapped long paths at 80 columns in a log file.
    typer.echo(f"imagesmith: database {settings.resolved_database_url}", err=True)
    typer.echo(f"imagesmith: images in {settings.resolved_storage_dir}", err=True)
    typer.echo(
        f"imagesmith: API on http://{host}:{port}  (docs: /docs)"
        + ("" if not no_worker else "  [no embedded worker]")
        + f"  [{serving.event_loop(settings)}, {serving.http_parser(settings)}]",
        err=True,
    )
    command = serve_process.argv(host, port, not no_worker, log_level)
    if hasattr(os, "execv") and sys.platform != "win32":
        # The same process, without the command line's libraries (serve_process says why).
        sys.stderr.flush()
        os.execv(command[0], command)
    serve_process.serve(host, port, not no_worker, log_level)  # Windows: no exec that keeps the PID


@app.command()
def worker(
    log_level: Annotated[str, typer.Option()] = "info",
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve this worker's Prometheus metrics on this port")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Interface for --metrics-port")] = "127.0.0.1",
) -> None:
    """Run a worker only: it needs just the database and storage settings."""
    from imagesmith import serving
    from imagesmith.db import migrate
    from imagesmith.webhooks.sender import WebhookSender
    from imagesmith.worker.run import run_workers, worker_runtime

    settings = load_settings()
    configure_logging(log_level, settings.log_format)
    migrate.upgrade_in_child(settings)
    if metrics_port is not None:
        from prometheus_client import start_http_server

        from imagesmith.metrics import REGISTRY

        start_http_server(metrics_port, metrics_host, registry=REGISTRY)
        console.print(f"imagesmith: worker metrics on http://{metrics_host}:{metrics_port}/metrics")

    async def main() -> None:
        runtime = worker_runtime(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            async with runtime.listening():
                serving.settle_heap()
                sending = asyncio.create_task(WebhookSender(runtime).run(stop))
                try:
                    await run_workers(runtime, stop)
                finally:
                    serving.unsettle_heap()
                    stop.set()
                    await sending
        finally:
            await runtime.close()

    serving.run(main, settings)


@app.command("migrate")
def migrate_cmd() -> None:
    """Apply database migrations (the server also does this on start)."""
    from imagesmith.db import migrate

    migrate.upgrade(load_settings())
    console.print("migrations applied")


@keys_app.command("create")
def keys_create(
    org: Annotated[str | None, typer.Option(help="Organization slug (created if needed)")] = None,
    project: Annotated[str | None, typer.Option(help="Project slug (created if needed)")] = None,
    type: Annotated[
        str, typer.Option("--type", help="project, master or developer (an organization's)")
    ] = "project",
    name: Annotated[str | None, typer.Option(help="A label for the key")] = None,
    expires_in_days: Annotated[
        int | None, typer.Option(help="Default: 90 for project keys")
    ] = None,
) -> None:
    """Create a key; the key itself is the last line of stdout."""
    from imagesmith.auth.service import KeyService
    from imagesmith.db import migrate
    from imagesmith.db.engine import Database
    from imagesmith.errors import ImagesmithError
    from imagesmith.models import KeyType

    if type not in ("project", "master", "developer"):
        raise typer.BadParameter("use 'project', 'master' or 'developer'", param_hint="--type")
    key_type = KeyType(type)
    settings = load_settings()
    migrate.upgrade(settings)
    if expires_in_days is None and key_type is KeyType.PROJECT:
        expires_in_days = settings.project_key_days

    async def main() -> tuple[str, str]:
        db = Database(settings)
        try:
            async with db.transaction() as session:
                result = await KeyService(session, settings.developer_keys_max).issue(
                    key_type,
                    org_slug=org,
                    project_slug=project,
                    name=name,
                    expires_in_days=expires_in_days,
                )
                if key_type is KeyType.DEVELOPER:
                    scope = f"organization {org}"
                elif project:
                    scope = f"{org}/{project}"
                else:
                    scope = f"organization {org}" if org else "all"
                return result.secret, f"{key_type.value} key {result.key.key_prefix}… for {scope}"
        finally:
            await db.dispose()

    try:
        secret, summary = asyncio.run(main())
    except ImagesmithError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None
    console.print(summary + " (shown once; store it now)")
    print(secret)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (prefixes only)."""
    from imagesmith.auth.repository import TenancyRepository
    from imagesmith.auth.service import key_summary
    from imagesmith.db import migrate
    from imagesmith.db.engine import Database

    settings = load_settings()
    migrate.upgrade(settings)

    async def main() -> list[dict[str, object]]:
        db = Database(settings)
        try:
            async with db.transaction() as session:
                repo = TenancyRepository(session)
                rows = []
                for key in await repo.keys():
                    summary = key_summary(key)
                    project = await repo.project_by_id(key.project_id) if key.project_id else None
                    org = await repo.org_by_id(key.organization_id) if key.organization_id else None
                    summary["scope"] = f"{org.slug}/{project.slug}" if org and project else "*"
                    rows.append(summary)
                return rows
        finally:
            await db.dispose()

    table = Table("id", "prefix", "type", "scope", "status", "expires", "last used")
    for row in asyncio.run(main()):
        table.add_row(
            str(row["id"]),
            str(row["keyPrefix"]),
            str(row["type"]),
            str(row["scope"]),
            str(row["status"]),
            str(row["expiresAt"] or "never"),
            str(row["lastUsedAt"] or "-"),
        )
    table_console().print(table)


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="Key id or visible prefix")]) -> None:
    """Revoke a key by id or prefix."""
    from imagesmith.auth.service import KeyService
    from imagesmith.db import migrate
    from imagesmith.db.engine import Database
    from imagesmith.errors import ImagesmithError

    settings = load_settings()
    migrate.upgrade(settings)

    async def main() -> str:
        db = Database(settings)
        try:
            async with db.transaction() as session:
                revoked = await KeyService(session).revoke_by_prefix_or_id(key)
                return revoked.id
        finally:
            await db.dispose()

    try:
        key_id = asyncio.run(main())
    except ImagesmithError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None
    print(f"revoked {key_id}")


@credits_app.command("set")
def credits_set(
    org: Annotated[str, typer.Option(help="Organization slug")],
    project: Annotated[str, typer.Option(help="Project slug (created if needed)")],
    balance: Annotated[str, typer.Argument(help="A number of credits, or 'unlimited'")],
) -> None:
    """Set a project's credit balance: one credit per output image."""
    from imagesmith.limits.credits import Credits

    amount: int | None
    if balance == "unlimited":
        amount = None
    elif balance.isdigit():
        amount = int(balance)
    else:
        raise typer.BadParameter("use a whole number >= 0 or 'unlimited'", param_hint="BALANCE")

    async def change(session: AsyncSession, found: Project) -> str:
        await Credits(session).set_balance(found.id, amount)
        return f"{org}/{project}: {balance} credits"

    print(_with_project(org, project, change, create=True))


@plan_app.command("set")
def plan_set(
    org: Annotated[str, typer.Option(help="Organization slug")],
    project: Annotated[str, typer.Option(help="Project slug")],
    plan: Annotated[str, typer.Argument(help="free, starter, premium or unlimited")],
    monthly: Annotated[int | None, typer.Option(help="Generations per month (override)")] = None,
    concurrent: Annotated[
        int | None, typer.Option(help="Pending + processing at once (override)")
    ] = None,
    end_user_monthly: Annotated[
        int | None, typer.Option(help="Generations per end user per month")
    ] = None,
) -> None:
    """Put a project on a plan (free 100/month, 1 at once; starter 1000, 3; premium unlimited,
    10; unlimited); the options override the plan's numbers."""

    async def change(session: AsyncSession, found: Project) -> str:
        limits = _quotas(session).set_plan(found, plan, monthly, concurrent, end_user_monthly)
        return describe_limits(org, project, limits)

    print(_with_project(org, project, change))


@plan_app.command("show")
def plan_show(
    org: Annotated[str, typer.Option(help="Organization slug")],
    project: Annotated[str, typer.Option(help="Project slug")],
) -> None:
    """A project's plan, its limits and its usage this month."""

    async def show(session: AsyncSession, found: Project) -> str:
        usage = await _quotas(session).usage(found)
        return (
            f"{describe_limits(org, project, usage.limits)}\n"
            f"used in {usage.month}: {usage.used}; pending or processing now: {usage.in_flight}"
        )

    print(_with_project(org, project, show))


def _quotas(session: AsyncSession) -> Any:
    from imagesmith.limits.quotas import Quotas

    return Quotas(session)


def describe_limits(org: str, project: str, limits: Limits) -> str:
    def shown(value: int | None) -> str:
        return "unlimited" if value is None else str(value)

    return (
        f"{org}/{project}: plan {limits.plan}; monthly {shown(limits.monthly)}; "
        f"concurrent {shown(limits.concurrent)}; per end user monthly "
        f"{shown(limits.end_user_monthly)}"
    )


def _with_project(
    org: str,
    project: str,
    action: Callable[[AsyncSession, Project], Awaitable[str]],
    *,
    create: bool = False,
) -> str:
    """Run `action` on a project in one transaction (`create`: make the project if needed);
    an expected error is printed and exits with 2."""
    from imagesmith.auth.service import KeyService
    from imagesmith.db import migrate
    from imagesmith.db.engine import Database
    from imagesmith.errors import ImagesmithError

    settings = load_settings()
    migrate.upgrade(settings)

    async def main() -> str:
        db = Database(settings)
        try:
            async with db.transaction() as session:
                keys = KeyService(session)
                lookup = keys.ensure_project if create else keys.project
                _org, found = await lookup(org, project)
                return await action(session, found)
        finally:
            await db.dispose()

    try:
        return asyncio.run(main())
    except ImagesmithError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from None


@anonymous_app.command("enable")
def anonymous_enable(
    org: Annotated[str, typer.Option(help="Organization slug")],
    project: Annotated[str, typer.Option(help="Project slug")],
    daily: Annotated[int, typer.Option(help="Generations per client IP per day")] = 10,
) -> None:
    """Let devkit4ai clients generate with project headers only (no end user)."""
    print(_set_anonymous(org, project, True, daily))


@anonymous_app.command("disable")
def anonymous_disable(
    org: Annotated[str, typer.Option(help="Organization slug")],
    project: Annotated[str, typer.Option(help="Project slug")],
) -> None:
    """Turn anonymous generation off (the default)."""
    print(_set_anonymous(org, project, False, None))


def _set_anonymous(org: str, project: str, enabled: bool, daily: int | None) -> str:
    async def change(session: AsyncSession, found: Project) -> str:
        return f"{org}/{project}: {_quotas(session).set_anonymous(found, enabled, daily)}"

    return _with_project(org, project, change)


@live_app.command("enable")
def live_enable(
    org: Annotated[str, typer.Option(help="Organization slug")],
    project: Annotated[str, typer.Option(help="Project slug")],
    scope: Annotated[
        list[str] | None,
        typer.Option(help="A scope strangers may start by first use (repeat the option)"),
    ] = None,
) -> None:
    """Turn live URLs on for a project (off by default: they generate for anyone with the URL)."""
    print(_set_live(org, project, True, scope))


@live_app.command("disable")
def live_disable(
    org: Annotated[str, typer.Option(help="Organization slug")],
    project: Annotated[str, typer.Option(help="Project slug")],
) -> None:
    """Turn live URLs off: cached images stay, nothing new is generated."""
    print(_set_live(org, project, False, None))


def _set_live(org: str, project: str, enabled: bool, scopes: list[str] | None) -> str:
    from imagesmith.live.service import set_project_live

    async def change(_session: AsyncSession, found: Project) -> str:
        return f"{org}/{project}: {set_project_live(found, enabled, scopes)}"

    return _with_project(org, project, change)


OrgOption = Annotated[str, typer.Option(help="Organization slug")]
ProjectOption = Annotated[str, typer.Option(help="Project slug")]
EventsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--event",
        help="An event to send (repeat): started, completed, failed, cancelled, progress. "
        "Default: all but progress",
    ),
]


def _with_runtime(org: str, project: str, action: Callable[[Runtime, str], Awaitable[Any]]) -> Any:
    """Run `action(runtime, project_id)` against the server's database and store; an expected
    error is printed and exits with 2."""
    from imagesmith.auth.service import KeyService
    from imagesmith.db import migrate
    from imagesmith.errors import ImagesmithError
    from imagesmith.runtime import Runtime

    settings = load_settings()
    migrate.upgrade(settings)

    async def main() -> Any:
        runtime = Runtime.open(settings)
        try:
            async with runtime.db.read() as session:
                _org, found = await KeyService(session).project(org, project)
            return await action(runtime, found.id)
        finally:
            await runtime.db.dispose()

    try:
        return asyncio.run(main())
    except ImagesmithError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None


@webhooks_app.command("secret")
def webhooks_secret(
    org: OrgOption,
    project: ProjectOption,
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Make a new secret; the old one signs for a while too")
    ] = False,
) -> None:
    """Print the project's signing secret (`whsec_…`, its last line); made on first use."""
    from imagesmith.webhooks.service import WebhookService

    async def action(runtime: Runtime, project_id: str) -> tuple[str, list[str]]:
        return await WebhookService(runtime).secret(project_id, rotate=rotate)

    secret, signing = _with_runtime(org, project, action)
    if rotate:
        hours = load_settings().webhook_secret_overlap_hours
        console.print(f"rotated: the previous secret also signs for {hours:g} h")
    elif len(signing) > 1:
        console.print("a rotation is under way: the previous secret also signs")
    print(secret)


@webhooks_app.command("create")
def webhooks_create(
    org: OrgOption,
    project: ProjectOption,
    url: Annotated[str, typer.Option(help="Where deliveries are POSTed")],
    event: EventsOption = None,
    description: Annotated[str | None, typer.Option(help="A note for people")] = None,
) -> None:
    """Add an endpoint that receives the project's generation events; prints its id last."""
    from imagesmith.webhooks.service import WebhookService

    async def action(runtime: Runtime, project_id: str) -> Any:
        return await WebhookService(runtime).create(project_id, url, event, description)

    endpoint = _with_runtime(org, project, action)
    console.print(f"endpoint for {', '.join(endpoint.events)} → {endpoint.url}")
    print(endpoint.id)


@webhooks_app.command("list")
def webhooks_list(org: OrgOption, project: ProjectOption) -> None:
    """The project's endpoints."""
    from imagesmith.webhooks.service import WebhookService

    async def action(runtime: Runtime, project_id: str) -> Any:
        return await WebhookService(runtime).endpoints(project_id)

    table = Table("id", "url", "events", "enabled", "note")
    for endpoint in _with_runtime(org, project, action):
        table.add_row(
            endpoint.id,
            endpoint.url,
            ",".join(e.removeprefix("generation.") for e in endpoint.events),
            "yes" if endpoint.enabled else f"no ({endpoint.disabled_reason or 'disabled'})",
            endpoint.description or "",
        )
    table_console().print(table)


@webhooks_app.command("update")
def webhooks_update(
    org: OrgOption,
    project: ProjectOption,
    endpoint_id: Annotated[str, typer.Argument(help="Endpoint id")],
    url: Annotated[str | None, typer.Option(help="A new URL")] = None,
    event: EventsOption = None,
    description: Annotated[str | None, typer.Option()] = None,
    enabled: Annotated[
        bool | None, typer.Option("--enable/--disable", help="Resume or stop deliveries")
    ] = None,
) -> None:
    """Change an endpoint's URL, events, note, or whether it receives anything."""
    from imagesmith.webhooks.service import EndpointChange, WebhookService

    change = EndpointChange(url, event, description, enabled)

    async def action(runtime: Runtime, project_id: str) -> Any:
        return await WebhookService(runtime).update(project_id, endpoint_id, change)

    endpoint = _with_runtime(org, project, action)
    state = "enabled" if endpoint.enabled else "disabled"
    print(f"{endpoint.id}: {state}, {', '.join(endpoint.events)} → {endpoint.url}")


@webhooks_app.command("delete")
def webhooks_delete(
    org: OrgOption,
    project: ProjectOption,
    endpoint_id: Annotated[str, typer.Argument(help="Endpoint id")],
) -> None:
    """Delete an endpoint (its pending deliveries are marked failed)."""
    from imagesmith.webhooks.service import WebhookService

    async def action(runtime: Runtime, project_id: str) -> None:
        await WebhookService(runtime).delete(project_id, endpoint_id)

    _with_runtime(org, project, action)
    print(f"deleted {endpoint_id}")


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    org: OrgOption,
    project: ProjectOption,
    endpoint: Annotated[str | None, typer.Option(help="Only this endpoint's")] = None,
    generation: Annotated[str | None, typer.Option(help="Only this generation's")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
) -> None:
    """The delivery log, newest first."""
    from imagesmith.webhooks.repository import WebhookRepository

    async def action(runtime: Runtime, project_id: str) -> Any:
        async with runtime.db.read() as session:
            rows, _total = await WebhookRepository(session).deliveries(
                project_id, generation_id=generation, endpoint_id=endpoint, limit=limit
            )
            return rows

    table = Table("webhook id", "event", "status", "attempts", "last code", "next", "url")
    for row in _with_runtime(org, project, action):
        table.add_row(
            row.message_id,
            row.event_type,
            row.status.value,
            str(row.attempts),
            str(row.last_status_code or row.last_error or "-"),
            row.next_attempt_at.isoformat(timespec="seconds") if row.next_attempt_at else "-",
            row.url,
        )
    table_console().print(table)


@models_app.command("list")
def models_list() -> None:
    """Show the model registry."""
    from imagesmith.catalog.models import ModelRegistry

    settings = load_settings()
    table = Table("id", "family", "source", "steps", "guidance", "description")
    for spec in ModelRegistry.load(settings.models_file).all():
        marker = " (default)" if spec.id == settings.default_model else ""
        table.add_row(
            spec.id + marker,
            spec.family,
            spec.source,
            str(spec.default_steps),
            f"{spec.default_guidance:g}",
            spec.description,
        )
    table_console().print(table)


@models_app.command("build-tiny")
def models_build_tiny(
    out: Annotated[Path, typer.Argument(help="Folder to write the pipeline to")],
    seed: Annotated[int, typer.Option(help="Weight seed")] = 0,
) -> None:
    """Build the random-weight tiny-sd pipeline into OUT (no network)."""
    from imagesmith.engines.tiny import build_tiny_sd

    with contextlib.redirect_stdout(None):
        path = build_tiny_sd(out, seed=seed)
    print(path)


@models_app.command("train-demo")
def models_train_demo(
    out: Annotated[Path, typer.Argument(help="Folder to write the trained pipeline to")],
    minutes: Annotated[float, typer.Option(help="Wall-clock training budget")] = 58.0,
    seed: Annotated[int, typer.Option()] = 0,
    vae_from: Annotated[
        str | None,
        typer.Option(help="Reuse this pipeline folder's VAE instead of training one (experiments)"),
    ] = None,
) -> None:
    """Train the shapes demo model from scratch on this machine's CPU (the shipped `demo` model
    came from `--minutes 58` on 2 cores); then score it with `models score-demo OUT`."""
    from imagesmith.demo.train import TrainConfig, train_demo

    config = TrainConfig(minutes=minutes, seed=seed, vae_from=vae_from)
    train_demo(out, config, log=lambda line: console.print(line))


@models_app.command("score-demo")
def models_score_demo(
    folder: Annotated[
        Path | None, typer.Argument(help="A trained pipeline folder; default: the shipped one")
    ] = None,
    guidance: Annotated[float | None, typer.Option(help="Default: the catalog's")] = None,
    steps: Annotated[int | None, typer.Option(help="Default: the catalog's")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the first picture")] = 1234,
    scheduler: Annotated[
        str | None,
        typer.Option(help="A scheduler id (DDIM, DPM++_2M, …); default: the catalog's"),
    ] = None,
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT, e.g. 112x64 for 16:9")] = "64x64",
    sheet: Annotated[Path | None, typer.Option(help="Write a contact sheet PNG here")] = None,
    through_vae: Annotated[
        bool,
        typer.Option(
            "--round-trip",
            help="Score the held-out drawings passed through the VAE alone: the model's ceiling",
        ),
    ] = False,
) -> None:
    """Generate every held-out prompt (combinations the model never saw in training) and read
    the pictures with the pixel-statistics scorer."""
    from imagesmith.catalog.models import ModelRegistry
    from imagesmith.demo.evaluate import (
        contact_sheet,
        evaluate,
        held_out_scenes,
        load_pipeline,
        round_trip,
    )
    from imagesmith.engines.tiny import DEMO_FOLDER

    # What a request that names only the prompt gets.
    spec = ModelRegistry.load().get("demo")
    guidance = spec.default_guidance if guidance is None else guidance
    steps = steps or spec.default_steps
    scheduler = scheduler or spec.default_scheduler
    folder = folder or DEMO_FOLDER
    with contextlib.redirect_stderr(None):
        pipe = load_pipeline(folder)
    scenes = held_out_scenes(folder)
    try:
        width, height = (int(side) for side in size.lower().split("x"))
    except ValueError:
        console.print(f"[red]error:[/red] --size must be WIDTHxHEIGHT, not {size!r}")
        raise typer.Exit(2) from None
    if through_vae:
        result = round_trip(pipe, scenes, width=width, height=height)
        print(f"{len(scenes)} held-out drawings at {width}x{height} through the VAE alone")
    else:
        result = evaluate(
            pipe,
            scenes,
            guidance=guidance,
            steps=steps,
            seed=seed,
            width=width,
            height=height,
            scheduler=scheduler,
        )
        print(
            f"{len(scenes)} held-out prompts at {width}x{height}, guidance {guidance:g}, "
            f"{steps} steps, {scheduler}, seed {seed}"
        )
    score = result.score
    print(f"background colour {score.background}/{score.total}  {result.rates['background']:.1%}")
    print(f"shape colour      {score.color}/{score.total}  {result.rates['color']:.1%}")
    print(f"shape             {score.shape}/{score.total}  {result.rates['shape']:.1%}")
    print(
        f"position          {score.position}/{score.position_total}  {result.rates['position']:.1%}"
    )
    print(f"size              {score.size}/{score.position_total}  {result.rates['size']:.1%}")
    print(f"two …             {score.two}/{score.two_total}  {result.rates['two']:.1%}")
    if sheet is not None:
        contact_sheet(result.images).save(sheet)
        print(f"contact sheet: {sheet}")


@models_app.command("pull")
def models_pull(
    model_id: Annotated[str, typer.Argument(help="A model id from `models list`")],
) -> None:
    """Download a model's weights from the hub into the models folder."""
    from imagesmith.catalog.models import ModelRegistry, UnknownModel

    settings = load_settings()
    try:
        spec = ModelRegistry.load(settings.models_file).get(model_id)
    except UnknownModel as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if spec.source.startswith("builtin:") or Path(spec.source).is_dir():
        print(f"{model_id} needs no download ({spec.source})")
        return
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    cache = settings.resolved_models_dir / "hub"
    console.print(f"downloading {spec.source} into {cache}")
    try:
        path = snapshot_download(spec.source, cache_dir=str(cache))
    except (OSError, HfHubHTTPError, LocalEntryNotFoundError) as exc:
        console.print(
            f"[red]error:[/red] could not download {spec.source}: {str(exc).splitlines()[0]}\n"
            "This machine cannot reach the model hub. Download on a machine that can "
            f"(`imagesmith models pull {model_id}` with IMAGESMITH_MODELS_DIR pointing at a "
            "folder you then copy here), or set the model's source to a local folder in "
            "IMAGESMITH_MODELS_FILE."
        )
        raise typer.Exit(1) from None
    print(path)


def main() -> None:
    try:
        app()
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in ENGINE_MODULES:
            hint = "the local model engine with: pip install 'imagesmith[server,diffusers]'"
        elif missing in SERVER_MODULES:
            hint = "the server with: pip install 'imagesmith[server]'"
        else:
            raise
        console.print(
            f"This command runs the server's parts, and '{exc.name}' is not installed. Install "
            f"{hint}",
            style="red",
            markup=False,
            soft_wrap=True,
        )
        raise SystemExit(1) from None
