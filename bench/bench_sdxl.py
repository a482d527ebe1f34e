"""An SDXL-architecture pipeline with random weights: the raw diffusers loop against the server
end to end, on the same device in one run, with what each process holds in memory.

On a CUDA machine, in one go (no hub and no internet needed; about 5 min on an H100/H200 with
the model build, two server starts per batch list and the demo check; `--quick` about 3 min):

    IMAGESMITH_TORCH=torch EXTRAS=dev bash scripts/install      # a CUDA build of torch
    .venv/bin/python bench/bench_sdxl.py --scale full --size 1024 --steps 20 \
        --batches 1,2,4 --jobs 8
    .venv/bin/python bench/bench_sdxl.py --quick   # full, 1024 px, 20 steps, 1,4, 4 jobs

On a GPU machine lent through the device tool, which reaches no package index: run
`bench/device/prepare.sh` here first, then `bench/device/gpu_check.sh` there (its header says
how); it runs this script with the machine's own torch and the wheels carried.

On a CPU, the same script on a shrunken architecture (proves it end to end in about 2 min):

    .venv/bin/python bench/bench_sdxl.py --scale small --size 128 --steps 2 --batches 1,2 --jobs 4

Timing does not depend on the weights, so random ones measure the real cost. `--scale full` uses
the layer sizes of stabilityai/stable-diffusion-xl-base-1.0 (UNet ~2.57 B parameters, two CLIP
text encoders, the SDXL VAE; written here from the published configs, not downloaded). The
tokenizers are the project's own byte-level CLIP vocabulary (engines/tiny.py): any prompt
tokenizes, and only embedding rows below its size are ever read.

Steps: (1) a child process builds the pipeline on the device, saves it with save_pretrained,
loads it back with from_pretrained and times the raw loop at each batch (one warm-up call per
batch, which also compiles with --compile on); (2) per batch B, `imagesmith serve` with
IMAGESMITH_WORKER_BATCH_SIZE=B and the folder as a registered model gets B warm-up jobs, then
the timed jobs, all queued at once; (3) a server on the shipped `demo` model gives the memory a
worker and its model child hold with a small model loaded. Not a test: numbers depend on the
machine. --compile on adds minutes per bucket (run it with --batches 1 in a short budget)."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_server import PARTS, breakdown  # noqa: E402
from tests.serverproc import Server, cpu_seconds, create_key  # noqa: E402

MODEL_ID = "sdxl-random"
GUIDANCE = 7.0  # classifier-free guidance on, as SDXL runs: the UNet sees twice the batch
PROMPT = "a photograph of a red car on a street, detailed, light"

# stabilityai/stable-diffusion-xl-base-1.0, unet/config.json (from memory of the published file).
UNET_FULL: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),  # diffusers' name for the number of heads here
    "cross_attention_dim": 2048,  # 768 (CLIP ViT-L) + 1280 (OpenCLIP ViT-bigG)
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,  # 6 * 256 + 1280
    "norm_num_groups": 32,
    "act_fn": "silu",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}
# vae/config.json (the SDXL VAE: force_upcast, scaling 0.13025).
VAE_FULL: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}
# text_encoder (CLIP ViT-L/14) and text_encoder_2 (OpenCLIP ViT-bigG/14, with projection).
TEXT_FULL: tuple[dict[str, Any], dict[str, Any]] = (
    {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
     "num_attention_heads": 12, "hidden_act": "quick_gelu", "projection_dim": 768},
    {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
     "num_attention_heads": 20, "hidden_act": "gelu", "projection_dim": 1280},
)  # fmt: skip
CLIP_VOCAB = 49408  # the real embedding table, so the weights' size is SDXL's

# The same shape, shrunk to run on a CPU in seconds.
UNET_SMALL: dict[str, Any] = {
    **UNET_FULL,
    "sample_size": 16,
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    "transformer_layers_per_block": (1, 1, 2),
    "attention_head_dim": (2, 4, 4),
    "cross_attention_dim": 64,
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 6 * 8 + 32,
    "norm_num_groups": 8,
}
VAE_SMALL: dict[str, Any] = {
    **VAE_FULL,
    "block_out_channels": (8, 16, 32, 32),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 128,
}
TEXT_SMALL: tuple[dict[str, Any], dict[str, Any]] = (
    {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
     "num_attention_heads": 4, "hidden_act": "quick_gelu", "projection_dim": 32},
    {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
     "num_attention_heads": 4, "hidden_act": "gelu", "projection_dim": 32},
)  # fmt: skip


def memory_mib(pid: int | str = "self") -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of a process, MiB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0]) / 1024
    return out


def gpu_mib_by_pid() -> dict[int, float]:
    """What nvidia-smi says each process holds on the GPU (empty where it cannot say)."""
    try:
        text = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found = {}
    for line in text.splitlines():
        pid, _, used = line.partition(",")
        if pid.strip().isdigit() and used.strip().isdigit():
            found[int(pid)] = float(used)
    return found


# (1) Build, save, load, raw loop: in a child process that owns the device. -----------------


def build_pipeline(scale: str, device: str, dtype: Any, tok_dir: Path) -> Any:
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from imagesmith.engines.tiny import byte_tokenizer, write_tokenizer

    full = scale == "full"
    write_tokenizer(tok_dir)
    tokenizer = byte_tokenizer(tok_dir, max_length=77)
    torch.manual_seed(0)
    encoders = []
    for cls, shape in zip(
        (CLIPTextModel, CLIPTextModelWithProjection), TEXT_FULL if full else TEXT_SMALL, strict=True
    ):
        config = CLIPTextConfig(
            vocab_size=CLIP_VOCAB if full else len(tokenizer),
            max_position_embeddings=77,
            layer_norm_eps=1e-5,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **shape,
        )
        with torch.device(device):  # random init on the device: seconds, not minutes
            encoders.append(cls(config).to(dtype))
    with torch.device(device):
        unet = UNet2DConditionModel(**(UNET_FULL if full else UNET_SMALL)).to(dtype)
        vae = AutoencoderKL(**(VAE_FULL if full else VAE_SMALL)).to(dtype)
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        steps_offset=1,
        timestep_spacing="leading",
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=encoders[0],
        text_encoder_2=encoders[1],
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def raw_phase(args: argparse.Namespace) -> dict[str, Any]:
    import shutil
    import warnings

    import diffusers
    import torch

    warnings.filterwarnings("ignore")
    diffusers.utils.logging.disable_progress_bar()
    from diffusers import StableDiffusionXLPipeline
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    from imagesmith.engines.diffusers_engine import pick_device, pick_dtype

    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device, None)
    cuda = device.startswith("cuda")
    folder = Path(args.folder)
    result: dict[str, Any] = {"device": device, "dtype": str(dtype).removeprefix("torch.")}
    if cuda:
        result["gpu"] = torch.cuda.get_device_name(device)

    started = time.perf_counter()
    built = build_pipeline(args.scale, device, dtype, folder.parent / "tokenizer-src")
    result["params"] = {
        name: sum(p.numel() for p in getattr(built, name).parameters())
        for name in ("unet", "text_encoder", "text_encoder_2", "vae")
    }
    result["build_s"] = time.perf_counter() - started
    started = time.perf_counter()
    built.save_pretrained(str(folder), safe_serialization=True)
    for sub in ("tokenizer", "tokenizer_2"):  # the slow-tokenizer files beside tokenizer.json
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(folder.parent / "tokenizer-src" / name, folder / sub / name)
    result["save_s"] = time.perf_counter() - started
    result["disk_gb"] = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e9
    del built
    if cuda:
        torch.cuda.empty_cache()

    started = time.perf_counter()
    pipe = StableDiffusionXLPipeline.from_pretrained(
        str(folder), torch_dtype=dtype, local_files_only=True
    ).to(device)
    pipe.set_progress_bar_config(disable=True)
    processor = AttnProcessor2_0() if args.attention in ("auto", "sdpa") else AttnProcessor()
    for module in (pipe.unet, pipe.vae):
        module.set_attn_processor(processor)
        if args.channels_last == "on" or (args.channels_last == "auto" and cuda):
            module.to(memory_format=torch.channels_last)
    if args.compile == "on":
        pipe.unet.compile(mode=args.compile_mode, dynamic=False)
    if cuda:
        torch.cuda.synchronize()
    result["load_s"] = time.perf_counter() - started
    result["loaded_rss"] = memory_mib()

    runs = []
    for batch in args.batch_list:
        calls = math.ceil(args.jobs / batch)

        def call(seed: int, batch: int = batch) -> None:
            generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(batch)]
            with torch.inference_mode():
                pipe(
                    PROMPT,
                    num_inference_steps=args.steps,
                    guidance_scale=GUIDANCE,
                    height=args.size,
                    width=args.size,
                    num_images_per_prompt=batch,
                    generator=generators,
                    output_type="pil",
                )
            if cuda:
                torch.cuda.synchronize()

        if cuda:
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        call(0)  # warm-up (and the compile, with --compile on)
        warm_s = time.perf_counter() - started
        started = time.perf_counter()
        for index in range(calls):
            call(1000 * (index + 1))
        elapsed = time.perf_counter() - started
        runs.append(
            {
                "batch": batch,
                "images": calls * batch,
                "seconds": elapsed,
                "warmup_s": warm_s,
                "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
            }
        )
        print(f"raw b={batch}: {calls * batch / elapsed:.3f} img/s", file=sys.stderr, flush=True)
    result["runs"] = runs
    result["rss"] = memory_mib()
    return result


def run_raw(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--phase", "raw", "--folder", str(folder), *sys.argv[1:]]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "DIFFUSERS_VERBOSITY": "error",
    }
    out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, env=env)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# (2) The server end to end. ----------------------------------------------------------------


def write_models_file(path: Path, folder: Path, args: argparse.Namespace) -> None:
    path.write_text(
        f"""[[models]]
