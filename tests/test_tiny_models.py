"""Geometry from the config, the plain (paper) path's autograd, and the whole inference stack on
tiny random models of a non-default geometry: no shared folder needed."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import segany
from segany import MaskGenerator, Predictor
from segany.errors import ConfigError
from segany.models.config import SamConfig, ViTConfig

MODELS_DIR = Path(segany.__file__).parent / "models"


def test_geometry_is_derived_from_the_config(tiny_random_sam, tiny_random_mobilesam) -> None:
    official = SamConfig(name="vit_b", encoder=ViTConfig(768, 12, 12, (2, 5, 8, 11)))
    assert (official.image_size, official.patch_size, official.embedding_size, official.low_res_size) == (1024, 16, 64, 256)
    for model in (tiny_random_sam, tiny_random_mobilesam):
        config = model.config
        assert config.image_size == model.image_size == 128
        assert config.embedding_size == config.image_size // config.patch_size
        assert config.mask_input_size == config.low_res_size == 4 * config.embedding_size
        assert model.prompt_encoder.image_embedding_size == (config.embedding_size,) * 2
        assert model.prompt_encoder.input_image_size == (128, 128)
        with torch.inference_mode():
            embedding = model.image_encoder(torch.zeros(1, 3, 128, 128))
        assert embedding.shape == (1, config.prompt_embed_dim, config.embedding_size, config.embedding_size)


def test_inconsistent_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="out_chans"):
        SamConfig(name="bad", encoder=ViTConfig(32, 2, 2, (1,), out_chans=64), prompt_embed_dim=32)
    with pytest.raises(ConfigError, match="patch size"):
        SamConfig(name="bad", encoder=ViTConfig(32, 2, 2, (1,), img_size=100, patch_size=16, out_chans=32), prompt_embed_dim=32)


def test_models_hold_no_tracing_branches() -> None:
    """The paper modules compute one thing: no torch.jit.is_tracing() special cases."""
    offenders = [p.name for p in MODELS_DIR.glob("*.py") if re.search(r"is_tracing\(", p.read_text())]
    assert offenders == []


def test_plain_path_is_trainable(tiny_random_sam) -> None:
    """loss.backward() through encoder, prompt encoder and decoder: a finite gradient on every parameter."""
    model = tiny_random_sam
    model.zero_grad()
    image = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    embedding = model.image_encoder(image)
    pe = model.prompt_encoder.get_dense_pe()
    points = (torch.tensor([[[30.0, 40.0], [90.0, 20.0], [0.0, 0.0]]]), torch.tensor([[1, 0, -1]]))
    low = model.config.mask_input_size
    loss = torch.zeros(())
    for prompt in ({"points": points, "boxes": None, "masks": torch.randn(1, 1, low, low)},
                   {"points": None, "boxes": torch.tensor([[10.0, 10.0, 100.0, 90.0]]), "masks": None}):
        sparse, dense = model.prompt_encoder(**prompt)
        masks, iou = model.mask_decoder.predict_masks(embedding, pe, sparse, dense)
        loss = loss + masks.sigmoid().mean() + iou.pow(2).mean()
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.mask_decoder.iou_token.weight.grad.abs().sum() > 0
    assert model.image_encoder.pos_embed.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("model_name", ["tiny_random_sam", "tiny_random_mobilesam"])
def test_predictor_and_generator_on_a_small_geometry(request, model_name: str, synthetic_small: np.ndarray) -> None:
    model = request.getfixturevalue(model_name)
    predictor = Predictor(model)
    predictor.set_image(synthetic_small)
    low = model.config.low_res_size
    assert predictor.get_image_embedding().shape[-1] == model.config.embedding_size
    masks, iou, logits = predictor.predict(np.array([[20.0, 15.0]]), np.array([1]), box=np.array([5, 5, 45, 30]))
    assert masks.shape == (3, 37, 53) and iou.shape == (3,) and logits.shape == (3, low, low)
    again, _, _ = predictor.predict(np.array([[20.0, 15.0]]), np.array([1]), mask_input=logits[:1], multimask_output=False)
    assert again.shape == (1, 37, 53)
    generator = MaskGenerator(model, points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0, output_mode="coco_rle")
    records = generator.generate(synthetic_small)
    assert generator.counts.candidates == 27 and records
    fast = MaskGenerator(model, points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0, fast=True)
    assert fast.generate(synthetic_small) and fast.counts.candidates == 27


def test_onnx_export_of_a_small_geometry_matches_torch(tiny_random_sam, synthetic_small, tmp_path: Path) -> None:
    """The export traces the plain modules; onnxruntime then gives the torch predictor's results."""
    pytest.importorskip("onnxruntime")
    from segany.deploy.onnx import export_onnx

    export_onnx(tiny_random_sam, tmp_path)
    reference, onnx = Predictor(tiny_random_sam), Predictor(tiny_random_sam, backend="onnxruntime", onnx_dir=tmp_path)
    for predictor in (reference, onnx):
        predictor.set_image(synthetic_small)
    assert (onnx.get_image_embedding() - reference.get_image_embedding()).abs().max() <= 1e-4
    prompt = {"point_coords": np.array([[20.0, 15.0], [40.0, 30.0]]), "point_labels": np.array([1, 0])}
    _, iou, low_res = onnx.predict(**prompt)
    _, ref_iou, ref_low_res = reference.predict(**prompt)
    assert low_res.shape == ref_low_res.shape == (3, 64, 64)
    assert np.abs(low_res - ref_low_res).max() <= 1e-3 and np.abs(iou - ref_iou).max() <= 1e-4
