"""The fast paths and the reduced-precision options: the inference decoder (segany.fast_decoder)
equals the plain paper decoder (segany.models), exactness of the rearranged float32 computations,
tolerances of bf16 / int8, and option errors (no timing). Tiny random models: no shared folder."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segany import Predictor
from segany.errors import BackendError
from segany.models.transformer import Attention
from segany.predict import fast_decoder
from segany.predict.fast_decoder import FastMaskDecoder
from tiny_models import synthetic_image


def _reference_attention(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The official formula, step by step."""
    batch = max(q.shape[0], k.shape[0])
    q, k, v = (x.expand(batch, -1, -1) for x in (attn.q_proj(q), attn.k_proj(k), attn.v_proj(v)))

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(batch, x.shape[1], attn.num_heads, -1).transpose(1, 2)

    q, k, v = heads(q), heads(k), heads(v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return attn.out_proj((weights @ v).transpose(1, 2).reshape(batch, -1, attn.internal_dim))


@pytest.mark.parametrize(
    "batch_q, num_q, batch_k, num_k",
    [(1, 7, 1, 4096), (5, 7, 1, 4096), (1, 4096, 5, 7), (5, 300, 5, 7), (5, 7, 5, 300), (5, 7, 5, 7), (5, 300, 1, 7)],
)
def test_attention_orders_agree(batch_q: int, num_q: int, batch_k: int, num_k: int) -> None:
    torch.manual_seed(0)
    attn = Attention(256, 8, downsample_rate=2)
    for parameter in attn.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    q, k, v = torch.randn(batch_q, num_q, 256), torch.randn(batch_k, num_k, 256), torch.randn(batch_k, num_k, 256)
    with torch.no_grad():
        expected = _reference_attention(attn, q, k, v)
        orders = (attn, lambda q, k, v: fast_decoder.few_queries(attn, q, k, v), lambda q, k, v: fast_decoder.few_keys(attn, q, k, v))
        for order in orders:
            out = order(q, k, v)
            assert out.shape == expected.shape
            assert (out - expected).abs().max() <= 1e-4 * expected.abs().max()
        residual = torch.randn(expected.shape[0] if batch_q == 1 else 1, num_q, 256)
        with_residual = fast_decoder.attention(attn, q, k, v, residual=residual)
        assert (with_residual - (expected + residual)).abs().max() <= 1e-4 * expected.abs().max()
        if batch_k == 1:  # the image's projections prepared once, as SharedImageTokens holds them
            keys, values = fast_decoder.project(attn, attn.k_proj, k), fast_decoder.project(attn, attn.v_proj, v)
            shared = fast_decoder.attend_projected(attn, q, keys, values)
            assert (shared - expected).abs().max() <= 1e-4 * expected.abs().max()
        if batch_q == 1 and num_q > num_k:  # shared image tokens reading each prompt's few tokens
            read = fast_decoder.read_few(attn, fast_decoder.scaled_queries(attn, q), k, v, residual=q)
            assert read.shape == (batch_k, num_q, 256)
            assert (read - (expected + q)).abs().max() <= 1e-4 * expected.abs().max()


def test_attention_picks_the_cheap_order() -> None:
    attn = Attention(256, 8, downsample_rate=2)
    assert fast_decoder.plan(attn, 1, 7, 1, 4096) == "few_queries"  # one prompt reading the image
    assert fast_decoder.plan(attn, 64, 7, 1, 4096) == "standard"  # many prompts share one image projection
    assert fast_decoder.plan(attn, 1, 4096, 64, 7) == "few_keys"  # image tokens reading each prompt's tokens


def _official_postprocess(
    masks: torch.Tensor, size: int, input_size: tuple[int, int], original_size: tuple[int, int]
) -> torch.Tensor:
    masks = F.interpolate(masks, (size, size), mode="bilinear", align_corners=False)
    masks = masks[..., : input_size[0], : input_size[1]]
    return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)


