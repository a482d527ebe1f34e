"""Build `tiny-sd`: a random-weight Stable Diffusion pipeline made locally, with no network.

It is saved with `save_pretrained` and loaded through the same `from_pretrained` path as any
real model. It draws noise: it exists to test the plumbing offline."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

from imagesmith.engines.base import ModelUnavailable

BUILD_INFO = "imagesmith-build.json"
# Words that get whole-word tokens; any other text still tokenizes, byte by byte.
COMMON_WORDS = [
    "a",
    "an",
    "the",
    "of",
    "on",
    "in",
    "with",
    "and",
    "red",
    "blue",
    "green",
    "yellow",
    "white",
    "black",
    "cat",
    "dog",
    "car",
    "photo",
    "photograph",
    "photorealistic",
    "circle",
    "square",
    "triangle",
    "background",
    "light",
    "lighting",
    "detailed",
]


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte → printable-character map."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def write_tokenizer(folder: Path, words: Sequence[str] = COMMON_WORDS) -> int:
    """A CLIP-style byte-level BPE vocabulary (whole-word tokens for `words`); returns its size."""
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in symbols:
        vocab.setdefault(symbol, len(vocab))
    for symbol in symbols:
        vocab.setdefault(symbol + "</w>", len(vocab))
    merges: list[str] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        # BPE merges a word's lowest-ranked pair first, over the whole list: a merge written for
        # an earlier word ("m a") can split a later one ("s ma l l" for "small"). So each word is
        # tokenized with the merges so far, and what is left is joined by merges ranked after all
        # of them, which no earlier word reaches (each of those ends as one token first).
        while len(parts := _bpe([*word[:-1], word[-1] + "</w>"], ranks)) > 1:
            pair = (parts[0], parts[1])
            ranks[pair] = len(merges)
            merges.append(f"{pair[0]} {pair[1]}")
            vocab.setdefault(pair[0] + pair[1], len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return len(vocab)


def _bpe(parts: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """`parts` merged the way a BPE tokenizer does: the lowest-ranked adjacent pair first."""
    while len(parts) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(pairwise(parts))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        parts = [*parts[:i], parts[i] + parts[i + 1], *parts[i + 2 :]]
    return parts


def byte_tokenizer(folder: Path, max_length: int) -> Any:
    """Load a tokenizer written by `write_tokenizer` with CLIP's special tokens."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(
        str(folder),
        model_max_length=max_length,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def small_text_encoder(tokenizer: Any, width: int, intermediate: int, max_length: int) -> Any:
    """A two-layer CLIP text encoder sized for `tokenizer` (random weights)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=intermediate,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=max_length,
            projection_dim=width,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def library_versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }


def build_tiny_sd(out: Path, seed: int = 0) -> Path:
    """Write the pipeline to `out` (replaced atomically)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        UNet2DConditionModel,
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=out.parent))
    try:
        tok_dir = work / "tokenizer-src"
        write_tokenizer(tok_dir)
        tokenizer = byte_tokenizer(tok_dir, max_length=77)
        torch.manual_seed(seed)
        text_encoder = small_text_encoder(tokenizer, width=32, intermediate=37, max_length=77)
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=4,
            norm_num_groups=8,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(8, 16, 32, 32),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=64,
        )
        scheduler = EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            timestep_spacing="leading",
        )
        target = work / "pipeline"
        save_pipeline(target, tok_dir, vae, text_encoder, tokenizer, unet, scheduler)
        (target / BUILD_INFO).write_text(json.dumps({"seed": seed, **library_versions()}, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(target, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def save_pipeline(
    target: Path,
    tok_dir: Path,
    vae: Any,
    text_encoder: Any,
    tokenizer: Any,
    unet: Any,
    scheduler: Any,
    dtype: Any = None,
) -> None:
    """Save a standard Stable Diffusion folder (safetensors; cast to `dtype` when given) with the
    tokenizer written by `write_tokenizer` in `tok_dir`."""
    from diffusers import StableDiffusionPipeline

    pipe: Any = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    if dtype is not None:
        pipe.to(dtype)
    pipe.save_pretrained(str(target), safe_serialization=True)
    # transformers 5 saves only tokenizer.json; keep the slow-tokenizer files beside it.
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tok_dir / name, target / "tokenizer" / name)


def is_current(folder: Path) -> bool:
    try:
        recorded = json.loads((folder / BUILD_INFO).read_text())
    except (OSError, ValueError):
        return False
    wanted = library_versions()
    return {name: recorded.get(name) for name in wanted} == wanted


def ensure_tiny_sd(folder: Path) -> Path:
    """Build on first use, and again when the installed libraries changed (a folder saved by
    one transformers major can load under another with silently re-randomised weights).

    Several workers may share one models folder: a file lock lets exactly one of them build."""
    if is_current(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not is_current(folder):
                build_tiny_sd(folder)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return folder


# The demo model trained on shapes (`imagesmith models train-demo`), shipped in the package.
DEMO_FOLDER = Path(__file__).resolve().parent.parent / "demo" / "weights"


def builtin_folder(name: str, models_dir: Path) -> Path:
    """The local folder of a built-in model: shipped in the package, or built on first use."""
    if name == "demo":
        return DEMO_FOLDER
    if name == "tiny-sd":
        return ensure_tiny_sd(models_dir / name)
    raise ModelUnavailable(f"No built-in model is called '{name}' (built-ins: demo, tiny-sd)")