id = "{MODEL_ID}"
family = "sdxl"
source = "{folder}"
description = "Random-weight SDXL architecture (bench/bench_sdxl.py)"
default_steps = {args.steps}
default_guidance = {GUIDANCE}
default_scheduler = "K_EULER"
default_width = {args.size}
default_height = {args.size}
min_side = 64
max_side = {max(args.size, 1024)}
min_steps = 1
"""
    )


def wait_all(api: Any, ids: list[str], size: int, timeout: float) -> None:
    """Until every job succeeded, at the size asked (the model's bounds did not resize it)."""
    deadline = time.monotonic() + timeout
    for generation_id in ids:
        while True:
            data = api.get(
                f"/api/v1/generations/{generation_id}", headers={"Prefer": "wait=50"}
            ).json()["data"]
            if data["status"] in ("success", "failed", "cancelled"):
                assert data["status"] == "success", data
                assert data["outputImage"]["width"] == size, data
                break
            assert time.monotonic() < deadline, f"job {generation_id} still {data['status']}"


def submit(api: Any, count: int, model: str, size: int, steps: int, first_seed: int) -> list[str]:
    body: dict[str, Any] = {"prompt": PROMPT, "autoEnhance": False, "model": model}
    body.update(width=size, height=size, steps=steps)
    ids = []
    for index in range(count):
        response = api.post("/api/v1/generations", json={**body, "seed": first_seed + index})
        assert response.status_code < 300, response.text
        ids.append(response.json()["data"]["id"])
    return ids


def speed_env(args: argparse.Namespace, batch: int) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "device": args.device,
        "dtype": args.dtype,
        "attention": args.attention,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "compile_mode": args.compile_mode,
        "job_timeout_seconds": 3600,  # a first job that loads, and compiles, a big model
    }
    if args.compile == "on":
        settings["compile_warmup"] = f"{batch}x{args.size}x{args.size}"
    return settings


