"""`imagesmith generate`, `imagesmith generations …`, `imagesmith images upload`: the SDK from a
terminal. The server and key come from --server/--key or IMAGESMITH_URL/IMAGESMITH_API_KEY.
Results go to stdout (paths, ids, JSON), progress and errors to stderr; the exit code is 0 on
success, 1 when the server refused or the generation failed, 2 for a usage error."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from imagesmith.client._base import DEFAULT_URL
from imagesmith.client._sync import Client
from imagesmith.client.errors import (
    APIStatusError,
    GenerationFailedError,
    ImagesmithError,
    WaitTimeoutError,
)
from imagesmith.client.models import Generation, GenerationEvent, Model

T = TypeVar("T")
err = Console(stderr=True, soft_wrap=True)
Server = Annotated[
    str, typer.Option("--server", envvar="IMAGESMITH_URL", help="Server URL", show_default=True)
]
Key = Annotated[
    str | None,
    typer.Option("--key", envvar="IMAGESMITH_API_KEY", help="Project API key", show_default=False),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the server's object as JSON")]
generations_app = typer.Typer(help="List, inspect, cancel and delete generations.")
images_app = typer.Typer(help="The project's image library.")


@contextmanager
def connected(server: str, key: str | None) -> Iterator[Client]:
    """A client; every SDK error becomes a message on stderr and exit code 1."""
    if not key:
        err.print("[red]No API key: pass --key or set IMAGESMITH_API_KEY.[/red]")
        raise typer.Exit(2)
    try:
        with Client(server, api_key=key) as client:
            yield client
    except APIStatusError as exc:
        err.print(f"[red]{exc.status_code} {exc.code or ''}[/red] {exc.message}")
        raise typer.Exit(1) from None
    except ImagesmithError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None


def show(obj: Model, as_json: bool, line: Callable[[Any], str]) -> None:
    if as_json:
        print(json.dumps(obj.model_dump(mode="json", by_alias=True), indent=2))
    else:
        print(line(obj))


def outputs(path: Path | None, generation: Generation) -> list[Path]:
    """Where each output goes: -o out.png, then out-2.png, …; without -o, <image id>.png."""
    targets = []
    for index, image in enumerate(generation.output_images):
        if path is None:
            targets.append(Path(f"{image.id}.png"))
        elif index == 0:
            targets.append(path)
        else:
            targets.append(path.with_name(f"{path.stem}-{index + 1}{path.suffix or '.png'}"))
    return targets


def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File for the image (more: out-2.png…)")
    ] = None,
    aspect: Annotated[str | None, typer.Option("--aspect", help="Aspect ratio, e.g. 16:9")] = None,
    model: Annotated[str | None, typer.Option(help="Model id (default: the server's)")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (random when absent)")] = None,
    n: Annotated[int | None, typer.Option("-n", help="Images from this prompt")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps")] = None,
    guidance: Annotated[float | None, typer.Option(help="Guidance scale")] = None,
    negative: Annotated[str | None, typer.Option(help="Negative prompt")] = None,
    width: Annotated[int | None, typer.Option(help="Width in pixels (with --height)")] = None,
    height: Annotated[int | None, typer.Option(help="Height in pixels (with --width)")] = None,
    enhance: Annotated[
        bool, typer.Option("--enhance/--no-enhance", help="Let the server enhance the prompt")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the images")] = 600.0,
    server: Server = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Generate an image, show its progress, and save it."""
    with (
        connected(server, key) as client,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps"),
            TimeElapsedColumn(),
            console=err,
            transient=not err.is_terminal,
        ) as bar,
    ):
        task = bar.add_task("queued", total=None)

        def progress(event: GenerationEvent) -> None:
            if event.progress is not None and event.progress.total:
                bar.update(task, total=event.progress.total, completed=event.progress.step)
            bar.update(task, description=event.status)

        try:
            generation = client.generate(
                prompt,
                on_progress=progress,
                timeout=timeout,
                aspect_ratio=aspect,
                model=model,
                seed=seed,
                num_outputs=n,
                steps=steps,
                guidance_scale=guidance,
                negative_prompt=negative,
                width=width,
                height=height,
                auto_enhance=enhance,
            )
        except (GenerationFailedError, WaitTimeoutError) as exc:
            bar.stop()
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
        bar.update(task, description="done")
        bar.stop()
        for index, target in enumerate(outputs(output, generation)):
            generation.download(target, index)
            print(target)
        err.print(
            f"generation {generation.id}: {generation.width}x{generation.height}, seed "
            f"{generation.seed}, model {generation.model}, {generation.processing_time_ms} ms"
        )


def line_of(g: Generation) -> str:
    return f"{g.id}  {g.status:<10}  {g.model}  seed {g.seed}  {g.original_prompt or g.prompt}"


@generations_app.command("list")
def generations_list(
    status: Annotated[str | None, typer.Option(help="pending, processing, success, …")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first")] = 20,
    as_json: AsJson = False,
    server: Server = DEFAULT_URL,
    key: Key = None,
) -> None:
    """The project's generations, newest first."""
    with connected(server, key) as client:
        page = client.generations.list(status=status, limit=min(limit, 100))
        rows = []
        for generation in page:
            rows.append(generation)
            if len(rows) >= limit:
                break
    if as_json:
        print(json.dumps([g.model_dump(mode="json", by_alias=True) for g in rows], indent=2))
        return
    table = Table("id", "status", "model", "size", "prompt", box=None)
    for g in rows:
        size = f"{g.width}x{g.height}"
        table.add_row(g.id, g.status, g.model or "", size, (g.original_prompt or g.prompt)[:60])
    Console(width=200 if not Console().is_terminal else None).print(table)


@generations_app.command("get")
def generations_get(
    generation_id: str, as_json: AsJson = False, server: Server = DEFAULT_URL, key: Key = None
) -> None:
    """One generation."""
    with connected(server, key) as client:
        generation = client.generations.get(generation_id)
    show(generation, as_json, line_of)


@generations_app.command("cancel")
def generations_cancel(generation_id: str, server: Server = DEFAULT_URL, key: Key = None) -> None:
    """Cancel a pending or running generation (its credits come back)."""
    with connected(server, key) as client:
        print(line_of(client.generations.cancel(generation_id)))


@generations_app.command("delete")
def generations_delete(generation_id: str, server: Server = DEFAULT_URL, key: Key = None) -> None:
    """Delete a generation and its images (images with a project alias are kept)."""
    with connected(server, key) as client:
        print(f"deleted {client.generations.delete(generation_id) or generation_id}")


@images_app.command("upload")
def images_upload(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="PNG, JPEG or WebP")],
    alias: Annotated[str | None, typer.Option(help="Project alias, e.g. @logo")] = None,
    as_json: AsJson = False,
    server: Server = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Upload an image into the library; prints its id (and alias)."""
    with connected(server, key) as client:
        image = client.images.upload(file, alias=alias)
    show(image, as_json, lambda i: f"{i.id}  {i.alias or ''}  {i.storage_url}")


def add_client_commands(app: typer.Typer) -> None:
    app.command("generate")(generate)
    app.add_typer(generations_app, name="generations")
    app.add_typer(images_app, name="images")
