"""Train the demo model from random initialisation on the synthetic shapes data set and save a
standard diffusers Stable Diffusion folder (64x64 output, 16x16x4 latents).

Steps: tokenizer (byte-level BPE with whole-word tokens for the data set's and the prompt
templates' words) → VAE alone (reconstruction) → every training picture encoded once → text
encoder + UNet together (v-prediction, 10 % empty captions for classifier-free guidance, EMA
of the UNet, a quarter of the pictures at the noisiest timesteps, and the text encoder naming
every attribute as a side task) → save in fp16 with a DDIM (trailing) scheduler.

What makes shapes and positions learnable in a CPU hour (the notes' first design stayed at
chance; bench/demo-model.md has the figures): the side task keeps the position words apart in
the text encoder, and the noisiest timesteps are where only the caption says where the shape
goes; the pooled caption also steers every ResNet block through the time embedding
(`addition_embed_type="text"`), not only the cross-attention at the low resolutions; the data set
is finite, so each picture is drawn and encoded once and all the time goes to the UNet; the
learning rate decays over the time budget. Whole (shape, colour, background) combinations are held
out of training (and of the VAE) so the score measures generalisation. Runs on the CPU; the budget
is wall-clock minutes."""

from __future__ import annotations

import copy
import json
import math
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imagesmith.demo.shapes import (
    CANVASES,
    PALETTE,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    all_scenes,
    caption_variants,
    draw,
    held_out_triples,
)
from imagesmith.engines.tiny import (
    byte_tokenizer,
    save_pipeline,
    small_text_encoder,
    write_tokenizer,
)
from imagesmith.generation.enhance import TEMPLATES, builtin_enhance


def vocabulary() -> list[str]:
    """Whole-word tokens: the data set's words and every word the built-in templates add."""
    words = {
        "a",
        "an",
        "corner",
        "two",
        "on",
        "background",
        "in",
        "the",
        "center",
        "top",
        "bottom",
        "left",
        "right",
    }
    words |= set(PALETTE) | set(SHAPES) | {f"{s}s" for s in SHAPES} | set(SIZES)
    for template in TEMPLATES:
        text = builtin_enhance("a red circle on a blue background", template).lower()
        words |= {w for w in text.replace(",", " ").replace("/", " ").split() if w.isalpha()}
    return sorted(words)


@dataclass
class TrainConfig:
    side: int = 64
    minutes: float = 58.0
    vae_share: float = 0.16  # of the time budget spent on the VAE alone
    vae_batch: int = 16
    vae_lr: float = 1e-3
    batch: int = 64
    lr: float = 5e-4
    warmup_steps: int = 100
    seed: int = 0
    empty_caption: float = 0.1  # captions dropped for classifier-free guidance
    enhanced_caption: float = 0.25  # captions rewritten by a built-in template (ignored words)
    ema: float = 0.998
    min_snr: float = 5.0
    # Share of the steps' pictures noised at t >= `layout_from`, where the noisy latent tells
    # almost nothing of where the shape is and only the caption can: uniform timesteps put 2 %
    # there, and a model trained so reads the place from the noise (position at chance).
    layout_share: float = 0.25
    layout_from: int = 920
    # Weight of the text encoder's side task: name every attribute of the scene from the
    # caption (linear heads on the pooled output, not saved). Trained only through the UNet, the
    # encoder let the position words collapse together (0.2 apart against 1.1 for colours), and
    # a UNet cannot place what it is not told.
    attribute_weight: float = 0.1
    latent_channels: int = 4
    # Share of the VAE's steps on each canvas (None: `canvas_weights`). The VAE is convolutional
    # and what it learns on 64x64 carries to the other canvases; steps on one canvas learnt
    # faster (held-out drawings back as the right shape: 86 % against 64 % after 5 minutes).
    vae_canvas_weights: tuple[float, ...] | None = (1.0, 0.0, 0.0, 0.0, 0.0)
    # A shape pixel (and its edge) weighs this many background pixels in the VAE's loss.
    vae_shape_weight: float = 3.0
    held_out: int = 12  # (shape, colour, background) combinations never trained on
    max_length: int = 48
    # Share of the steps on each canvas of `CANVASES` (1:1, 16:9, 9:16, 3:2, 21:9); a step on a
    # larger canvas takes fewer pictures, so every step costs about the same.
    canvas_weights: tuple[float, ...] = (0.6, 0.15, 0.15, 0.05, 0.05)
    plain_article: float = 0.15  # captions that say "a" where a person writes "an"
    vae_from: str | None = None  # reuse this folder's VAE (for quick experiments only)
    limit_scenes: int | None = None  # train on the first N training scenes only (tests)