def server_memory(srv: Server) -> dict[str, Any]:
    child = srv.model_child()
    gpu = gpu_mib_by_pid()
    peaks = [float(v) for v in re.findall(r"cuda_peak_mb=([0-9.]+)", srv.log())]
    return {
        "worker": memory_mib(srv.pid),
        "child": memory_mib(child),
        "child_cuda_peak_mib": max(peaks) if peaks else None,
        "child_nvidia_smi_mib": gpu.get(child),
    }


def run_server(args: argparse.Namespace, work: Path, models: Path, batch: int) -> dict[str, Any]:
    models_file = work / "models.toml"
    srv = Server(
        work / f"srv-b{batch}",
        models,
        worker_batch_size=batch,
        default_model=MODEL_ID,
        models_file=models_file,
        lease_seconds=60,
        **speed_env(args, batch),
    )
    srv.start()
    try:
        key = create_key(srv.env, "bench", "sdxl")
        count = math.ceil(args.jobs / batch) * batch
        with srv.client(key) as api:
            started = time.perf_counter()
            wait_all(api, submit(api, batch, MODEL_ID, args.size, args.steps, 1), args.size, 3600)
            warm_s = time.perf_counter() - started
            started = time.perf_counter()
            # The API's (and supervisor's) CPU a picture: with the model on a GPU, what one
            # serving process's single core can keep up with is 1000 / this many pictures/s.
            child = srv.model_child()
            api_cpu, child_cpu = cpu_seconds(srv.pid), cpu_seconds(child)
            wait_all(api, submit(api, count, MODEL_ID, args.size, args.steps, 100), args.size, 3600)
            elapsed = time.perf_counter() - started
            api_cpu = cpu_seconds(srv.pid) - api_cpu
            try:
                child_cpu = cpu_seconds(child) - child_cpu
            except OSError:  # the child was restarted meanwhile (its log says why)
                child_cpu = math.nan
        log = srv.log()
        loaded = [
            line.split("child ", 1)[-1] for line in log.splitlines() if "model.loaded" in line
        ]
        return {
            "batch": batch,
            "images": count,
            "seconds": elapsed,
            "warmup_s": warm_s,
            "api_cpu_ms": api_cpu * 1000 / count,
            "child_cpu_ms": child_cpu * 1000 / count,
            "parts": breakdown(log),
            "loaded": loaded[-1] if loaded else "",
            "memory": server_memory(srv),
        }
    finally:
        srv.stop()


