"""SAM 2's decoder on the fast path (segany.predict.fast_decoder over the plain SAM 2 decoder's
weights, segany.predict.runtime.Sam2Runtime): equal to the plain paper modules up to float
rounding on a tiny random SAM 2, and wired into Sam2Predictor and Sam2MaskGenerator."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segany.amg.sam2_generator import Sam2MaskGenerator
from segany.models.sam2 import Sam2, build_sam2
from segany.models.sam2.mask_decoder import stability_scores
from segany.predict.fast_decoder import PROMPT_CHUNK, FastMaskDecoder
from segany.predict.runtime import Sam2Runtime
from segany.predict.sam2_predictor import Sam2Predictor
from test_sam2_predictor import tiny_random_sam2

BATCH = 2 * PROMPT_CHUNK + 1  # several prompt chunks and a partial one


@pytest.fixture(scope="module")
def model() -> Sam2:
    return tiny_random_sam2()


@pytest.fixture(scope="module")
def plain_sam1_like(model: Sam2) -> Sam2:
    """The same tiny SAM 2 without high-res skips, object-score token or sigmoid IoU."""
    config = dataclasses.replace(model.config, use_high_res_features_in_sam=False, pred_obj_scores=False,
                                 pred_obj_scores_mlp=False, fixed_no_obj_ptr=False,
                                 iou_prediction_use_sigmoid=False)
    torch.manual_seed(1)
    return build_sam2(config)


def _features(model: Sam2, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    c, g = model.hidden_dim, model.config.image_embedding_size
    embed = torch.randn(1, c, g, g, generator=generator)
    if not model.use_high_res_features_in_sam:
        return embed, []
    return embed, [torch.randn(1, c // 8, 4 * g, 4 * g, generator=generator),
                   torch.randn(1, c // 4, 2 * g, 2 * g, generator=generator)]


def _prompts(model: Sam2, batch: int, seed: int, boxes: bool = False, masks: bool = False):
    generator = torch.Generator().manual_seed(seed)
    size, low = model.image_size, 4 * model.config.image_embedding_size
    coords = torch.rand(batch, 2, 2, generator=generator) * size
    labels = torch.randint(0, 2, (batch, 2), generator=generator, dtype=torch.int)
    box = torch.sort(torch.rand(batch, 2, 2, generator=generator) * size, dim=1).values.reshape(batch, 4) if boxes else None
    mask = 8 * torch.randn(batch, 1, low, low, generator=generator) if masks else None
    return coords, labels, box, mask


def _close(ours: torch.Tensor, plain: torch.Tensor, rel: float = 1e-4) -> bool:
    return ours.shape == plain.shape and bool((ours - plain).abs().max() <= rel * plain.abs().max())


@pytest.mark.parametrize("variant", ["model", "plain_sam1_like"])
@pytest.mark.parametrize("boxes, masks", [(False, False), (True, False), (False, True), (True, True)])
def test_fast_sam2_decoder_equals_the_plain_decoder(request, variant: str, boxes: bool, masks: bool) -> None:
    """All four tokens' logits, the (sigmoid) IoUs and the object scores of many prompts (points,
    boxes + points, with and without mask input), with and without the shared image work."""
    model = request.getfixturevalue(variant)
    decoder = model.sam_mask_decoder
    fast = FastMaskDecoder(decoder, model.sam_prompt_encoder)
    embed, high_res = _features(model, 3)
    coords, labels, box, mask = _prompts(model, BATCH, 4, boxes, masks)
    with torch.inference_mode():
        sparse, dense = model.encode_prompts(coords, labels, box, mask)
        pe = model.sam_prompt_encoder.get_dense_pe()
        plain, plain_iou, _, plain_scores = decoder.predict_masks(embed, pe, sparse, dense, repeat_image=True,
                                                                  high_res_features=high_res or None)
        skips = fast.share_high_res(high_res)
        outputs = [fast.decode(embed, pe, sparse, dense, skips=skips)]
        if not masks:
            shared = fast.share_image(embed, pe, dense)
            outputs.append(fast.decode(embed, pe, sparse, dense, shared=shared, skips=skips))
    assert (skips is None) == (variant == "plain_sam1_like")
    assert plain.shape == (BATCH, 4, 4 * embed.shape[-1], 4 * embed.shape[-1])
    for ours, ours_iou, ours_scores in outputs:
        assert _close(ours, plain)
        assert torch.allclose(ours_iou, plain_iou, atol=1e-5)
        if decoder.pred_obj_scores:
            assert torch.allclose(ours_scores, plain_scores, atol=1e-5)
        else:
            assert ours_scores is None
    if decoder.iou_prediction_use_sigmoid:
        assert bool(((plain_iou > 0) & (plain_iou < 1)).all())


@pytest.mark.parametrize("multimask", [True, False])
def test_fast_sam2_selection_and_dynamic_fallback_equal_the_plain_forward(model: Sam2, monkeypatch,
                                                                          multimask: bool) -> None:
    """``multimask_output`` picks tokens 1-3; without it the single mask falls back to the best
    multimask output where it is unstable. The threshold is set so that both cases occur."""
    decoder = model.sam_mask_decoder
    assert decoder.dynamic_multimask_via_stability
    fast = FastMaskDecoder(decoder, model.sam_prompt_encoder)
    embed, high_res = _features(model, 5)
    coords, labels, _, _ = _prompts(model, BATCH, 6)
    with torch.inference_mode():
        sparse, dense = model.encode_prompts(coords, labels)
        pe = model.sam_prompt_encoder.get_dense_pe()
        every, _, _, _ = decoder.predict_masks(embed, pe, sparse, dense, repeat_image=True, high_res_features=high_res)
        stability = stability_scores(every[:, 0], decoder.dynamic_multimask_stability_delta)
        monkeypatch.setattr(decoder, "dynamic_multimask_stability_thresh", float(stability.median()))
        plain, plain_iou, _, _ = decoder(embed, pe, sparse, dense, multimask, repeat_image=True, high_res_features=high_res)
        ours, ours_iou = fast(embed, pe, sparse, dense, multimask, skips=fast.share_high_res(high_res))
    stable = decoder.is_stable(every[:, :1])[:, 0]
    assert multimask or (stable.any() and not stable.all())
    assert ours.shape == plain.shape == (BATCH, 3 if multimask else 1, *every.shape[-2:])
    assert _close(ours, plain) and torch.allclose(ours_iou, plain_iou, atol=1e-5)


def _plain_predict(predictor: Sam2Predictor, img_idx: int, coords, labels, boxes, mask, multimask: bool):
    """The plain path: Sam2.decode_prompts on the predictor's features, resized as the official code."""
    features = predictor._features
    embed = features["image_embed"][img_idx].unsqueeze(0)
    high_res = [level[img_idx].unsqueeze(0) for level in features["high_res_feats"]]
    with torch.inference_mode():
        low, iou = predictor.model.decode_prompts(embed, high_res, coords, labels, boxes, mask, multimask)
        logits = F.interpolate(low, predictor._orig_hw[img_idx], mode="bilinear", align_corners=False)
    return logits, iou, low