ATTRIBUTES: dict[str, tuple[Any, ...]] = {
    "shape": SHAPES,
    "color": tuple(PALETTE),
    "background": tuple(PALETTE),
    "size": tuple(SIZES),
    "position": tuple(POSITIONS),
    "count": (1, 2),
}


def attribute_targets(scenes: list[Scene]) -> dict[str, Any]:
    """Each scene's attributes as class indices, for the text encoder's side task."""
    import torch

    return {
        name: torch.tensor([values.index(getattr(scene, name)) for scene in scenes])
        for name, values in ATTRIBUTES.items()
    }


def loss_weights(snr: Any, gamma: float) -> Any:
    """Per-timestep weights of the v-prediction loss: in x0 terms min(SNR + 1, gamma), so the
    noisiest steps, where the layout (where the shape goes) is decided, weigh as much as any. The
    usual min-SNR form, min(SNR, gamma) / (SNR + 1), gives them almost nothing: the first model
    trained with it never learnt position (23 % against 20 % by chance)."""
    import torch

    return torch.clamp(snr + 1, max=gamma) / (snr + 1)


def canvas_batch(base: int, canvas: tuple[int, int]) -> int:
    """Pictures a step on `canvas` takes: `base` 64x64 pictures' worth of pixels."""
    width, height = canvas
    return max(1, round(base * 64 * 64 / (width * height)))


def training_scenes(config: TrainConfig) -> tuple[list[Scene], list[Scene]]:
    """(train, held out): every scene whose (shape, colour, background) is held out goes aside."""
    held = set(held_out_triples(config.held_out, config.seed))
    train: list[Scene] = []
    test: list[Scene] = []
    for scene in all_scenes():
        (test if (scene.shape, scene.color, scene.background) in held else train).append(scene)
    return train, test


def drawn_pixels(scenes: list[Scene], canvas: tuple[int, int]) -> Any:
    """The scenes drawn on `canvas`, as a (N, 3, H, W) float tensor in [-1, 1]."""
    import torch

    width, height = canvas
    arrays = np.stack(
        [np.asarray(draw(s, width, height), dtype=np.float32) / 127.5 - 1 for s in scenes]
    )
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()


def _caption(scene: Scene, rng: random.Random, config: TrainConfig) -> str:
    if rng.random() < config.empty_caption:
        return ""
    caption = rng.choice(caption_variants(scene))
    if rng.random() < config.plain_article:
        caption = re.sub(r"\ban\b", "a", caption)
    if rng.random() < config.enhanced_caption:
        caption = builtin_enhance(caption, rng.choice(TEMPLATES))
    return caption


