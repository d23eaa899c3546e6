"""SAM 2 / 2.1 models: builders against the official manifests (every key but the image
encoder's), configs from the official YAML / flat JSON, the official checkpoint layout, and the
image path (prompt decoding with high-resolution features) on a stand-in image encoder."""
from __future__ import annotations

import json
import lzma
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segany.errors import ConfigError
from segany.models.common import MLPBlock
from segany.models.sam2 import Sam2, Sam2Config
from segany.models.sam2.mask_decoder import two_way_transformer
from segany.models.sam2.memory_attention import RoPEAttention
from segany.models.position_encoding import PositionEmbeddingSine, compute_axial_cis
from segany.registry import (
    SAM2_MODELS,
    resolve_sam2_config,
    sam2_config_from_dict,
    sam2_config_from_yaml,
)
from segany.weights import read_state_dict

MANIFESTS = [f"sam{v}_hiera_{s}" for v in ("2.1", "2") for s in ("t", "s", "b+", "l")]


class StandInEncoder(nn.Module):
    """An image encoder without parameters: the official ``ImageEncoder`` dict (``backbone_fpn`` at
    strides 4, 8, 16, ``vision_pos_enc``) made from the image by fixed random 1x1 projections."""

    def __init__(self, d_model: int = 256, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("proj", torch.randn(3, d_model, generator=gen), persistent=False)
        self.pe = PositionEmbeddingSine(d_model)

    def forward(self, images: torch.Tensor) -> dict:
        fpn = [torch.einsum("bchw,cd->bdhw", F.avg_pool2d(images, s), self.proj) for s in (4, 8, 16)]
        return {"vision_features": fpn[-1], "backbone_fpn": fpn, "vision_pos_enc": [self.pe(x) for x in fpn]}


def _manifest(golden: Path, name: str) -> dict:
    return json.loads((golden / "sam2" / f"manifest_{name}.json").read_text())


@pytest.mark.parametrize("name", MANIFESTS)
def test_builder_matches_official_manifest_outside_image_encoder(golden: Path, name: str) -> None:
    manifest = _manifest(golden, name)
    config = sam2_config_from_dict(manifest["config_model_section"], name=name)
    with torch.device("meta"):
        model = Sam2(config, StandInEncoder())
    state = model.state_dict()
    expected = {k: v for k, v in manifest["state_dict"].items() if not k.startswith("image_encoder.")}
    assert list(state) == list(expected)  # same keys, same order, none extra
    for key, entry in expected.items():
        assert list(state[key].shape) == entry["shape"], key
        assert str(state[key].dtype).removeprefix("torch.") == entry["dtype"], key


@pytest.mark.parametrize("name", MANIFESTS)
def test_registry_config_is_the_official_yaml(golden: Path, name: str) -> None:
    from_manifest = sam2_config_from_dict(_manifest(golden, name)["config_model_section"], name=name)
    assert SAM2_MODELS[name].config == from_manifest
    assert SAM2_MODELS[name].family == "sam2"


def test_sam21_adds_three_tensors_to_sam2() -> None:
    with torch.device("meta"):
        keys = {v: set(Sam2(SAM2_MODELS[f"sam{v}_hiera_t"].config, StandInEncoder()).state_dict()) for v in ("2", "2.1")}
    assert keys["2.1"] - keys["2"] == {"no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias"}
    assert keys["2"] <= keys["2.1"]


def test_yaml_and_flat_json_give_the_same_config(golden: Path) -> None:
    from_yaml = sam2_config_from_yaml(golden / "sam2" / "sam2.1_hiera_golden_tiny.yaml")
    from_json = resolve_sam2_config(golden / "sam2" / "sam2.1_hiera_golden_tiny.json")
    assert from_yaml == from_json
    assert from_yaml.memory_attention.num_layers == 2
    assert from_yaml.encoder.embed_dim == 32
    assert from_yaml.encoder.backbone_channel_list == (256, 128, 64, 32)
    assert from_yaml.memory_encoder.cx_layer_scale_init_value == 1e-6  # YAML's "1e-6" is a string
    # the builder's postprocessing, as build_sam2(apply_postprocessing=True)
    assert from_yaml.dynamic_multimask_via_stability and from_yaml.dynamic_multimask_stability_thresh == 0.98
    raw = sam2_config_from_yaml(golden / "sam2" / "sam2.1_hiera_golden_tiny.yaml", apply_postprocessing=False)
    assert not raw.dynamic_multimask_via_stability


def _tiny_section(golden: Path) -> dict:
    return json.loads(json.dumps(_manifest(golden, "sam2.1_hiera_t")["config_model_section"]))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(num_maskmem="7"), "num_maskmem"),
    (lambda m: m.update(use_high_res_features_in_sam=1), "use_high_res_features_in_sam"),
    (lambda m: m.update(unknown_flag=True), "unknown keys model.unknown_flag"),
    (lambda m: m["memory_attention"]["layer"].update(cross_attention={"_target_": "my.Attention"}), "my.Attention"),
    (lambda m: m["memory_encoder"]["fuser"]["layer"].update(kernel=7), "memory_encoder.fuser.layer.kernel"),
    (lambda m: m["image_encoder"]["neck"].pop("d_model"), "d_model"),
    (lambda m: m.update(_target_="evil.module.Model"), "evil.module.Model"),
    (lambda m: m.update(fixed_no_obj_ptr=True, pred_obj_scores=False), "fixed_no_obj_ptr"),
])
def test_bad_sam2_config_is_a_config_error(golden: Path, edit, message: str) -> None:
    section = _tiny_section(golden)
    edit(section)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        sam2_config_from_dict(section)


