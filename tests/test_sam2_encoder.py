"""SAM 2's image encoder (Hiera trunk + FPN neck) and preprocessing: official state-dict layout of
every official config, and parity with the official ``SAM2ImagePredictor.set_image`` outputs."""
from __future__ import annotations

import hashlib
import json
import lzma
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segany.errors import ConfigError, ImageError
from segany.models.config import HieraConfig
from segany.models.encoders.hiera import Sam2ImageEncoder, window_partition, window_unpartition
from segany.models.position_encoding import PositionEmbeddingSine
from segany.predict.sam2_transforms import preprocess_batch, preprocess_image
from segany.registry import hiera_config_from_section as config_from_section

MANIFESTS = [f"manifest_{v}_hiera_{s}.json" for v in ("sam2.1", "sam2") for s in ("t", "s", "b+", "l")]
PREFIX = "image_encoder."
# A tiny encoder whose grids need padding in stages 3 and 4 (as the real ones at 1024 px do).
TINY_RANDOM = HieraConfig(
    embed_dim=8,
    num_heads=1,
    stages=(1, 1, 2, 1),
    global_att_blocks=(3,),
    window_pos_embed_bkg_spatial_size=(3, 3),
    window_spec=(4, 2, 4, 2),
    backbone_channel_list=(64, 32, 16, 8),
    d_model=16,
    position_num_pos_feats=16,
    img_size=96,
)


@pytest.fixture(scope="session")
def sam2_golden(golden: Path) -> Path:
    return golden / "sam2"


@pytest.fixture(scope="session")
def tiny_sam2_state(sam2_golden: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The golden tiny SAM 2.1 checkpoint's state dict (decompressed to a temporary file)."""
    path = tmp_path_factory.mktemp("sam2") / "tiny_sam2.1.pt"
    with lzma.open(sam2_golden / "tiny_sam2.1.pt.xz") as src, path.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    return torch.load(path, weights_only=True)["model"]


@pytest.fixture(scope="session")
def tiny_sam2_encoder(sam2_golden: Path, tiny_sam2_state: dict[str, torch.Tensor]) -> Sam2ImageEncoder:
    flat = json.loads((sam2_golden / "sam2.1_hiera_golden_tiny.json").read_text())
    section: dict = {}
    for key, value in flat.items():
        if key.startswith("model.image_encoder."):
            node = section
            *parents, leaf = key[len("model.image_encoder.") :].split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    encoder = Sam2ImageEncoder(config_from_section(section)).eval()
    state = {k[len(PREFIX) :]: v for k, v in tiny_sam2_state.items() if k.startswith(PREFIX)}
    encoder.load_state_dict(state, strict=True)
    return encoder


@pytest.fixture(scope="session")
def sam2_images(sam2_golden: Path) -> dict[str, np.ndarray]:
    with np.load(sam2_golden / "images.npz") as data:
        return {name: data[name] for name in ("photo", "small", "wide")}


@pytest.mark.parametrize("manifest_name", MANIFESTS)
def test_state_dict_matches_official_manifest(sam2_golden: Path, manifest_name: str) -> None:
    manifest = json.loads((sam2_golden / manifest_name).read_text())
    entries = manifest["state_dict"].items()
    expected = [(k[len(PREFIX) :], v["shape"], v["dtype"]) for k, v in entries if k.startswith(PREFIX)]
    with torch.device("meta"):
        encoder = Sam2ImageEncoder(config_from_section(manifest["config_model_section"]["image_encoder"]))
    ours = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in encoder.state_dict().items()]
    assert ours == expected


def test_default_config_is_sam2_1_hiera_t(sam2_golden: Path) -> None:
    manifest = json.loads((sam2_golden / "manifest_sam2.1_hiera_t.json").read_text())
    assert HieraConfig() == config_from_section(manifest["config_model_section"]["image_encoder"])


@pytest.mark.parametrize("name", ["photo", "small", "wide"])
def test_input_tensor_is_the_official_one(sam2_golden: Path, sam2_images: dict[str, np.ndarray], name: str) -> None:
    case = np.load(sam2_golden / f"img_embedding_{name}.npz")
    x = preprocess_image(sam2_images[name]).numpy()
    assert list(x.shape) == case["input_tensor_shape"].tolist() and x.dtype == np.float32
    np.testing.assert_allclose(x[:, ::8, ::8], case["input_tensor_stride8"], rtol=0, atol=1e-5)
    assert hashlib.sha256(x.tobytes()).hexdigest() == str(case["input_tensor_sha256"])