def run_demo(args: argparse.Namespace, work: Path, models: Path) -> dict[str, Any]:
    """What a worker and its child hold with the shipped demo model loaded (one job run)."""
    settings = {**speed_env(args, 1), "compile": "off"}  # memory here, not speed
    srv = Server(work / "srv-demo", models, default_model="demo", **settings)
    srv.start()
    try:
        key = create_key(srv.env, "bench", "demo")
        with srv.client(key) as api:
            wait_all(api, submit(api, 1, "demo", 64, 20, 1), 64, 600)
        return server_memory(srv)
    finally:
        srv.stop()


# Report ------------------------------------------------------------------------------------


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def report(args: argparse.Namespace, raw: dict[str, Any], served: list[dict[str, Any]]) -> str:
    params = raw["params"]
    lines = [
        f"bench_sdxl: scale={args.scale} size={args.size} steps={args.steps} "
        f"guidance={GUIDANCE} jobs={args.jobs} device={raw['device']} "
        f"({raw.get('gpu', f'{os.cpu_count()} CPU cores')}) dtype={raw['dtype']} "
        f"attention={args.attention} channels_last={args.channels_last} compile={args.compile}"
        + (f" ({args.compile_mode})" if args.compile == "on" else ""),
        "pipeline: "
        + ", ".join(f"{name} {count / 1e6:,.2f} M" for name, count in params.items())
        + f" params; {raw['disk_gb']:.2f} GB on disk; built {raw['build_s']:.1f} s, "
        f"saved {raw['save_s']:.1f} s, loaded {raw['load_s']:.1f} s",
    ]
    if not raw["device"].startswith("cuda"):
        lines.append("NOTE: no CUDA device here; these are CPU numbers, not GPU ones.")
    lines += [
        "",
        "| part | batch | images | seconds | img/s | server/raw | warm-up s | CUDA peak MiB "
        "| API CPU ms/img | child CPU ms/img |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    raw_rate = {}
    for run in raw["runs"]:
        rate = run["images"] / run["seconds"]
        raw_rate[run["batch"]] = rate
        lines.append(
            f"| raw diffusers | {run['batch']} | {run['images']} | {run['seconds']:.2f} | "
            f"{rate:.3f} | | {run['warmup_s']:.1f} | {mib(run['cuda_peak_mib'])} | | |"
        )
    for run in served:
        rate = run["images"] / run["seconds"]
        lines.append(
            f"| server | {run['batch']} | {run['images']} | {run['seconds']:.2f} | {rate:.3f} | "
            f"{rate / raw_rate[run['batch']]:.2f} | {run['warmup_s']:.1f} | "
            f"{mib(run['memory']['child_cuda_peak_mib'])} | {run['api_cpu_ms']:.1f} | "
            f"{run['child_cpu_ms']:.1f} |"
        )
    best = max(served, key=lambda run: run["images"] / run["seconds"])
    lines += [
        "",
        f"best server batch: {best['batch']} "
        f"({best['images'] / best['seconds']:.3f} img/s; raw best "
        f"{max(raw_rate.values()):.3f} img/s at batch {max(raw_rate, key=lambda b: raw_rate[b])}); "
        f"the API's CPU there ({best['api_cpu_ms']:.1f} ms a picture) would keep up with "
        f"~{1000 / max(best['api_cpu_ms'], 1e-3):.0f} img/s",
        "",
        "server per batch, ms (medians of batch.done / batch.stored after the warm-up):",
    ]
    for run in served:
        parts = run["parts"]
        lines.append(
            f"  b={run['batch']}: "
            + " ".join(f"{name}={parts[name]:.0f}" for name in PARTS if name in parts)
        )
    lines += ["", "memory, MiB (RSS now / peak; CUDA: torch peak allocated, nvidia-smi):"]
    rss = raw["rss"]
    lines.append(
        f"  raw process: RSS {mib(rss.get('VmRSS'))} / {mib(rss.get('VmHWM'))}, "
        f"after load {mib(raw['loaded_rss'].get('VmRSS'))}"
    )
    for label, memory in [(f"server b={run['batch']}", run["memory"]) for run in served] + (
        [("demo model", args.demo_memory)] if args.demo_memory else []
    ):
        worker, child = memory["worker"], memory["child"]
        lines.append(
            f"  {label}: worker (API + supervisor) RSS {mib(worker.get('VmRSS'))} / "
            f"{mib(worker.get('VmHWM'))}; model child RSS {mib(child.get('VmRSS'))} / "
            f"{mib(child.get('VmHWM'))}, CUDA {mib(memory['child_cuda_peak_mib'])} / "
            f"{mib(memory['child_nvidia_smi_mib'])}"
        )
    if served and served[0]["loaded"]:
        lines += ["", "child: " + served[0]["loaded"]]
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("full", "small"), default="full")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batches", default="1,4", help="comma-separated, e.g. 1,2,4,8")
    parser.add_argument("--jobs", type=int, default=8, help="timed images per batch size")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto"
    )
    parser.add_argument("--attention", choices=("auto", "sdpa", "default"), default="auto")
    parser.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--compile", choices=("off", "on"), default="off")
    parser.add_argument("--compile-mode", default="default")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo-model memory run")
    parser.add_argument("--quick", action="store_true", help="--batches 1,4 --jobs 4")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new temp dir)")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    parser.add_argument("--phase", choices=("all", "raw"), default="all", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.jobs = "1,4", 4
    args.batch_list = [int(b) for b in args.batches.split(",") if b.strip()]
    return args


def main() -> None:
    args = parse()
    if args.phase == "raw":
        print(json.dumps(raw_phase(args)), flush=True)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="imagesmith-sdxl-"))
    models = work / "models"
    folder = models / MODEL_ID
    models.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    raw = run_raw(args, folder)
    # Each phase's figures as soon as they exist: a run cut off by a time limit keeps them.
    print(f"raw: {json.dumps(raw)}", file=sys.stderr, flush=True)
    write_models_file(work / "models.toml", folder, args)
    served = []
    for batch in args.batch_list:
        served.append(run_server(args, work, models, batch))
        rate = served[-1]["images"] / served[-1]["seconds"]
        print(f"server b={batch}: {rate:.3f} img/s {json.dumps(served[-1])}", file=sys.stderr)
    args.demo_memory = None if args.no_demo else run_demo(args, work, models)
    text = report(args, raw, served) + f"\n\ntotal wall {time.perf_counter() - started:.0f} s"
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