def test_unreadable_yaml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        sam2_config_from_yaml(tmp_path / "bad.yaml")
    (tmp_path / "other.yaml").write_text("trainer: {}\n")
    with pytest.raises(ConfigError, match="'model' section"):
        sam2_config_from_yaml(tmp_path / "other.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        sam2_config_from_yaml(tmp_path / "missing.yaml")


@pytest.fixture(scope="module")
def tiny_sam2_checkpoint(golden: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sam2") / "tiny_sam2.1.pt"
    with lzma.open(golden / "sam2" / "tiny_sam2.1.pt.xz") as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


@pytest.fixture(scope="module")
def tiny_sam2(golden: Path, tiny_sam2_checkpoint: Path) -> Sam2:
    config = sam2_config_from_yaml(golden / "sam2" / "sam2.1_hiera_golden_tiny.yaml")
    state = read_state_dict(tiny_sam2_checkpoint)  # the official {"model": state_dict} file
    assert len(state) == 359
    model = Sam2(config, StandInEncoder())
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("image_encoder.")}, strict=True)
    return model.eval()


def test_official_checkpoint_loads_strictly_outside_image_encoder(tiny_sam2: Sam2, tiny_sam2_checkpoint: Path) -> None:
    raw = torch.load(tiny_sam2_checkpoint, weights_only=True)["model"]
    for key, value in tiny_sam2.state_dict().items():
        assert torch.equal(value, raw[key]), key


def test_two_way_transformer_mlp_is_sams_mlp_block() -> None:
    torch.manual_seed(0)
    transformer = two_way_transformer(depth=1, embedding_dim=16, num_heads=2, mlp_dim=32)
    mlp = transformer.layers[0].mlp
    block = MLPBlock(16, 32, nn.ReLU)
    block.lin1.load_state_dict(mlp.layers[0].state_dict())
    block.lin2.load_state_dict(mlp.layers[1].state_dict())
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(mlp(x), block(x))
    assert set(transformer.state_dict()) >= {"layers.0.mlp.layers.0.weight", "layers.0.mlp.layers.1.bias"}