def test_predictor_decodes_on_the_fast_path_with_the_plain_results(model: Sam2) -> None:
    """predict (one point, several boxes, a mask input) equals the plain modules' output, also after
    another image replaced the cached per-image work."""
    rng = np.random.default_rng(7)
    first, second = (rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((50, 70, 3), (64, 40, 3)))
    predictor = Sam2Predictor(model)
    for image in (first, second):
        predictor.set_image(image)
        h, w = image.shape[:2]
        point, label = np.array([[w / 3, h / 2]]), np.array([1])
        boxes = np.array([[1, 2, w / 2, h - 3], [0, 0, w - 1, h - 1], [w / 4, h / 4, w / 2, h / 2]])
        logits, iou, low = predictor.predict(point, label, return_logits=True)
        masks, _, _ = predictor.predict(point, label)
        coords, labels, box_t, _ = predictor._prep_prompts(point, label, None, None, True)
        ref_logits, ref_iou, ref_low = _plain_predict(predictor, -1, coords, labels, None, None, True)
        assert _close(torch.from_numpy(low), ref_low[0].clamp(-32, 32)) and np.allclose(iou, ref_iou[0], atol=1e-5)
        assert _close(torch.from_numpy(logits), ref_logits[0], rel=1e-3)
        assert masks.dtype == np.float32 and np.array_equal(masks > 0, logits > 0)
        many, many_iou, _ = predictor.predict(box=boxes, multimask_output=False, return_logits=True)
        _, _, box_t, _ = predictor._prep_prompts(None, None, boxes, None, True)
        ref_many, ref_many_iou, _ = _plain_predict(predictor, -1, None, None, box_t, None, False)
        assert _close(torch.from_numpy(many), ref_many, rel=1e-3) and np.allclose(many_iou, ref_many_iou, atol=1e-5)
        mask_input = low[np.argmax(iou)][None]
        refined, refined_iou, _ = predictor.predict(point, label, mask_input=mask_input, multimask_output=False,
                                                    return_logits=True)
        mask_t = torch.from_numpy(mask_input)[None]
        ref_refined, ref_refined_iou, _ = _plain_predict(predictor, -1, coords, labels, None, mask_t, False)
        assert _close(torch.from_numpy(refined), ref_refined[0], rel=1e-3)
        assert np.allclose(refined_iou, ref_refined_iou[0], atol=1e-5)


