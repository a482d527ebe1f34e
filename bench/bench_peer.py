"""imagesmith side by side with its peer aquiles-image (the only open server that batches across
requests) and the raw diffusers loop: same tiny-sd folder, size, steps, guidance and prompt.

    .venv/bin/python bench/bench_peer.py [--steps 4,10] [--size 256] [--repeats 2]
        [--aquiles-gc both|on|off] [--no-aquiles] [--quick] [--out FILE]
    .venv/bin/python bench/bench_peer.py --setup   # only (re)build aquiles' venv

Scenarios (images/s from the first request sent to the last answer; an untimed warm-up request
first): 1 client x 16 sequential requests; 16 concurrent clients x 64 requests; 4 clients
x 16 requests of n=4. The raw loop runs at batch 1 for the first and batch 4 for the others.
imagesmith runs with IMAGESMITH_WORKER_BATCH_SIZE=4 and IMAGESMITH_ADAPTIVE_THREADS=true (unless
the environment sets it) and answers on /v1/images/generations with
b64_json; aquiles is started by bench/aquiles_cpu_launcher.py (it loads models only on
CUDA/MPS as shipped) with --max-batch-size 4 --batch-timeout 0.5, in its own venv (default
~/.cache/imagesmith-bench/aquiles-venv, built on first use; about 1.3 GB). "gc off" is a
diagnostic, not aquiles as shipped. Servers run one at a time on 127.0.0.1, and are killed by
pid at the end. Not a test: the numbers depend on the machine (two shared cores are noisy)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from imagesmith.catalog.models import BUILTIN_MODELS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.serverproc import (  # noqa: E402
    Server,
    children_of,
    cpu_seconds,
    create_key,
    free_port,
)

AQUILES_VENV = Path.home() / ".cache" / "imagesmith-bench" / "aquiles-venv"
AQUILES_VERSION = "0.8.3"
TORCH_VERSION = "2.13.0"
# aquiles' serve path needs these; its declared extras (torchvision, bitsandbytes, outlines)
# are never imported there and would pull in gigabytes.
SERVE_DEPS = [
    "accelerate", "safetensors", "pillow", "fastapi", "uvicorn", "typer", "ftfy", "protobuf",
    "platformdirs", "aiofiles", "python-multipart", "openai", "pymongo", "pydantic-settings",
    "PyJWT", "peft", "rich", "sentencepiece", "gguf", "dm-tree", "requests",
]  # fmt: skip
LAUNCHER = ROOT / "bench" / "aquiles_cpu_launcher.py"
PROMPT = "a photo of a red circle on a blue background"
GUIDANCE = 7.5
PNG_B64 = "iVBORw0KGgo"  # the PNG signature, base64-encoded


@dataclass(frozen=True)
class Scenario:
    clients: int
    requests: int  # in all, shared evenly among the clients
    n: int  # images per request
    raw_batch: int

    @property
    def label(self) -> str:
        if self.clients == 1:
            return f"1 client, {self.requests} sequential requests"
        if self.n == 1:
            return f"{self.clients} concurrent clients, {self.requests} requests"
        return f"{self.clients} clients x n={self.n}, {self.requests} requests"

    @property
    def images(self) -> int:
        return self.requests * self.n


FULL = (Scenario(1, 16, 1, 1), Scenario(16, 64, 1, 4), Scenario(4, 16, 4, 4))
QUICK = (Scenario(1, 4, 1, 1), Scenario(16, 16, 1, 4), Scenario(4, 4, 4, 4))


# --- aquiles' venv ---------------------------------------------------------------------------


def wanted_versions() -> dict[str, str]:
    """aquiles gets imagesmith's diffusers and transformers, so both run the same model code."""
    return {
        "aquiles-image": AQUILES_VERSION,
        "torch": TORCH_VERSION,
        "diffusers": importlib.metadata.version("diffusers"),
        "transformers": importlib.metadata.version("transformers"),
    }


