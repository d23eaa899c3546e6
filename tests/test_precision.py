"""The fast paths and the reduced-precision options: exactness of the rearranged float32
computations, tolerances of bf16 / int8 on the golden tiny SAM, and option errors (no timing)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segany import Predictor
from segany.errors import BackendError
from segany.models.sam import Sam
from segany.models.transformer import Attention


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
        for order in (attn._standard, attn._few_queries, lambda q, k, v: attn._few_keys(q, k, v, None)):
            out = order(q, k, v)
            assert out.shape == expected.shape
            assert (out - expected).abs().max() <= 1e-4 * expected.abs().max()
        residual = torch.randn(expected.shape[0] if batch_q == 1 else 1, num_q, 256)
        with_residual = attn(q, k, v, residual=residual)
        assert (with_residual - (expected + residual)).abs().max() <= 1e-4 * expected.abs().max()
        if batch_k == 1:  # the image's projections prepared once, as SharedImageTokens holds them
            shared = attn.attend_projected(q, attn.project(attn.k_proj, k), attn.project(attn.v_proj, v))
            assert (shared - expected).abs().max() <= 1e-4 * expected.abs().max()
        if batch_q == 1 and num_q > num_k:  # shared image tokens reading each prompt's few tokens
            read = attn.read_few(attn.scaled_queries(q), k, v, residual=q)
            assert read.shape == (batch_k, num_q, 256)
            assert (read - (expected + q)).abs().max() <= 1e-4 * expected.abs().max()


def test_attention_picks_the_cheap_order() -> None:
    attn = Attention(256, 8, downsample_rate=2)
    assert attn.plan(1, 7, 1, 4096) == "few_queries"  # one prompt reading the image
    assert attn.plan(64, 7, 1, 4096) == "standard"  # many prompts share one image projection
    assert attn.plan(1, 4096, 64, 7) == "few_keys"  # image tokens reading each prompt's tokens


def _official_postprocess(masks: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]) -> torch.Tensor:
    masks = F.interpolate(masks, (1024, 1024), mode="bilinear", align_corners=False)
    masks = masks[..., : input_size[0], : input_size[1]]
    return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)


@pytest.mark.parametrize(
    "input_size, original_size",
    [((768, 1024), (768, 1024)), ((768, 1024), (480, 640)), ((715, 1024), (37, 53)), ((1024, 683), (3000, 2000)),
     ((1024, 1024), (1024, 1024)), ((767, 1024), (767, 1024)), ((1, 1024), (1, 2000))],
)
def test_mask_upsampling_is_bitwise_official(input_size: tuple[int, int], original_size: tuple[int, int]) -> None:
    logits = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1)) * 10
    ours = Sam.postprocess_masks(None, logits, input_size, original_size)  # type: ignore[arg-type]
    assert torch.equal(ours, _official_postprocess(logits, input_size, original_size))


def test_selected_mask_tokens_equal_the_full_output(tiny_sam) -> None:
    torch.manual_seed(0)
    sparse = torch.randn(3, 4, 256)
    dense = tiny_sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(3, -1, 64, 64)
    embedding, pe = torch.randn(1, 256, 64, 64), tiny_sam.prompt_encoder.get_dense_pe()
    with torch.inference_mode():
        masks, iou = tiny_sam.mask_decoder.predict_masks(embedding, pe, sparse, dense)
        multi, multi_iou = tiny_sam.mask_decoder(embedding, pe, sparse, dense, multimask_output=True)
        single, single_iou = tiny_sam.mask_decoder(embedding, pe, sparse, dense, multimask_output=False)
    assert masks.shape == (3, 4, 256, 256)
    assert torch.allclose(multi, masks[:, 1:], atol=1e-5) and torch.allclose(single, masks[:, :1], atol=1e-5)
    assert torch.equal(multi_iou, iou[:, 1:]) and torch.equal(single_iou, iou[:, :1])


def test_shared_image_tokens_give_the_plain_decoder_output(tiny_sam) -> None:
    """The per-image preparation reused across prompt batches (and chunks of 4 prompts inside a
    batch of 9) changes nothing beyond float rounding."""
    torch.manual_seed(0)
    decoder = tiny_sam.mask_decoder
    sparse = torch.randn(9, 2, 256)
    dense = tiny_sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(9, -1, 64, 64)
    embedding, pe = torch.randn(1, 256, 64, 64), tiny_sam.prompt_encoder.get_dense_pe()
    with torch.inference_mode():
        shared = decoder.share_image(embedding, pe, dense)
        plain, plain_iou = decoder.predict_masks(embedding, pe, sparse, dense)
        reused, reused_iou = decoder.predict_masks(embedding, pe, sparse, dense, shared=shared)
        one, one_iou = decoder.predict_masks(embedding, pe, sparse[4:5], dense[:1], shared=shared)
    assert plain.shape == reused.shape == (9, 4, 256, 256)
    assert (plain - reused).abs().max() <= 1e-4 * plain.abs().max()
    assert (plain_iou - reused_iou).abs().max() <= 1e-5
    assert (one[0] - plain[4]).abs().max() <= 1e-4 * plain.abs().max() and torch.allclose(one_iou[0], plain_iou[4], atol=1e-5)


def _mask_ious(masks: np.ndarray, reference: np.ndarray) -> list[float]:
    return [float((m & r).sum() / max(1, (m | r).sum())) for m, r in zip(masks, reference)]


@pytest.fixture(scope="module")
def reference(tiny_sam, photo: np.ndarray) -> Predictor:
    predictor = Predictor(tiny_sam)
    predictor.set_image(photo)
    return predictor


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
    tiny_sam, photo: np.ndarray, reference: Predictor, options: dict, embed_rel: float, min_mask_iou: float, iou_tol: float
) -> None:
    predictor = Predictor(tiny_sam, **options)
    predictor.set_image(photo)
    features, expected = predictor.get_image_embedding(), reference.get_image_embedding()
    assert features.dtype == torch.float32
    assert 0 < ((features - expected).norm() / expected.norm()).item() <= embed_rel  # reduced, and close
    masks, iou, low_res = predictor.predict(**PROMPT)
    ref_masks, ref_iou, _ = reference.predict(**PROMPT)
    assert low_res.dtype == np.float32 and masks.dtype == bool
    assert min(_mask_ious(masks, ref_masks)) >= min_mask_iou
    assert np.abs(iou - ref_iou).max() <= iou_tol


def test_quantization_leaves_the_model_untouched(tiny_sam) -> None:
    before = {k: v.clone() for k, v in tiny_sam.state_dict().items()}
    Predictor(tiny_sam, quantize="int8")
    assert isinstance(tiny_sam.image_encoder.blocks[0].attn.qkv, torch.nn.Linear)
    assert all(torch.equal(before[k], v) for k, v in tiny_sam.state_dict().items())


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
def test_bad_options_are_refused(tiny_sam, options: dict, message: str) -> None:
    with pytest.raises(BackendError, match=message):
        Predictor(tiny_sam, **options)


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