@pytest.mark.parametrize("name", ["photo", "small", "wide"])
def test_embedding_matches_official(
    sam2_golden: Path,
    sam2_images: dict[str, np.ndarray],
    tiny_sam2_encoder: Sam2ImageEncoder,
    tiny_sam2_state: dict[str, torch.Tensor],
    name: str,
) -> None:
    """``set_image``'s features: the stride-16 level + ``no_mem_embed``; the stride-4 / 8 levels
    through the decoder's ``conv_s0`` / ``conv_s1``."""
    case = np.load(sam2_golden / f"img_embedding_{name}.npz")
    state = tiny_sam2_state
    with torch.inference_mode():
        out = tiny_sam2_encoder(preprocess_image(sam2_images[name])[None])
        features = {
            "image_embed": out.vision_features + state["no_mem_embed"].view(1, -1, 1, 1),
            "high_res_feats0": F.conv2d(
                out.backbone_fpn[0], state["sam_mask_decoder.conv_s0.weight"], state["sam_mask_decoder.conv_s0.bias"]
            ),
            "high_res_feats1": F.conv2d(
                out.backbone_fpn[1], state["sam_mask_decoder.conv_s1.weight"], state["sam_mask_decoder.conv_s1.bias"]
            ),
        }
    assert len(out.backbone_fpn) == len(out.vision_pos_enc) == 3
    for key, value in features.items():
        (strided,) = [k for k in case.files if k.startswith(f"{key}_stride")]
        stride = int(strided.removeprefix(f"{key}_stride"))
        assert list(value.shape) == case[f"{key}_shape"].tolist()
        np.testing.assert_allclose(value[:, :, ::stride, ::stride].numpy(), case[strided], rtol=0, atol=1e-4)
        assert value.double().sum().item() == pytest.approx(float(case[f"{key}_sum"]), rel=1e-5)


def tiny_random_encoder() -> Sam2ImageEncoder:
    torch.manual_seed(0)
    encoder = Sam2ImageEncoder(TINY_RANDOM)
    with torch.no_grad():
        encoder.trunk.pos_embed.normal_(0, 0.1)
        encoder.trunk.pos_embed_window.normal_(0, 0.1)
    return encoder


def test_tiny_random_encoder_shapes_and_gradients() -> None:
    encoder = tiny_random_encoder()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    out = encoder(x)
    assert [tuple(f.shape) for f in out.backbone_fpn] == [(2, 16, 24, 24), (2, 16, 12, 12), (2, 16, 6, 6)]
    assert [p.shape for p in out.vision_pos_enc] == [f.shape for f in out.backbone_fpn]
    assert out.vision_features is out.backbone_fpn[-1]
    assert TINY_RANDOM.patch_size == 96 // out.vision_features.shape[-1]
    sum(f.square().mean() for f in out.backbone_fpn).backward()
    for name, param in encoder.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        # The scalped stride-32 stage still reaches the output through the top-down sum.
        assert param.grad.abs().sum() > 0, name


def test_batch_items_are_independent() -> None:
    encoder = tiny_random_encoder().eval()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        both = encoder(x).vision_features
        second = encoder(x[1:]).vision_features
    torch.testing.assert_close(both[1:], second, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("height", "width", "window"), [(6, 6, 4), (8, 8, 4), (3, 5, 2)])
def test_window_partition_round_trip(height: int, width: int, window: int) -> None:
    x = torch.randn(2, height, width, 3)
    windows, pad_hw = window_partition(x, window)
    assert windows.shape[1:] == (window, window, 3)
    assert pad_hw == (math.ceil(height / window) * window, math.ceil(width / window) * window)
    assert windows.shape[0] == 2 * (pad_hw[0] // window) * (pad_hw[1] // window)
    assert torch.equal(window_unpartition(windows, window, pad_hw, (height, width)), x)


def test_sine_position_encoding_formula() -> None:
    """Against the DETR formula in float64: y half then x half, sin / cos interleaved."""
    pe = PositionEmbeddingSine(16)(torch.zeros(2, 5, 3, 4))
    assert pe.shape == (2, 16, 3, 4)
    y = np.arange(1, 4)[:, None] / (3 + 1e-6) * 2 * np.pi
    x = np.arange(1, 5)[None, :] / (4 + 1e-6) * 2 * np.pi
    freq = 10000 ** (2 * (np.arange(8) // 2) / 8)
    for half, coord in enumerate((y, x)):
        angles = np.broadcast_to(coord, (3, 4))[None] / freq[:, None, None]
        expected = np.where((np.arange(8) % 2 == 0)[:, None, None], np.sin(angles), np.cos(angles))
        np.testing.assert_allclose(pe[1, 8 * half : 8 * half + 8].numpy(), expected, atol=1e-5)


def test_preprocess_resizes_without_keeping_aspect(synthetic_small: np.ndarray) -> None:
    batch = preprocess_batch([synthetic_small, synthetic_small[:20]], image_size=64)
    assert batch.shape == (2, 3, 64, 64) and batch.dtype == torch.float32
    flat = np.full((10, 30, 3), 255, np.uint8)
    # White is (1 - mean) / std in every channel, wherever it lands.
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(preprocess_image(flat, 64), expected.view(3, 1, 1).expand(3, 64, 64))


@pytest.mark.parametrize(
    "image", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8), [[0]]]
)
def test_preprocess_rejects_bad_images(image: object) -> None:
    with pytest.raises(ImageError):
        preprocess_image(image)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {"backbone_channel_list": (256, 128, 64, 32)},
        {"window_spec": (8, 4, 14)},
        {"q_pool": 4},
        {"scalp": 4},
        {"position_num_pos_feats": 128},
        {"fpn_interp_model": "area"},
        {"img_size": 1000},
    ],
)
def test_config_errors(changes: dict) -> None:
    with pytest.raises(ConfigError):
        HieraConfig(**changes)