@pytest.mark.parametrize(
    "input_size, original_size",
    [((768, 1024), (768, 1024)), ((768, 1024), (480, 640)), ((715, 1024), (37, 53)), ((1024, 683), (3000, 2000)),
     ((1024, 1024), (1024, 1024)), ((767, 1024), (767, 1024)), ((1, 1024), (1, 2000))],
)
def test_mask_upsampling_is_bitwise_official(random_sam_1024, input_size: tuple[int, int], original_size: tuple[int, int]) -> None:
    logits = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1)) * 10
    ours = random_sam_1024.postprocess_masks(logits, input_size, original_size)
    assert torch.equal(ours, _official_postprocess(logits, 1024, input_size, original_size))


@pytest.mark.parametrize("input_size, original_size", [((96, 128), (37, 53)), ((128, 85), (300, 200)), ((128, 128), (128, 128))])
def test_mask_upsampling_follows_the_model_geometry(tiny_random_sam, input_size, original_size) -> None:
    low = tiny_random_sam.config.low_res_size
    logits = torch.randn(1, 3, low, low, generator=torch.Generator().manual_seed(2)) * 10
    ours = tiny_random_sam.postprocess_masks(logits, input_size, original_size)
    assert torch.equal(ours, _official_postprocess(logits, tiny_random_sam.image_size, input_size, original_size))


def _decoder_inputs(model, batch: int, tokens: int, mask_input: bool = False) -> tuple[torch.Tensor, ...]:
    config = model.config
    grid, dim = config.embedding_size, config.prompt_embed_dim
    generator = torch.Generator().manual_seed(batch)
    sparse = torch.randn(batch, tokens, dim, generator=generator)
    if mask_input:
        dense = torch.randn(batch, dim, grid, grid, generator=generator)
    else:
        dense = model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, grid, grid)
    embedding = torch.randn(1, dim, grid, grid, generator=generator)
    return embedding, model.prompt_encoder.get_dense_pe(), sparse, dense


def _close(ours: torch.Tensor, plain: torch.Tensor, rel: float = 1e-4) -> bool:
    return ours.shape == plain.shape and bool((ours - plain).abs().max() <= rel * plain.abs().max())


@pytest.mark.parametrize("model_name", ["tiny_random_sam", "random_sam_1024"])
def test_selected_mask_tokens_equal_the_full_output(request, model_name: str) -> None:
    model = request.getfixturevalue(model_name)
    embedding, pe, sparse, dense = _decoder_inputs(model, 3, 4)
    fast = FastMaskDecoder(model.mask_decoder, model.prompt_encoder)
    low = model.config.low_res_size
    with torch.inference_mode():
        masks, iou = model.mask_decoder.predict_masks(embedding, pe, sparse, dense)
        multi, multi_iou = model.mask_decoder(embedding, pe, sparse, dense, multimask_output=True)
        single, single_iou = model.mask_decoder(embedding, pe, sparse, dense, multimask_output=False)
        fast_multi, fast_multi_iou = fast(embedding, pe, sparse, dense, multimask_output=True)
    assert masks.shape == (3, 4, low, low)
    assert torch.equal(multi, masks[:, 1:]) and torch.equal(single, masks[:, :1])
    assert torch.equal(multi_iou, iou[:, 1:]) and torch.equal(single_iou, iou[:, :1])
    assert _close(fast_multi, multi) and torch.allclose(fast_multi_iou, multi_iou, atol=1e-5)