def _image(size: int = 1024, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_image_features_add_no_mem_embed_and_project_high_res(tiny_sam2: Sam2) -> None:
    with torch.inference_mode():
        embed, high_res = tiny_sam2.image_features(_image())
        raw = tiny_sam2.image_encoder(_image())["backbone_fpn"]
        projected = tiny_sam2.sam_mask_decoder.conv_s1(raw[1])
        with_no_mem = raw[2] + tiny_sam2.no_mem_embed.reshape(1, -1, 1, 1)
    assert embed.shape == (1, 256, 64, 64)
    assert [tuple(f.shape) for f in high_res] == [(1, 32, 256, 256), (1, 64, 128, 128)]
    torch.testing.assert_close(embed, with_no_mem)
    torch.testing.assert_close(high_res[1], projected)


def test_decode_prompts_shapes_sigmoid_iou_and_box_as_points(tiny_sam2: Sam2) -> None:
    with torch.inference_mode():
        embed, high_res = tiny_sam2.image_features(_image())
        points, labels = torch.tensor([[[400.0, 250.0]]]), torch.tensor([[1]])
        masks, iou = tiny_sam2.decode_prompts(embed, high_res, points, labels, multimask_output=True)
        assert masks.shape == (1, 3, 256, 256) and iou.shape == (1, 3)
        assert ((iou > 0) & (iou < 1)).all()
        # a box is the points (x0, y0) label 2 and (x1, y1) label 3, before the clicks
        box = torch.tensor([[100.0, 120.0, 600.0, 500.0]])
        by_box = tiny_sam2.decode_prompts(embed, high_res, points, labels, boxes=box, multimask_output=True)
        corners = torch.cat([box.reshape(1, 2, 2), points], dim=1)
        by_points = tiny_sam2.decode_prompts(embed, high_res, corners, torch.tensor([[2, 3, 1]]), multimask_output=True)
        torch.testing.assert_close(by_box, by_points)
        # several boxes: B prompts on the repeated image embedding
        boxes = torch.tensor([[100.0, 120.0, 600.0, 500.0], [0.0, 0.0, 300.0, 300.0]])
        masks, iou = tiny_sam2.decode_prompts(embed, high_res, None, None, boxes=boxes, multimask_output=False)
        assert masks.shape == (2, 1, 256, 256) and iou.shape == (2, 1)
        single, _ = tiny_sam2.decode_prompts(embed, high_res, None, None, boxes=boxes[1:], multimask_output=False)
        torch.testing.assert_close(masks[1:], single, atol=1e-4, rtol=1e-4)


def test_single_mask_falls_back_to_best_multimask_when_unstable(tiny_sam2: Sam2) -> None:
    decoder = tiny_sam2.sam_mask_decoder
    with torch.inference_mode():
        embed, high_res = tiny_sam2.image_features(_image())
        sparse, dense = tiny_sam2.sam_prompt_encoder(
            (torch.tensor([[[400.0, 250.0], [0.0, 0.0]]]), torch.tensor([[1, -1]])), None, None)
        args = (embed, tiny_sam2.sam_prompt_encoder.get_dense_pe(), sparse, dense)
        all_masks, all_iou, _, _ = decoder.predict_masks(*args, repeat_image=False, high_res_features=high_res)
        masks, iou, tokens, score = decoder(*args, multimask_output=False, repeat_image=False, high_res_features=high_res)
        stable = bool(decoder.is_stable(all_masks[:, :1]))
        pick = 0 if stable else 1 + int(all_iou[0, 1:].argmax())
        torch.testing.assert_close(masks[:, 0], all_masks[:, pick])
        torch.testing.assert_close(iou[:, 0], all_iou[:, pick])
        assert tokens.shape == (1, 1, 256) and score.shape == (1, 1)
        # without the fallback: always token 0
        plain = decoder
        plain.dynamic_multimask_via_stability = False
        try:
            masks0, _, _, _ = plain(*args, multimask_output=False, repeat_image=False, high_res_features=high_res)
        finally:
            plain.dynamic_multimask_via_stability = True
        torch.testing.assert_close(masks0[:, 0], all_masks[:, 0])
        _, _, multi_tokens, _ = decoder(*args, multimask_output=True, repeat_image=False, high_res_features=high_res)
        assert multi_tokens.shape == (1, 3, 256)  # use_multimask_token_for_obj_ptr


def test_memory_encoder_and_attention_run_on_the_official_shapes(tiny_sam2: Sam2) -> None:
    with torch.inference_mode():
        pix = torch.randn(1, 256, 16, 16)
        out = tiny_sam2.memory_encoder(pix, torch.randn(1, 1, 256, 256))
        memory, pos = out["vision_features"], out["vision_pos_enc"][0]
        assert memory.shape == (1, 64, 16, 16) and pos.shape == (1, 64, 16, 16)
        curr = pix.flatten(2).permute(2, 0, 1)  # (HW, B, C)
        curr_pos = torch.randn_like(curr)
        ptrs = torch.randn(4, 1, 64)
        mem = torch.cat([memory.flatten(2).permute(2, 0, 1), ptrs])
        mem_pos = torch.cat([pos.flatten(2).permute(2, 0, 1), torch.zeros_like(ptrs)])
        result = tiny_sam2.memory_attention(curr, mem, curr_pos, mem_pos, num_obj_ptr_tokens=4)
        assert result.shape == curr.shape and torch.isfinite(result).all()


def test_rope_rotates_queries_and_spatial_keys_only() -> None:
    torch.manual_seed(0)
    attn = RoPEAttention(32, 1, rope_k_repeat=True, kv_in_dim=16, feat_sizes=(4, 4)).eval()
    q, k = torch.randn(1, 16, 32), torch.randn(1, 2 * 16 + 3, 16)
    # rotations are unitary and position 0 is the identity
    cis = compute_axial_cis(32, 4, 4)
    assert cis.shape == (16, 16)
    torch.testing.assert_close(cis.abs(), torch.ones(16, 16))
    torch.testing.assert_close(cis[0], torch.ones(16, dtype=torch.complex64))
    # the 3 excluded keys (object pointers) are not rotated: permuting them leaves the output unchanged
    out = attn(q, k, k, num_k_exclude_rope=3)
    perm = torch.cat([k[:, :32], k[:, 32:].flip(1)], dim=1)
    torch.testing.assert_close(attn(q, perm, perm, num_k_exclude_rope=3), out)
    # spatial keys are rotated per frame: swapping two memory frames keeps the output, shuffling a frame does not
    swapped = torch.cat([k[:, 16:32], k[:, :16], k[:, 32:]], dim=1)
    torch.testing.assert_close(attn(q, swapped, swapped, num_k_exclude_rope=3), out)  # frames rotate alike
    shuffled = torch.cat([k[:, :16].flip(1), k[:, 16:]], dim=1)
    assert not torch.allclose(attn(q, shuffled, shuffled, num_k_exclude_rope=3), out)


def test_config_rejects_inconsistent_flags() -> None:
    with pytest.raises(ValueError, match="proj_tpos_enc_in_obj_ptrs"):
        Sam2Config(add_tpos_enc_to_obj_ptrs=False, proj_tpos_enc_in_obj_ptrs=True)
    with pytest.raises(ValueError, match="backbone_stride"):
        Sam2Config(image_size=1000)