def build_models(config: TrainConfig, tokenizer: Any) -> tuple[Any, Any, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    vae = AutoencoderKL(
        block_out_channels=(16, 32, 64),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=config.latent_channels,
        norm_num_groups=2,
        sample_size=config.side,
        mid_block_add_attention=False,
    )
    text_encoder = small_text_encoder(
        tokenizer, width=64, intermediate=128, max_length=config.max_length
    )
    unet = UNet2DConditionModel(
        sample_size=config.side // 4,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=16,
        addition_embed_type="text",
        addition_embed_type_num_heads=4,
        # Where things are: convolutions and attention are the same at every place, so the only
        # clue to "top left" is the zero padding, and on zero-mean noise even that is none. The
        # input shifted to a mean of -1 (2x - 1) and a first convolution that reaches the border
        # from every latent pixel (17x17 on 16x16) give every place its own learnt signature:
        # a position embedding built from standard UNet2DConditionModel settings.
        center_input_sample=True,
        conv_in_kernel=17,
    )
    return vae, text_encoder, unet


def deterministic_encoder(vae: Any) -> None:
    """The VAE was trained (and the UNet's latents made) from the posterior mean; pipelines that
    sample the posterior (img2img) must get that mean too, so the variance head outputs the
    smallest log-variance diffusers allows (std ~ 3e-7)."""
    import torch

    # The posterior's moments come out of `quant_conv` (1x1) when the model has one.
    conv = vae.quant_conv if vae.quant_conv is not None else vae.encoder.conv_out
    channels = conv.out_channels // 2
    with torch.no_grad():
        conv.weight[channels:].zero_()
        conv.bias[channels:].fill_(-30.0)


def shape_masks(images: Any) -> Any:
    """Where each picture's shape is, widened by two pixels so the edge on the background's side
    counts too: (N, 1, H, W) booleans. The background is the colour of the picture's border."""
    import torch

    corner = images[:, :, :1, :1]
    mask = (images - corner).abs().amax(dim=1, keepdim=True) > 0.02
    return torch.nn.functional.max_pool2d(mask.float(), 5, stride=1, padding=2) > 0


def train_vae(
    vae: Any,
    pixels: dict[tuple[int, int], Any],
    masks: dict[tuple[int, int], Any],
    config: TrainConfig,
    rng: random.Random,
    seconds: float,
    start: float,
    log: Callable[[str], None] = print,
) -> int:
    """Train `vae` alone to reconstruct the drawings for `seconds` (counted from `start`);
    returns the steps taken. The loss weighs the shape and its edge `vae_shape_weight` times a
    background pixel: a small shape is a few percent of the pixels, and a plain mean lets the
    decoder round a small square's corners and fill a small triangle in (the second edition's
    VAE gave back the held-out drawings as the right shape 63 % of the time)."""
    import torch

    canvases = list(pixels)
    count_of = len(next(iter(pixels.values())))
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr)
    shares = config.vae_canvas_weights or config.canvas_weights
    step = 0
    while (elapsed := time.monotonic() - start) < seconds or step == 0:
        for group in optimizer.param_groups:
            group["lr"] = config.vae_lr * (
                0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(elapsed / max(seconds, 1e-9), 1.0)))
            )
        canvas = rng.choices(canvases, weights=shares)[0]
        count = canvas_batch(config.vae_batch, canvas)
        index = torch.randint(count_of, (count,))
        images = pixels[canvas][index]
        weight = 1 + (config.vae_shape_weight - 1) * masks[canvas][index].float()
        posterior = vae.encode(images).latent_dist
        recon = vae.decode(posterior.mean).sample
        error = (weight * (recon - images) ** 2).sum() / (weight.sum() * images.shape[1])
        loss = error + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step % 25 == 0:
            mse = torch.nn.functional.mse_loss(recon, images).item()
            psnr = 10 * math.log10(4 / max(mse, 1e-8))
            log(f"vae step {step} psnr {psnr:.1f} dB ({time.monotonic() - start:.0f} s)")
    return step