@pytest.mark.parametrize("model_name", ["tiny_random_sam", "random_sam_1024"])
def test_fast_decoder_equals_the_plain_decoder(request, model_name: str) -> None:
    """The inference decoder (shared image tokens reused across prompt batches, chunks of 4 prompts
    inside a larger batch, attention orders, matmul upscaling) gives the plain paper decoder's
    output up to float rounding; with per-prompt mask inputs too."""
    model = request.getfixturevalue(model_name)
    fast = FastMaskDecoder(model.mask_decoder, model.prompt_encoder)
    batch = 9 if model.config.embedding_size < 64 else 5  # the real size is slow in the plain path
    embedding, pe, sparse, dense = _decoder_inputs(model, batch, 2)
    with torch.inference_mode():
        assert torch.equal(fast.dense_pe(), pe)
        shared = fast.share_image(embedding, pe, dense)
        plain, plain_iou = model.mask_decoder.predict_masks(embedding, pe, sparse, dense)
        unshared, unshared_iou = fast.predict_masks(embedding, pe, sparse, dense)
        reused, reused_iou = fast.predict_masks(embedding, pe, sparse, dense, shared=shared)
        one, one_iou = fast.predict_masks(embedding, pe, sparse[4:5], dense[:1], shared=shared)
        _, _, masked_sparse, masked_dense = _decoder_inputs(model, batch - 3, 3, mask_input=True)
        masked, masked_iou = fast.predict_masks(embedding, pe, masked_sparse, masked_dense)
        plain_masked, plain_masked_iou = model.mask_decoder.predict_masks(embedding, pe, masked_sparse, masked_dense)
    assert plain.shape[0] == batch
    for ours, ours_iou in ((unshared, unshared_iou), (reused, reused_iou)):
        assert _close(ours, plain) and (ours_iou - plain_iou).abs().max() <= 1e-5
    assert _close(one[0], plain[4]) and torch.allclose(one_iou[0], plain_iou[4], atol=1e-5)
    assert _close(masked, plain_masked) and torch.allclose(masked_iou, plain_masked_iou, atol=1e-5)


def test_predictor_runs_the_fast_decoder_with_the_plain_results(tiny_random_sam, synthetic_small) -> None:
    """End to end: the predictor's logits equal the plain modules' on the same prompts."""
    predictor = Predictor(tiny_random_sam)
    predictor.set_image(synthetic_small)
    coords = predictor.transform.apply_coords_torch(torch.tensor([[[10.0, 12.0]], [[40.0, 30.0]]]), (37, 53))
    labels = torch.ones(2, 1, dtype=torch.int)
    _, iou, low_res = predictor.predict_torch(coords, labels, multimask_output=True)
    with torch.inference_mode():
        sparse, dense = tiny_random_sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        plain, plain_iou = tiny_random_sam.mask_decoder(
            predictor.get_image_embedding(), tiny_random_sam.prompt_encoder.get_dense_pe(), sparse, dense, True
        )
    assert _close(low_res, plain) and torch.allclose(iou, plain_iou, atol=1e-5)


def _mask_ious(masks: np.ndarray, reference: np.ndarray) -> list[float]:
    return [float((m & r).sum() / max(1, (m | r).sum())) for m, r in zip(masks, reference)]


# Tolerances calibrated on the golden tiny SAM (trained-like logits) and photo; the tiny random SAM
# on a synthetic image of the photo's size runs the same checks without the shared folder.
@pytest.fixture(scope="module", params=["tiny_random_sam", "tiny_sam"])
def reference(request: pytest.FixtureRequest) -> tuple[Predictor, np.ndarray]:
    """A float32 predictor holding its image: the tiny random SAM on a synthetic 480x640 image, or
    the golden tiny SAM on the golden photo (skips without the shared folder)."""
    model = request.getfixturevalue(request.param)
    image = synthetic_image(480, 640, seed=3) if request.param == "tiny_random_sam" else request.getfixturevalue("photo")
    predictor = Predictor(model)
    predictor.set_image(image)
    return predictor, image


PROMPT = {"point_coords": np.array([[315.0, 230.0], [120.0, 400.0]]), "point_labels": np.array([1, 0])}


