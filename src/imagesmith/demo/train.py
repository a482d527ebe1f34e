"""Train the demo model from random initialisation on the synthetic shapes data set and save a
standard diffusers Stable Diffusion folder (64x64 output, 16x16 latents).

Steps: tokenizer (byte-level BPE with whole-word tokens for the data set's words) → VAE alone
(reconstruction) → text encoder + UNet together (v-prediction, 10 % empty captions for
classifier-free guidance, EMA of the UNet) → save in fp16 with a DDIM (trailing) scheduler.
Runs on the CPU; the time budget is wall-clock minutes."""

from __future__ import annotations

import copy
import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imagesmith.demo.shapes import PALETTE, POSITIONS, SHAPES, SIZES, draw, random_scene
from imagesmith.engines.tiny import byte_tokenizer, small_text_encoder, write_tokenizer

WORDS = sorted(
    {"a", "two", "on", "background", "in", "the", "center", "top", "bottom", "left", "right"}
    | set(PALETTE)
    | set(SHAPES)
    | {f"{s}s" for s in SHAPES}
    | set(SIZES)
)


@dataclass
class TrainConfig:
    side: int = 64
    minutes: float = 50.0
    vae_share: float = 0.12  # of the time budget spent on the VAE alone
    batch: int = 64
    lr: float = 3e-4
    seed: int = 0
    empty_caption: float = 0.1
    ema: float = 0.999


def _tensor_batch(rng: random.Random, count: int, side: int) -> tuple[Any, list[str]]:
    import torch

    scenes = [random_scene(rng) for _ in range(count)]
    arrays = np.stack([np.asarray(draw(s, side), dtype=np.float32) / 127.5 - 1 for s in scenes])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2), [s.caption for s in scenes]


def train_demo(out: Path, config: TrainConfig, log: Callable[[str], None] = print) -> Path:
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    work = Path(tempfile.mkdtemp(prefix="demo-train-"))
    write_tokenizer(work / "tok", words=WORDS)
    tokenizer = byte_tokenizer(work / "tok", max_length=24)
    vae: Any = AutoencoderKL(
        block_out_channels=(32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=config.side,
    )
    text_encoder: Any = small_text_encoder(tokenizer, width=64, intermediate=128, max_length=24)
    unet: Any = UNet2DConditionModel(
        sample_size=config.side // 4,
        block_out_channels=(64, 128, 128),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    budget = config.minutes * 60
    start = time.monotonic()

    # 1. The VAE alone: reconstruct the drawings.
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    step = 0
    while time.monotonic() - start < budget * config.vae_share:
        images, _ = _tensor_batch(rng, config.batch, config.side)
        posterior = vae.encode(images).latent_dist
        recon = vae.decode(posterior.sample()).sample
        loss = torch.nn.functional.mse_loss(recon, images) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step % 20 == 0:
            log(f"vae step {step} loss {loss.item():.4f} ({time.monotonic() - start:.0f} s)")
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        images, _ = _tensor_batch(rng, 256, config.side)
        latents = vae.encode(images).latent_dist.sample()
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))

    # 2. Text encoder + UNet: v-prediction denoising conditioned on the caption.
    noise_schedule: Any = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction"
    )
    ema = copy.deepcopy(unet).requires_grad_(False)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-2)
    step = 0
    while time.monotonic() - start < budget:
        images, captions = _tensor_batch(rng, config.batch, config.side)
        captions = ["" if rng.random() < config.empty_caption else c for c in captions]
        ids = tokenizer(
            captions,
            padding="max_length",
            truncation=True,
            max_length=tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids
        with torch.no_grad():
            latents = vae.encode(images).latent_dist.sample() * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (latents.shape[0],))
        noisy = noise_schedule.add_noise(latents, noise, t)
        target = noise_schedule.get_velocity(latents, noise, t)
        prediction = unet(noisy, t, encoder_hidden_states=text_encoder(ids)[0]).sample
        loss = torch.nn.functional.mse_loss(prediction, target)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        with torch.no_grad():
            for slow, fast in zip(ema.parameters(), unet.parameters(), strict=True):
                slow.mul_(config.ema).add_(fast, alpha=1 - config.ema)
        step += 1
        if step % 20 == 0:
            log(f"unet step {step} loss {loss.item():.4f} ({time.monotonic() - start:.0f} s)")

    # 3. Save a standard folder, fp16.
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        clip_sample=False,
        set_alpha_to_one=False,
    )
    pipe: Any = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=ema.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    target_dir = work / "pipeline"
    pipe.to(torch.float16).save_pretrained(str(target_dir), safe_serialization=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(work / "tok" / name, target_dir / "tokenizer" / name)
    (target_dir / "train-config.json").write_text(
        json.dumps({**asdict(config), "unet_steps": step, "positions": list(POSITIONS)}, indent=2)
    )
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(target_dir), out)
    shutil.rmtree(work, ignore_errors=True)
    log(f"saved {out}")
    return out
