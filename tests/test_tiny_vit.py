"""MobileSAM's TinyViT image encoder: official state-dict layout and parity with the golden embedding."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from conftest import require_golden
from segany.models.config import SamConfig, TinyViTConfig
from segany.models.encoders.tiny_vit import TinyViT, attention_bias_indices
from segany.models.sam import Sam

# The small TinyViT of the golden checkpoint and the real MobileSAM vit_t.
TINY_CONFIG = TinyViTConfig(
    embed_dims=(32, 64, 96, 320), depths=(1, 1, 2, 1), num_heads=(1, 2, 3, 10), window_sizes=(7, 7, 14, 7)
)
VIT_T_CONFIG = TinyViTConfig(
    embed_dims=(64, 128, 160, 320), depths=(2, 2, 6, 2), num_heads=(2, 4, 5, 10), window_sizes=(7, 7, 14, 7)
)
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def test_vit_t_state_dict_matches_official_manifest() -> None:
    manifest = json.loads((require_golden() / "manifest_vit_t.json").read_text())
    expected = {k: v["shape"] for k, v in manifest["state_dict"].items() if k.startswith("image_encoder.")}
    with torch.device("meta"):
        model = Sam(SamConfig(name="vit_t", encoder=VIT_T_CONFIG))
    ours = {k: list(v.shape) for k, v in model.state_dict().items() if k.startswith("image_encoder.")}
    assert list(ours) == list(expected)  # same keys, in the official order
    assert ours == expected
    # No cached or index buffers leak into checkpoints.
    assert not any(k.endswith((".ab", ".attention_bias_idxs")) for k in ours)
    expected_params = sum(int(np.prod(shape)) for k, shape in expected.items() if not k.endswith(BN_BUFFERS))
    assert sum(p.numel() for p in model.image_encoder.parameters()) == expected_params
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"] == 10_130_092


def test_attention_bias_indices_match_official_enumeration() -> None:
    for height, width in [(7, 7), (14, 14), (3, 5)]:
        # The official numbering: offsets (|dy|, |dx|) in order of first appearance.
        points = list(itertools.product(range(height), range(width)))
        offsets: dict[tuple[int, int], int] = {}
        idxs = [
            offsets.setdefault((abs(p[0] - q[0]), abs(p[1] - q[1])), len(offsets)) for p in points for q in points
        ]
        expected = torch.tensor(idxs).view(len(points), len(points))
        assert torch.equal(attention_bias_indices(height, width), expected)
        assert len(offsets) == height * width


def test_loaded_attention_biases_take_effect_after_eval() -> None:
    # The official Attention caches the gathered biases on .eval(); a stale copy would ignore
    # weights loaded afterwards. Ours must follow the live parameter.
    torch.manual_seed(0)
    model = TinyViT(TINY_CONFIG).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        before = model(x)
    state = model.state_dict()
    bias_keys = [k for k in state if k.endswith("attn.attention_biases")]
    assert bias_keys
    # Random, not constant: softmax ignores a shift shared by all offsets of a head.
    model.load_state_dict({k: torch.randn_like(v) if k in bias_keys else v for k, v in state.items()})
    with torch.inference_mode():
        after = model(x)
    assert after.shape == (1, 256, 16, 16)
    assert (after - before).abs().max() > 1e-3


def test_tiny_mobilesam_embedding_matches_golden() -> None:
    image_module = pytest.importorskip("PIL.Image")
    golden = require_golden()
    model = Sam(SamConfig(name="tiny_mobilesam", encoder=TINY_CONFIG))
    state = torch.load(golden / "tiny_mobilesam_image_encoder.pth", weights_only=True)
    shared_parts = torch.load(golden / "tiny_sam.pth", weights_only=True)
    state.update({k: v for k, v in shared_parts.items() if not k.startswith("image_encoder.")})
    model.load_state_dict(state, strict=True)
    model.eval()

    image = np.load(golden / "mobilesam_photo_point_multimask.npz")["image"]
    assert image.shape == (480, 640, 3)
    resized = np.asarray(image_module.fromarray(image).resize((1024, 768), image_module.BILINEAR))
    x = torch.from_numpy(resized.copy()).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        features = model.image_encoder(model.preprocess(x))
    assert features.shape == (1, 256, 64, 64)

    expected = np.load(golden / "mobilesam_embedding_photo.npz")["features_stride2"]
    diff = np.abs(features[:, :, ::2, ::2].numpy() - expected).max()
    assert diff <= 1e-4, f"max abs diff {diff:.3g}"