@pytest.mark.parametrize(
    "options, embed_rel, min_mask_iou, iou_tol",
    [
        ({"dtype": torch.bfloat16}, 0.02, 0.93, 2e-3),
        ({"dtype": "bf16", "decoder_dtype": "bf16"}, 0.02, 0.9, 5e-3),
        ({"quantize": "int8"}, 0.1, 0.85, 5e-3),
    ],
)
def test_reduced_precision_within_tolerance(
    reference: tuple[Predictor, np.ndarray], options: dict, embed_rel: float, min_mask_iou: float, iou_tol: float
) -> None:
    reference_predictor, image = reference
    predictor = Predictor(reference_predictor.model, **options)
    predictor.set_image(image)
    features, expected = predictor.get_image_embedding(), reference_predictor.get_image_embedding()
    assert features.dtype == torch.float32
    assert 0 < ((features - expected).norm() / expected.norm()).item() <= embed_rel  # reduced, and close
    masks, iou, low_res = predictor.predict(**PROMPT)
    ref_masks, ref_iou, _ = reference_predictor.predict(**PROMPT)
    assert low_res.dtype == np.float32 and masks.dtype == bool
    assert min(_mask_ious(masks, ref_masks)) >= min_mask_iou
    assert np.abs(iou - ref_iou).max() <= iou_tol


def test_quantization_leaves_the_model_untouched(tiny_random_sam) -> None:
    before = {k: v.clone() for k, v in tiny_random_sam.state_dict().items()}
    Predictor(tiny_random_sam, quantize="int8")
    assert isinstance(tiny_random_sam.image_encoder.blocks[0].attn.qkv, torch.nn.Linear)
    assert all(torch.equal(before[k], v) for k, v in tiny_random_sam.state_dict().items())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"dtype": torch.float16}, "float16 needs a CUDA device"),
        ({"dtype": "float8"}, "unknown dtype"),
        ({"dtype": torch.int8}, "dtype must be"),
        ({"quantize": "int4"}, "quantize must be"),
        ({"quantize": "int8", "dtype": torch.bfloat16}, "leave dtype at float32"),
        ({"backend": "tensorrt"}, "backend must be"),
        ({"onnx_dir": "somewhere"}, "only used with backend='onnxruntime'"),
    ],
)
def test_bad_options_are_refused(tiny_random_sam, options: dict, message: str) -> None:
    with pytest.raises(BackendError, match=message):
        Predictor(tiny_random_sam, **options)


@pytest.mark.parametrize("act", [torch.nn.GELU(), torch.nn.ReLU()])
def test_fused_linear_and_conv_match_the_plain_ops(act: torch.nn.Module) -> None:
    from segany.models.fused import conv_act, linear_act

    torch.manual_seed(0)
    linear, x = torch.nn.Linear(96, 384), torch.randn(2, 8, 8, 96)
    conv = torch.nn.Conv2d(32, 32, 3, padding=1, groups=32)
    image = torch.randn(1, 32, 20, 20).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.allclose(linear_act(x, linear, act), act(linear(x)), atol=1e-5)
        fused = conv_act(image, conv.weight, conv.bias, conv, act)
        assert fused.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(fused, act(conv(image)), atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = linear_act(x, linear, act)
        assert low.dtype == torch.bfloat16 and torch.allclose(low.float(), act(linear(x)), atol=0.05)
    trained = linear_act(x.requires_grad_(), linear, act)  # autograd: the plain ops
    trained.sum().backward()
    assert x.grad is not None and linear.weight.grad is not None


def test_narrow_linear_matches_the_plain_layer() -> None:
    """``fused.linear``: a narrow layer through oneDNN equals ``nn.Linear``; wide layers, other
    modules and autograd take the layer itself."""
    from segany.models import fused

    torch.manual_seed(0)
    x = torch.randn(2, 16, 16, 32)
    narrow, wide = torch.nn.Linear(32, 96), torch.nn.Linear(fused.NARROW + 1, 8)
    with torch.inference_mode():
        assert torch.allclose(fused.linear(x, narrow), narrow(x), atol=1e-5)
        wide_x = torch.randn(4, fused.NARROW + 1)
        assert torch.equal(fused.linear(wide_x, wide), wide(wide_x))
        assert torch.equal(fused.linear(x, torch.nn.Identity()), x)
    trained = fused.linear(x.requires_grad_(), narrow)
    trained.sum().backward()
    assert x.grad is not None and narrow.weight.grad is not None
