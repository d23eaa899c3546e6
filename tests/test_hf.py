"""Hugging Face interop: a small random ``transformers.SamModel`` saved with ``save_pretrained``
loads with ``segany.load_model(FOLDER)`` and gives transformers' own outputs.

transformers' two-way blocks use LayerNorm eps 1e-6 where the official code (and segany) use
1e-5, so mask logits differ by ~1e-4..1e-3; the image encoder is the same computation.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

import segany  # noqa: E402
from segany import Predictor  # noqa: E402
from segany.errors import CheckpointError, ConfigError  # noqa: E402

EMBED_TOL = 1e-5
LOGIT_TOL = 2e-3  # the decoder's LayerNorm eps (1e-6 in transformers, 1e-5 official)
IOU_TOL = 1e-3
TINY_VISION = {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2, "global_attn_indexes": [1]}


def _randomise(model: torch.nn.Module) -> None:
    """Random weights everywhere (transformers' init leaves positions and many biases at zero)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "layer_norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.1 * noise)
            elif "positional_embedding" in name:
                param.copy_(noise)
            else:
                param.copy_(0.1 * noise)


@pytest.fixture(scope="module")
def hf_model():
    config = transformers.SamConfig(vision_config=TINY_VISION)
    model = transformers.SamModel(config).eval()
    _randomise(model)
    return model


@pytest.fixture(scope="module")
def hf_folder(hf_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hf") / "tiny-sam"
    hf_model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def predictor(hf_folder: Path, image: np.ndarray) -> Predictor:
    predictor = Predictor(segany.load_model(hf_folder))
    predictor.set_image(image)
    return predictor


@pytest.fixture(scope="module")
def hf_embedding(hf_model, predictor: Predictor, image: np.ndarray) -> torch.Tensor:
    pixels = predictor.model.preprocess(torch.as_tensor(image).permute(2, 0, 1)[None].float())
    with torch.no_grad():
        return hf_model.get_image_embeddings(pixels)


def test_save_pretrained_writes_one_positional_matrix(hf_folder: Path) -> None:
    """The layout this loader must read: the tied copy in the prompt encoder is not written."""
    from safetensors import safe_open

    with safe_open(hf_folder / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "shared_image_embedding.positional_embedding" in keys
    assert "prompt_encoder.shared_embedding.positional_embedding" not in keys


def test_folder_config_maps_onto_segany(predictor: Predictor) -> None:
    config = predictor.model.config
    assert config.name == "tiny-sam"
    assert (config.encoder.embed_dim, config.encoder.depth, config.encoder.num_heads) == (48, 2, 2)
    assert config.encoder.global_attn_indexes == (1,) and config.encoder.window_size == 14
    assert (config.decoder_depth, config.decoder_mlp_dim, config.decoder_num_heads) == (2, 2048, 8)


def test_image_embedding_matches_transformers(predictor: Predictor, hf_embedding: torch.Tensor) -> None:
    ours = predictor.get_image_embedding()
    assert ours.shape == hf_embedding.shape == (1, 256, 64, 64)
    assert torch.allclose(ours, hf_embedding, atol=EMBED_TOL, rtol=0)


@pytest.mark.parametrize("prompt", ["points", "box"])
def test_masks_match_transformers(prompt: str, hf_model, predictor: Predictor, hf_embedding: torch.Tensor) -> None:
    points, labels = np.array([[300.0, 500.0], [700.0, 200.0]]), np.array([1, 0])
    box = np.array([100.0, 200.0, 600.0, 900.0])
    multimask = prompt == "points"
    if prompt == "points":
        _, iou, low_res = predictor.predict(points, labels, multimask_output=multimask)
        hf_inputs = {"input_points": torch.tensor(points, dtype=torch.float)[None, None],
                     "input_labels": torch.tensor(labels)[None, None]}
    else:
        _, iou, low_res = predictor.predict(box=box, multimask_output=multimask)
        hf_inputs = {"input_boxes": torch.tensor(box, dtype=torch.float)[None, None]}
    with torch.no_grad():
        out = hf_model(image_embeddings=hf_embedding, multimask_output=multimask, **hf_inputs)
    expected_logits, expected_iou = out.pred_masks[0, 0].numpy(), out.iou_scores[0, 0].numpy()
    assert low_res.shape == expected_logits.shape == ((3 if multimask else 1), 256, 256)
    assert np.abs(expected_logits).max() > 1.0  # the comparison is not between near-zero maps
    np.testing.assert_allclose(low_res, expected_logits, atol=LOGIT_TOL, rtol=0)
    np.testing.assert_allclose(iou, expected_iou, atol=IOU_TOL, rtol=0)


def test_pytorch_model_bin_with_both_positional_keys(hf_model, hf_folder: Path, tmp_path: Path, predictor: Predictor) -> None:
    """Older folders: pytorch_model.bin holding the tied matrix under both names."""
    (tmp_path / "config.json").write_text((hf_folder / "config.json").read_text())
    torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    model = segany.load_model(tmp_path)
    for key, value in predictor.model.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_differing_tied_matrices_are_refused(hf_model, hf_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text((hf_folder / "config.json").read_text())
    state = dict(hf_model.state_dict())
    state["prompt_encoder.shared_embedding.positional_embedding"] = state["shared_image_embedding.positional_embedding"] + 1
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="positional"):
        segany.load_model(tmp_path)


def test_folder_without_weights_is_a_checkpoint_error(hf_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text((hf_folder / "config.json").read_text())
    with pytest.raises(CheckpointError, match="model.safetensors"):
        segany.load_model(tmp_path)


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [("vision_config", "use_rel_pos", False), ("vision_config", "patch_size", 8),
     ("mask_decoder_config", "hidden_size", 128), ("mask_decoder_config", "iou_head_depth", 2)],
)
def test_unrepresentable_configs_are_refused(hf_folder: Path, tmp_path: Path, section: str, field: str, value) -> None:
    data = json.loads((hf_folder / "config.json").read_text())
    data[section][field] = value
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=f"{section}.{field}"):
        segany.load_model(tmp_path)


def test_other_transformers_model_type_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "sam_hq", "vision_config": {}}))
    with pytest.raises(ConfigError, match="sam_hq"):
        segany.load_model(tmp_path)


def test_cli_model_folder(hf_folder: Path, predictor: Predictor) -> None:
    """``--model FOLDER`` resolves to the folder's architecture and weights."""
    from segany.cli import build_parser
    from segany.cli.common import load_model_from_args

    args = build_parser().parse_args(["segment", "image.png", "--point", "1,1", "--model", str(hf_folder)])
    model = load_model_from_args(args)
    assert model.config == predictor.model.config
    for key, value in predictor.model.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