def setup_aquiles(venv: Path) -> None:
    versions = wanted_versions()
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    print(f"setting up aquiles' venv in {venv} ({versions})", flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([*pip, f"torch=={TORCH_VERSION}"], check=True)
    subprocess.run([*pip, "--no-deps", f"aquiles-image=={AQUILES_VERSION}"], check=True)
    pins = [f"diffusers=={versions['diffusers']}", f"transformers=={versions['transformers']}"]
    subprocess.run([*pip, *pins, *SERVE_DEPS], check=True)
    (venv / "imagesmith-bench.json").write_text(json.dumps(versions))


def ensure_aquiles(venv: Path) -> None:
    marker = venv / "imagesmith-bench.json"
    if not marker.exists() or json.loads(marker.read_text()) != wanted_versions():
        setup_aquiles(venv)


# --- the model folder and the raw loop -------------------------------------------------------


def offline_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", **extra}


def build_tiny(models: Path) -> Path:
    code = (
        "import sys; from pathlib import Path; from imagesmith.engines.tiny import ensure_tiny_sd;"
        "print(ensure_tiny_sd(Path(sys.argv[1])))"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(models / "tiny-sd")],
        check=True,
        capture_output=True,
        env=offline_env(),
    )
    return models / "tiny-sd"


RAW_LOOP = """
import json, sys, time, torch
from diffusers import StableDiffusionPipeline
folder, size, steps, guidance, prompt, plan, repeats = json.loads(sys.argv[1])
pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
pipe.set_progress_bar_config(disable=True)
seed = 0
def call(batch):
    global seed
    gens = [torch.Generator("cpu").manual_seed(seed + i) for i in range(batch)]
    seed += batch
    pipe([prompt] * batch, width=size, height=size, num_inference_steps=steps,
         guidance_scale=guidance, generator=gens)
rates = {}
for batch, images in plan:
    call(batch)  # warm-up at this batch size
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(images // batch):
            call(batch)
        runs.append(images / (time.perf_counter() - start))
    rates[batch] = runs
print(json.dumps(rates))
"""