def test_predict_batch_uses_each_images_own_features(model: Sam2) -> None:
    """The per-image work kept by the runtime belongs to one image of a batch, not to the batch."""
    rng = np.random.default_rng(8)
    images = [rng.integers(0, 256, (48, 60, 3), dtype=np.uint8), rng.integers(0, 256, (60, 48, 3), dtype=np.uint8)]
    predictor = Sam2Predictor(model)
    predictor.set_image_batch(images)
    points = [np.array([[20.0, 10.0]]), np.array([[30.0, 40.0]])]
    labels = [np.array([1]), np.array([1])]
    _, ious, lows = predictor.predict_batch(points, labels)
    for index in range(2):
        coords, label_t, _, _ = predictor._prep_prompts(points[index], labels[index], None, None, True, index)
        _, ref_iou, ref_low = _plain_predict(predictor, index, coords, label_t, None, None, True)
        assert _close(torch.from_numpy(lows[index]), ref_low[0].clamp(-32, 32))
        assert np.allclose(ious[index], ref_iou[0], atol=1e-5)
    assert not np.allclose(lows[0], lows[1])


def test_upscale_logits_one_plane_per_mask_equals_the_batched_resize(model: Sam2) -> None:
    predictor = Sam2Predictor(model)
    predictor.set_image(np.zeros((37, 53, 3), dtype=np.uint8))
    low = 10 * torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    ours = predictor.upscale_logits(low)
    reference = F.interpolate(low, (37, 53), mode="bilinear", align_corners=False)
    assert ours.shape == (2, 3, 37, 53) and torch.allclose(ours, reference, rtol=0, atol=1e-5)


