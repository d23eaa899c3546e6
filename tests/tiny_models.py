"""Tiny randomly initialised SAM / MobileSAM models for tests that need no golden numbers.

Real architectures at toy sizes (128 px input, 32 channels), seeded, so the predictor, the
generator, export and the server can be tested without the shared folder:

    from tiny_models import tiny_random_model
    model = tiny_random_model("sam")  # or "mobilesam"
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from segany.models.config import SamConfig, TinyViTConfig, ViTConfig
from segany.models.sam import Sam
from segany.registry import config_to_dict

TINY_IMAGE_SIZE = 128
TINY_DIM = 32

_DECODER = {
    "prompt_embed_dim": TINY_DIM, "mask_in_chans": 8, "decoder_depth": 2, "decoder_mlp_dim": 64,
    "decoder_num_heads": 2, "iou_head_hidden_dim": TINY_DIM,
}


def tiny_sam_config(image_size: int = TINY_IMAGE_SIZE, patch_size: int = 8) -> SamConfig:
    """A SAM with a 2-block ViT (dim 32, 2 heads, block 1 global, windows of 6 that need padding)."""
    encoder = ViTConfig(TINY_DIM, 2, 2, (1,), window_size=6, img_size=image_size, patch_size=patch_size, out_chans=TINY_DIM)
    return SamConfig(name="tiny_random_sam", encoder=encoder, **_DECODER)


def tiny_mobilesam_config(image_size: int = TINY_IMAGE_SIZE) -> SamConfig:
    """A MobileSAM with a one-block-per-stage TinyViT (the last width, 320, keeps stride 1 as MobileSAM's)."""
    encoder = TinyViTConfig(
        embed_dims=(16, 24, 32, 320), depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 10), window_sizes=(7, 4, 3, 4),
        img_size=image_size, num_classes=0, out_chans=TINY_DIM,
    )
    return SamConfig(name="tiny_random_mobilesam", encoder=encoder, **_DECODER)


def _randomize(model: Sam, generator: torch.Generator) -> None:
    """Give zero / constant initialised tensors (biases, norms, position tables) random values too,
    so every weight matters, and sharpen the mask logits as a trained SAM's are."""
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and "running_var" not in name:
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator))
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(100.0)
            mlp.layers[-1].bias.mul_(100.0)


def tiny_random_model(kind: str = "sam", seed: int = 0, config: SamConfig | None = None) -> Sam:
    """A seeded tiny model in eval mode: ``kind`` "sam" (ViT) or "mobilesam" (TinyViT), or ``config``."""
    if config is None:
        config = {"sam": tiny_sam_config, "mobilesam": tiny_mobilesam_config}[kind]()
    torch.manual_seed(seed)
    model = Sam(config)
    _randomize(model, torch.Generator().manual_seed(seed + 1))
    return model.eval()


def save_tiny_model(folder: Path, model: Sam | None = None) -> tuple[Path, Path]:
    """Write ``model`` (default: ``tiny_random_model("sam")``) to ``folder`` as ``config.json`` +
    ``model.pth`` (official state-dict format): the files the CLI's ``--model`` / ``--checkpoint``
    and ``load_model`` take."""
    model = tiny_random_model("sam") if model is None else model
    folder.mkdir(parents=True, exist_ok=True)
    config, checkpoint = folder / "config.json", folder / "model.pth"
    config.write_text(json.dumps(config_to_dict(model.config), indent=1))
    torch.save(model.state_dict(), checkpoint)
    return config, checkpoint


def model_args(files: tuple[Path, Path]) -> list[str]:
    """``--model CONFIG --checkpoint WEIGHTS`` for files written by :func:`save_tiny_model`."""
    config, checkpoint = files
    return ["--model", str(config), "--checkpoint", str(checkpoint)]


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An HxWx3 uint8 RGB image with structure (a few coloured discs and boxes on a gradient)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.stack([xs * 200 / max(1, width), ys * 200 / max(1, height), np.full((height, width), 60.0)], axis=-1)
    for _ in range(4):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0.1, 0.35) * min(height, width)
        image[(ys - cy) ** 2 + (xs - cx) ** 2 < r**2] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)