def train_demo(out: Path, config: TrainConfig, log: Callable[[str], None] = print) -> Path:
    import torch
    from diffusers import DDIMScheduler, DDPMScheduler

    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    work = Path(tempfile.mkdtemp(prefix="demo-train-"))
    write_tokenizer(work / "tok", words=vocabulary())
    tokenizer = byte_tokenizer(work / "tok", max_length=config.max_length)
    vae, text_encoder, unet = build_models(config, tokenizer)
    train, held = training_scenes(config)
    train = train[: config.limit_scenes]
    canvases = list(CANVASES)
    pixels = {canvas: drawn_pixels(train, canvas) for canvas in canvases}
    log(
        f"{len(train)} training scenes on {len(canvases)} canvases, {len(held)} held out "
        f"({config.held_out} shape/colour/background combinations); budget {config.minutes} min"
    )
    budget = config.minutes * 60
    start = time.monotonic()

    def pick_canvas() -> tuple[int, int]:
        return rng.choices(canvases, weights=config.canvas_weights)[0]

    # 1. The VAE alone: reconstruct the drawings. It decodes the posterior mean (sampling with a
    # near-zero KL weight only slows learning down), and so does everything downstream.
    if config.vae_from is not None:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(
            config.vae_from, subfolder="vae", local_files_only=True, torch_dtype=torch.float32
        )
        vae_steps = 0
        log(f"vae reused from {config.vae_from}")
    else:
        masks = {canvas: shape_masks(images) for canvas, images in pixels.items()}
        vae_steps = train_vae(
            vae, pixels, masks, config, rng, budget * config.vae_share, start, log=log
        )
    vae.eval().requires_grad_(False)

    # 2. Every training picture encoded once, on every canvas.
    with torch.no_grad():
        means = {
            canvas: torch.cat(
                [vae.encode(chunk).latent_dist.mean for chunk in torch.split(images, 128)]
            )
            for canvas, images in pixels.items()
        }
        square = canvases[0]
        recon = vae.decode(means[square][:256]).sample
        psnr = 10 * math.log10(4 / torch.nn.functional.mse_loss(recon, pixels[square][:256]).item())
    scaling = float(1.0 / means[square].std())
    vae.register_to_config(scaling_factor=scaling)
    log(f"vae done: {vae_steps} steps, psnr {psnr:.1f} dB, scaling factor {scaling:.3f}")

    # 3. Text encoder + UNet: v-prediction denoising conditioned on the caption.
    noise_schedule: Any = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction"
    )
    alphas = noise_schedule.alphas_cumprod
    weights = loss_weights(alphas / (1 - alphas), config.min_snr)
    ema = copy.deepcopy(unet).requires_grad_(False)
    width = text_encoder.config.hidden_size
    heads = torch.nn.ModuleDict(
        {name: torch.nn.Linear(width, len(values)) for name, values in ATTRIBUTES.items()}
    )
    targets = attribute_targets(train)
    params = [*unet.parameters(), *text_encoder.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-2)
    unet_start = time.monotonic()
    unet_budget = budget - (unet_start - start)
    step = images_seen = 0
    while (elapsed := time.monotonic() - unet_start) < unet_budget or step == 0:
        progress = min(elapsed / unet_budget, 1.0) if unet_budget > 0 else 1.0
        factor = min(1.0, (step + 1) / config.warmup_steps)
        factor *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        for group in optimizer.param_groups:
            group["lr"] = config.lr * factor
        canvas = pick_canvas()
        count = canvas_batch(config.batch, canvas)
        index = torch.randint(len(train), (count,))
        latents = means[canvas][index] * scaling
        captions = [_caption(train[i], rng, config) for i in index.tolist()]
        ids = tokenizer(
            captions,
            padding="max_length",
            truncation=True,
            max_length=config.max_length,
            return_tensors="pt",
        ).input_ids
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (count,))
        layout = torch.rand(count) < config.layout_share
        t[layout] = torch.randint(config.layout_from, 1000, (int(layout.sum()),))
        noisy = noise_schedule.add_noise(latents, noise, t)
        target = noise_schedule.get_velocity(latents, noise, t)
        encoded = text_encoder(ids)
        prediction = unet(noisy, t, encoder_hidden_states=encoded.last_hidden_state).sample
        per_sample = ((prediction - target) ** 2).mean(dim=(1, 2, 3))
        loss = (weights[t] * per_sample).mean()
        said = torch.tensor([caption != "" for caption in captions])
        if config.attribute_weight and said.any():
            pooled = encoded.pooler_output[said]
            side = sum(
                torch.nn.functional.cross_entropy(head(pooled), targets[name][index][said])
                for name, head in heads.items()
            )
            loss = loss + config.attribute_weight * side / len(heads)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        with torch.no_grad():
            for slow, fast in zip(ema.parameters(), unet.parameters(), strict=True):
                slow.mul_(config.ema).add_(fast, alpha=1 - config.ema)
        step += 1
        images_seen += count
        if step % 50 == 0:
            rate = images_seen / (time.monotonic() - unet_start)
            log(
                f"unet step {step} loss {loss.item():.4f} lr {config.lr * factor:.2e} "
                f"{rate:.0f} img/s ({time.monotonic() - start:.0f} s of {budget:.0f})"
            )

    # 4. Save a standard folder, fp16.
    deterministic_encoder(vae)
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,  # unused with trailing spacing; pipelines warn when it is not 1
    )
    target_dir = work / "pipeline"
    save_pipeline(
        target_dir,
        work / "tok",
        vae,
        text_encoder.eval(),
        tokenizer,
        ema.eval(),
        scheduler,
        dtype=torch.float16,
    )
    record = {
        **asdict(config),
        "vae_steps": vae_steps,
        "vae_psnr_db": round(psnr, 2),
        "unet_steps": step,
        "unet_images": images_seen,
        "wall_minutes": round((time.monotonic() - start) / 60, 2),
        "held_out_triples": held_out_triples(config.held_out, config.seed),
        "positions": list(POSITIONS),
        "canvases": [list(canvas) for canvas in CANVASES],
    }
    (target_dir / "train-config.json").write_text(json.dumps(record, indent=2))
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(target_dir), out)
    shutil.rmtree(work, ignore_errors=True)
    log(f"saved {out} after {step} UNet steps ({images_seen} images)")
    return out