def test_generator_runs_on_the_fast_path(model: Sam2, monkeypatch) -> None:
    """Segment-everything decodes its point batches through the fast decoder, same records as the plain path."""
    image = np.random.default_rng(10).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    options = {"points_per_side": 4, "points_per_batch": 6, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    fast = Sam2MaskGenerator(model, **options).generate(image)
    calls = []
    original = FastMaskDecoder.decode
    monkeypatch.setattr(FastMaskDecoder, "decode", lambda *a, **k: calls.append(1) or original(*a, **k))
    assert len(Sam2MaskGenerator(model, **options).generate(image)) == len(fast) and calls

    def plain_decode(self, embeddings, high_res, img_idx, coords, labels, boxes, mask, multimask):
        embed = embeddings[img_idx].unsqueeze(0)
        return self.model.decode_prompts(embed, [h[img_idx].unsqueeze(0) for h in high_res], coords, labels,
                                         boxes, mask, multimask)

    monkeypatch.setattr("segany.predict.runtime.Sam2Runtime.decode", plain_decode)
    plain = Sam2MaskGenerator(model, **options).generate(image)
    assert len(plain) == len(fast) > 0
    for ours, ref in zip(fast, plain):
        assert abs(ours["predicted_iou"] - ref["predicted_iou"]) < 1e-5
        assert np.array_equal(ours["segmentation"], ref["segmentation"])


def test_runtime_encoder_equals_image_features_and_follows_the_position_parameters() -> None:
    """The runtime's encoder pass (position embedding kept per input size, no neck position
    encodings) gives ``Sam2.image_features``; an in-place change of the position parameters is seen."""
    model = tiny_random_sam2()
    runtime = Sam2Runtime(model)
    images = torch.randn(1, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(11))
    with torch.inference_mode():
        outputs = [runtime.encode(images), runtime.encode(images)]  # the second from the kept embedding
        reference = model.image_features(images)
    with torch.no_grad():
        pos_embed = model.image_encoder.trunk.pos_embed
        pos_embed.add_(torch.randn(pos_embed.shape, generator=torch.Generator().manual_seed(13)))
    with torch.inference_mode():
        changed, changed_reference = runtime.encode(images), model.image_features(images)
    for (embed, high_res), (ref_embed, ref_high_res) in (*((out, reference) for out in outputs),
                                                         (changed, changed_reference)):
        assert len(high_res) == 2 and torch.allclose(embed, ref_embed, atol=1e-5)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(high_res, ref_high_res))
    assert not torch.allclose(changed[0], outputs[0][0], atol=1e-3)


def test_bf16_runtime_casts_a_copy_of_the_encoder_once(model: Sam2) -> None:
    runtime = Sam2Runtime(model, dtype="bf16")
    assert runtime._encoder is not model.image_encoder
    assert {p.dtype for p in runtime._encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.image_encoder.parameters()} == {torch.float32}
    images = torch.randn(1, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(12))
    with torch.inference_mode():
        embed, high_res = runtime.encode(images)
        ref_embed, _ = model.image_features(images)
    assert embed.dtype == torch.float32 and all(level.dtype == torch.float32 for level in high_res)
    assert float((embed - ref_embed).norm() / ref_embed.norm()) < 0.05


def test_hiera_mlp_runs_linear_and_gelu_as_one_kernel_under_inference_mode(model: Sam2) -> None:
    from torch.profiler import profile

    mlp = model.image_encoder.trunk.blocks[0].mlp
    x = torch.randn(2, 4, 4, mlp.layers[0].in_features)
    plain = mlp.layers[1](F.gelu(mlp.layers[0](x)))
    with torch.inference_mode(), profile() as prof:
        fused = mlp(x)
    names = {event.key for event in prof.key_averages()}
    if torch.backends.mkldnn.is_available():
        assert "mkldnn::_linear_pointwise" in names and "aten::gelu" not in names
    assert torch.allclose(fused, plain, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_mask_layout_moves_pairs_with_the_same_bits(dtype: torch.dtype) -> None:
    """The upscaling's (y, x, kh1, kw1, kh2, kw2) order → images, by the paired fast move (float32,
    bfloat16) or the plain permutation (other item sizes): both equal the reference permutation."""
    from segany.predict.fast_decoder import _to_image_layout

    n, masks, h, w = 2, 3, 5, 7
    values = torch.randn(n, masks, h * w * 16, generator=torch.Generator().manual_seed(14)).to(dtype)
    reference = values.view(n, masks, h, w, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7).reshape(n, masks, 4 * h, 4 * w)
    moved = _to_image_layout(values, h, w)
    assert moved.dtype == dtype and torch.equal(moved, reference)