def raw_rates(
    folder: Path, size: int, steps: int, scenarios: tuple[Scenario, ...], repeats: int
) -> dict[int, float]:
    """Median images/s of a plain diffusers loop at each batch size the scenarios use (images:
    the most any scenario at that batch size makes), in a fresh process."""
    plan: dict[int, int] = {}
    for s in scenarios:
        plan[s.raw_batch] = max(plan.get(s.raw_batch, 0), -(-s.images // s.raw_batch) * s.raw_batch)
    spec = [str(folder), size, steps, GUIDANCE, PROMPT, sorted(plan.items()), repeats]
    out = subprocess.run(
        [sys.executable, "-c", RAW_LOOP, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=offline_env(),
    )
    if out.returncode != 0:
        raise RuntimeError(f"raw loop failed:\n{out.stderr[-3000:]}")
    rates = json.loads(out.stdout.strip().splitlines()[-1])
    return {int(batch): statistics.median(runs) for batch, runs in rates.items()}


# --- clients ---------------------------------------------------------------------------------


async def one_request(api: httpx.AsyncClient, body: dict[str, Any]) -> None:
    answer = await api.post("/v1/images/generations", json=body)
    if answer.status_code != 200:
        raise RuntimeError(f"HTTP {answer.status_code}: {answer.text[:300]}")
    data = answer.json()["data"]
    if len(data) != body["n"] or not all(d["b64_json"].startswith(PNG_B64) for d in data):
        raise RuntimeError(f"expected {body['n']} PNG images, got {answer.text[:300]}")


async def drive(url: str, headers: dict[str, str], body: dict[str, Any], s: Scenario) -> float:
    """Images/s of `s.clients` clients, each sending its share of the requests one by one."""
    shares = [s.requests // s.clients + (i < s.requests % s.clients) for i in range(s.clients)]
    limits = httpx.Limits(max_connections=s.clients + 2, max_keepalive_connections=s.clients + 2)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=600) as api:
        await one_request(api, {**body, "n": 1, "prompt": "warm-up"})

        async def client(count: int) -> None:
            for _ in range(count):
                await one_request(api, {**body, "n": s.n})

        start = time.perf_counter()
        await asyncio.gather(*(client(count) for count in shares))
        return s.images / (time.perf_counter() - start)


def measure(
    url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    scenarios: tuple[Scenario, ...],
    repeats: int,
) -> dict[Scenario, float]:
    """Median images/s per scenario on one running server (a warm-up request before each)."""
    return {
        s: statistics.median(asyncio.run(drive(url, headers, body, s)) for _ in range(repeats))
        for s in scenarios
    }


# --- servers ---------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def models_file(path: Path, steps: int) -> Path:
    """The OpenAI dialect takes no steps, so the server's tiny-sd entry gets them as its default
    (an override of the built-in by id)."""
    spec = next(m for m in BUILTIN_MODELS if m.id == "tiny-sd")
    spec = dataclasses.replace(
        spec, default_steps=steps, default_guidance=GUIDANCE, max_steps=max(spec.max_steps, steps)
    )
    fields = {k: v for k, v in dataclasses.asdict(spec).items() if v not in (None, {})}
    path.write_text("[[models]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in fields.items()))
    return path


def tree(pid: int) -> list[int]:
    kids = children_of(pid)
    return kids + [grandkid for kid in kids for grandkid in tree(kid)]


def run_imagesmith(
    work: Path, models: Path, size: int, steps: int, scenarios: tuple[Scenario, ...], repeats: int
) -> dict[Scenario, float]:
    server = Server(
        work / f"imagesmith-{steps}",
        models,
        worker_batch_size=4,
        adaptive_threads=os.environ.get("IMAGESMITH_ADAPTIVE_THREADS", "true"),
        lease_seconds=60,
        models_file=models_file(work / f"models-{steps}.toml", steps),
    )
    server.start()
    pids = [server.pid, *tree(server.pid)]
    try:
        key = create_key(server.env, "bench", "peer")
        body = {"model": "tiny-sd", "prompt": PROMPT, "size": f"{size}x{size}"}
        body["response_format"] = "b64_json"
        headers = {"Authorization": f"Bearer {key}"}
        rates: dict[Scenario, float] = {}
        for s in scenarios:
            # What the server's own processes spend a picture: on a GPU the API's share is what
            # caps one API process's images/s; on this CPU it is taken from the model's cores.
            before = [cpu_seconds(pid) for pid in pids]
            rates.update(measure(server.url, headers, body, (s,), repeats))
            spent = [cpu_seconds(pid) - was for pid, was in zip(pids, before, strict=True)]
            images = repeats * (s.images + 1)  # and each run's warm-up request
            api, child = spent[0] * 1000 / images, sum(spent[1:]) * 1000 / images
            print(
                f"  imagesmith, {s.label}: CPU a picture: API and supervisor {api:.1f} ms, "
                f"model child {child:.1f} ms",
                flush=True,
            )
        return rates
    finally:
        server.stop()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def run_aquiles(
    venv: Path,
    work: Path,
    folder: Path,
    size: int,
    steps: int,
    scenarios: tuple[Scenario, ...],
    repeats: int,
    gc_off: bool,
) -> dict[Scenario, float]:
    scratch = work / f"aquiles-{steps}-{'gc-off' if gc_off else 'shipped'}"
    scratch.mkdir(parents=True)
    port = free_port()
    command = [
        str(venv / "bin" / "python"), str(LAUNCHER), "--gc", "off" if gc_off else "on", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--model", str(folder),
        "--auto-pipeline", "--auto-pipeline-type", "t2i", "--set-steps", str(steps),
        "--guidance-scale", str(GUIDANCE), "--max-batch-size", "4", "--batch-timeout", "0.5",
        # Its default, 4, answers 429 to the 5th concurrent request; raised so that every
        # client is served (a setting, not a patch).
        "--max-concurrent-infer", str(max(s.clients for s in scenarios)),
    ]  # fmt: skip
    env = offline_env(XDG_DATA_HOME=str(scratch), TMPDIR=str(scratch))
    log = scratch / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"aquiles did not start:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).json().get("status") == "ok":
                    break
            time.sleep(0.5)
        # It requires a Bearer header even with no keys set, and `model` equal to the folder.
        body = {"model": str(folder), "prompt": PROMPT, "size": f"{size}x{size}"}
        body["response_format"] = "b64_json"
        return measure(url, {"Authorization": "Bearer unused"}, body, scenarios, repeats)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# --- report ----------------------------------------------------------------------------------


def cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None else f"{a / b:.2f}"


def report(
    results: dict[tuple[Scenario, int], dict[str, float]], command: str, size: int, load: float
) -> list[str]:
    lines = [
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores, no "
        f"GPU; tiny-sd, {size}x{size}, guidance {GUIDANCE}; aquiles-image {AQUILES_VERSION}, "
        f"diffusers {importlib.metadata.version('diffusers')}; load average at the start "
        f"{load:.2f}; img/s)",
        "",
        "| scenario | steps | raw diffusers | imagesmith | aquiles as shipped | aquiles, gc off "
        "(diagnostic) | imagesmith / raw | imagesmith / aquiles as shipped |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (s, steps), row in results.items():
        raw, ours = row.get("raw"), row.get("imagesmith")
        lines.append(
            f"| {s.label} | {steps} | {cell(raw)} (batch {s.raw_batch}) | {cell(ours)} | "
            f"{cell(row.get('aquiles'))} | {cell(row.get('aquiles-gc-off'))} | "
            f"{ratio(ours, raw)} | {ratio(ours, row.get('aquiles'))} |"
        )
    lines += ["", *goals(results), ""]
    return lines


def goals(results: dict[tuple[Scenario, int], dict[str, float]]) -> list[str]:
    """Issue 13's targets: ≥ 0.95 of the raw batched loop with 16 clients, ≥ 1.5x aquiles as
    shipped everywhere, ahead of aquiles with gc off everywhere."""
    met: dict[str, list[bool]] = {}
    for (s, _steps), row in results.items():
        ours = row.get("imagesmith")
        if ours is None:
            continue
        if s.clients == 16 and "raw" in row:
            met.setdefault("≥ 0.95 x raw batch 4, 16 clients", []).append(ours >= 0.95 * row["raw"])
        if "aquiles" in row:
            met.setdefault("≥ 1.5 x aquiles as shipped, every row", []).append(
                ours >= 1.5 * row["aquiles"]
            )
        if "aquiles-gc-off" in row:
            met.setdefault("> aquiles gc off, every row", []).append(ours > row["aquiles-gc-off"])
    return [
        f"Goal {name}: {'met' if all(ok) else f'not met ({ok.count(False)} of {len(ok)} rows)'}"
        for name, ok in met.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup", action="store_true", help="(re)build aquiles' venv and exit")
    parser.add_argument("--venv", type=Path, default=AQUILES_VENV)
    parser.add_argument("--steps", default="4", help="comma-separated, e.g. 4,10")
    parser.add_argument("--size", type=int, default=256, choices=(256, 512, 1024))
    parser.add_argument("--repeats", type=int, default=2, help="runs per scenario (median)")
    parser.add_argument("--aquiles-gc", choices=("both", "on", "off"), default="both")
    parser.add_argument("--no-aquiles", action="store_true", help="raw loop and imagesmith only")
    parser.add_argument("--quick", action="store_true", help="smoke test: fewer requests, 1 run")
    parser.add_argument("--out", type=Path, help="append the table to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (server logs)")
    args = parser.parse_args()
    if args.setup:
        setup_aquiles(args.venv)
        return
    # A SIGTERM unwinds like Ctrl-C, so every server started is still killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    scenarios = QUICK if args.quick else FULL
    repeats = 1 if args.quick else args.repeats
    steps_list = [int(v) for v in args.steps.split(",")]
    variants: list[bool] = {"both": [False, True], "on": [False], "off": [True]}[args.aquiles_gc]
    if args.no_aquiles:
        variants = []
    if variants:
        ensure_aquiles(args.venv)
    command = shlex.join([".venv/bin/python", "bench/bench_peer.py", *sys.argv[1:]])
    work = Path(tempfile.mkdtemp(prefix="imagesmith-peer-"))
    models = work / "models"
    load = os.getloadavg()[0]
    print(f"work folder {work}; load average {load:.2f}", flush=True)
    if load > 0.5:
        print("warning: the machine is busy; the numbers will measure the neighbour", flush=True)
    folder = build_tiny(models)
    results: dict[tuple[Scenario, int], dict[str, float]] = {
        (s, steps): {} for steps in steps_list for s in scenarios
    }
    for steps in steps_list:
        rates = raw_rates(folder, args.size, steps, scenarios, repeats)
        runs = [("raw", {s: rates[s.raw_batch] for s in scenarios})]
        shown = {batch: round(rate, 2) for batch, rate in rates.items()}
        print(f"steps {steps}: raw by batch size {shown}", flush=True)
        runs.append(
            ("imagesmith", run_imagesmith(work, models, args.size, steps, scenarios, repeats))
        )
        print(
            f"steps {steps}: imagesmith {[round(v, 2) for v in runs[-1][1].values()]}", flush=True
        )
        for gc_off in variants:
            name = "aquiles-gc-off" if gc_off else "aquiles"
            got = run_aquiles(args.venv, work, folder, args.size, steps, scenarios, repeats, gc_off)
            runs.append((name, got))
            print(f"steps {steps}: {name} {[round(v, 2) for v in got.values()]}", flush=True)
        for name, by_scenario in runs:
            for s, value in by_scenario.items():
                results[(s, steps)][name] = value
    lines = report(results, command, args.size, load)
    print("\n" + "\n".join(lines))
    if args.out:
        with args.out.open("a") as out:
            out.write("\n" + "\n".join(lines))
    if not args.keep:  # on a failure it stays, with the servers' logs
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
