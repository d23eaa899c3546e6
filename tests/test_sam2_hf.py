"""transformers ``Sam2Model`` folders load into segany's SAM 2 (config mapped, weights renamed)
and agree with transformers' own forward."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import segany  # noqa: E402
from segany.errors import CheckpointError, ConfigError  # noqa: E402
from segany.models.sam2 import Sam2  # noqa: E402
from segany.registry import hugging_face_sam2_config  # noqa: E402
from segany.weights import hugging_face_sam2_to_official  # noqa: E402

SIZE = 256


def _hf_config() -> "transformers.Sam2Config":
    backbone = transformers.Sam2HieraDetConfig(
        hidden_size=8, num_attention_heads=1, blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[8, 16, 32, 64],
        num_attention_heads_per_stage=[1, 2, 4, 8], window_size_per_stage=[8, 4, 14, 7], global_attention_blocks=[3],
        image_size=[SIZE, SIZE])
    vision = transformers.Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8],
                                           backbone_feature_sizes=[[64, 64], [32, 32], [16, 16]], fpn_hidden_size=32)
    return transformers.Sam2Config(vision_config=vision, prompt_encoder_config={"hidden_size": 32, "image_size": SIZE},
                                   mask_decoder_config={"hidden_size": 32})


def _hf_model() -> "transformers.Sam2Model":
    torch.manual_seed(0)
    model = transformers.Sam2Model(_hf_config()).eval()
    with torch.no_grad():
        for tensor in model.state_dict().values():  # transformers' init leaves outputs near 0 (no_memory_embedding: 0)
            tensor.add_(torch.randn_like(tensor) * 0.2)
        # converted checkpoints hold the official matrix twice; random init does not tie them
        model.prompt_encoder.shared_embedding.positional_embedding.copy_(model.shared_image_embedding.positional_embedding)
    return model


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, "transformers.Sam2Model"]:
    model = _hf_model()
    folder = tmp_path_factory.mktemp("hf_sam2")
    model.save_pretrained(folder)
    return folder, model


def test_every_transformers_key_maps_to_an_official_one(hf_folder) -> None:
    folder, hf = hf_folder
    config = hugging_face_sam2_config(json.loads((folder / "config.json").read_text()))
    expected = {k: tuple(v.shape) for k, v in Sam2(config, segany.models.sam2.sam2.Sam2ImageEncoder(config.encoder)).state_dict().items()}
    renamed = hugging_face_sam2_to_official(hf.state_dict())
    assert sorted(k for k in renamed if k not in expected) == []
    assert {k: tuple(v.shape) for k, v in renamed.items()} == {k: expected[k] for k in renamed}
    image_path = [k for k in expected if k.startswith(("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed"))]
    assert sorted(image_path) == sorted(renamed)


def test_load_model_matches_transformers_forward(hf_folder) -> None:
    folder, hf = hf_folder
    model = segany.load_model(folder)
    assert isinstance(model, Sam2)
    torch.manual_seed(1)
    image = torch.randn(1, 3, SIZE, SIZE)
    point, label = torch.tensor([[[100.0, 60.0]]]), torch.tensor([[1]])
    with torch.no_grad():
        out = hf(pixel_values=image, input_points=point[None], input_labels=label[None], multimask_output=True)
        hf_embed = hf.get_image_embeddings(image)[-1]
        embed, high_res = model.image_features(image)
        sparse, dense = model.sam_prompt_encoder(points=(point, label), boxes=None, masks=None)
        masks, iou, _, obj = model.sam_mask_decoder(
            image_embeddings=embed, image_pe=model.sam_prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, multimask_output=True, repeat_image=False, high_res_features=high_res)
    torch.testing.assert_close(embed, hf_embed, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(masks, out.pred_masks[:, 0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(iou, out.iou_scores[:, 0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(obj, out.object_score_logits[:, 0], atol=1e-5, rtol=1e-4)


def test_unrepresentable_field_is_a_config_error_naming_it(hf_folder) -> None:
    data = json.loads((hf_folder[0] / "config.json").read_text())
    data["mask_decoder_config"]["mlp_dim"] = 64
    with pytest.raises(ConfigError, match=r"mask_decoder_config\.mlp_dim"):
        hugging_face_sam2_config(data)
    data = json.loads((hf_folder[0] / "config.json").read_text())
    data["vision_config"]["backbone_config"]["num_attention_heads_per_stage"] = [1, 1, 2, 2]
    with pytest.raises(ConfigError, match="num_attention_heads_per_stage"):
        hugging_face_sam2_config(data)


def test_untied_positional_matrices_are_refused() -> None:
    model = transformers.Sam2Model(_hf_config())
    with pytest.raises(CheckpointError, match="positional"):
        hugging_face_sam2_to_official(model.state_dict())


def test_video_model_folder_loads_memory_modules_too(tmp_path: Path) -> None:
    image = _hf_config()
    config = transformers.Sam2VideoConfig(
        vision_config=image.vision_config, prompt_encoder_config=image.prompt_encoder_config.to_dict(),
        mask_decoder_config=image.mask_decoder_config.to_dict(), image_size=SIZE, memory_attention_rope_feat_sizes=[16, 16],
        memory_attention_num_layers=2)
    torch.manual_seed(2)
    hf = transformers.Sam2VideoModel(config).eval()
    state = hf.state_dict()
    with torch.no_grad():
        hf.prompt_encoder.shared_embedding.positional_embedding.copy_(hf.shared_image_embedding.positional_embedding)
    hf.save_pretrained(tmp_path)
    model = segany.load_model(tmp_path)  # strict: every memory tensor is mapped, none is left over
    assert model.config.memory_attention.num_layers == 2
    loaded = model.state_dict()
    for hf_key, ours in (("memory_temporal_positional_encoding", "maskmem_tpos_enc"),
                         ("memory_encoder.mask_downsampler.final_conv.weight", "memory_encoder.mask_downsampler.encoder.12.weight"),
                         ("memory_encoder.memory_fuser.layers.1.scale", "memory_encoder.fuser.layers.1.gamma"),
                         ("object_pointer_proj.proj_out.weight", "obj_ptr_proj.layers.2.weight"),
                         ("memory_attention.layers.1.cross_attn_image.k_proj.weight", "memory_attention.layers.1.cross_attn_image.k_proj.weight")):
        assert torch.equal(loaded[ours], state[hf_key]), ours


def test_image_folder_missing_an_image_key_is_refused(hf_folder, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from segany.errors import CheckpointMismatchError

    folder, _ = hf_folder
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    tensors = load_file(folder / "model.safetensors")
    del tensors["mask_decoder.iou_token.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointMismatchError, match="sam_mask_decoder.iou_token.weight"):
        segany.load_model(tmp_path)
