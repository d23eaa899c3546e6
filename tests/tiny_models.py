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


def _target(name: str, **fields) -> dict:
    return {"_target_": name, **fields}


def tiny_sam2_document() -> dict:
    """An official SAM 2.1 Hydra YAML document (the layout of ``configs/sam2.1/sam2.1_hiera_t.yaml``)
    at toy sizes: 128 px input, a 4-stage Hiera of width 8, a 32-channel decoder."""
    rope = "sam2.modeling.sam.transformer.RoPEAttention"
    sine = "sam2.modeling.position_encoding.PositionEmbeddingSine"
    grid = [TINY_IMAGE_SIZE // 16] * 2
    attention = {"rope_theta": 10000.0, "feat_sizes": grid, "embedding_dim": TINY_DIM, "num_heads": 1,
                 "downsample_rate": 1, "dropout": 0.1}
    model = _target(
        "sam2.modeling.sam2_base.SAM2Base",
        image_encoder=_target(
            "sam2.modeling.backbones.image_encoder.ImageEncoder", scalp=1,
            trunk=_target("sam2.modeling.backbones.hieradet.Hiera", embed_dim=8, num_heads=1, stages=[1, 1, 2, 1],
                          global_att_blocks=[3], window_pos_embed_bkg_spatial_size=[3, 3], window_spec=[4, 2, 4, 2]),
            neck=_target("sam2.modeling.backbones.image_encoder.FpnNeck", d_model=TINY_DIM,
                         backbone_channel_list=[64, 32, 16, 8], fpn_top_down_levels=[2, 3], fpn_interp_model="nearest",
                         position_encoding=_target(sine, num_pos_feats=TINY_DIM, normalize=True, scale=None,
                                                   temperature=10000))),
        memory_attention=_target(
            "sam2.modeling.memory_attention.MemoryAttention", d_model=TINY_DIM, pos_enc_at_input=True, num_layers=1,
            layer=_target("sam2.modeling.memory_attention.MemoryAttentionLayer", activation="relu", dim_feedforward=64,
                          dropout=0.1, pos_enc_at_attn=False, d_model=TINY_DIM, pos_enc_at_cross_attn_keys=True,
                          pos_enc_at_cross_attn_queries=False, self_attention=_target(rope, **attention),
                          cross_attention=_target(rope, **attention, rope_k_repeat=True, kv_in_dim=16))),
        memory_encoder=_target(
            "sam2.modeling.memory_encoder.MemoryEncoder", out_dim=16, in_dim=TINY_DIM,
            position_encoding=_target(sine, num_pos_feats=16, normalize=True, scale=None, temperature=10000),
            mask_downsampler=_target("sam2.modeling.memory_encoder.MaskDownSampler", kernel_size=3, stride=2, padding=1),
            fuser=_target("sam2.modeling.memory_encoder.Fuser", num_layers=1,
                          layer=_target("sam2.modeling.memory_encoder.CXBlock", dim=TINY_DIM, kernel_size=7, padding=3,
                                        layer_scale_init_value=1e-6, use_dwconv=True))),
        num_maskmem=7, image_size=TINY_IMAGE_SIZE, sigmoid_scale_for_mem_enc=20.0, sigmoid_bias_for_mem_enc=-10.0,
        use_mask_input_as_output_without_sam=True, directly_add_no_mem_embed=True, no_obj_embed_spatial=True,
        use_high_res_features_in_sam=True, multimask_output_in_sam=True, iou_prediction_use_sigmoid=True,
        use_obj_ptrs_in_encoder=True, add_tpos_enc_to_obj_ptrs=True, proj_tpos_enc_in_obj_ptrs=True,
        use_signed_tpos_enc_to_obj_ptrs=True, only_obj_ptrs_in_the_past_for_eval=True, pred_obj_scores=True,
        pred_obj_scores_mlp=True, fixed_no_obj_ptr=True, multimask_output_for_tracking=True,
        use_multimask_token_for_obj_ptr=True, multimask_min_pt_num=0, multimask_max_pt_num=1,
        use_mlp_for_obj_ptr_proj=True, compile_image_encoder=False,
    )
    return {"model": model}


def save_tiny_sam2(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A seeded random SAM 2.1 of :func:`tiny_sam2_document` written to ``folder`` as the official
    YAML (``tiny_random_sam2.yaml``) and checkpoint format (``{"model": state_dict}``): what
    ``--model`` / ``--checkpoint`` and ``segany.load_model`` take."""
    import yaml

    from segany.models.sam2 import build_sam2
    from segany.registry import sam2_config_from_yaml

    folder.mkdir(parents=True, exist_ok=True)
    config, checkpoint = folder / "tiny_random_sam2.yaml", folder / "tiny_random_sam2.pt"
    config.write_text("# @package _global_\n" + yaml.safe_dump(tiny_sam2_document(), sort_keys=False))
    torch.manual_seed(seed)
    model = build_sam2(sam2_config_from_yaml(config))
    torch.save({"model": model.state_dict()}, checkpoint)
    return config, checkpoint
