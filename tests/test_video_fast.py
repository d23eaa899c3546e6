"""The video predictor's fast paths (segany.video.fast_memory, fast_frames) equal the plain
``Sam2.condition_on_memory`` / ``Sam2.frame_features``: directly on random inputs, and over whole
tracking runs of a tiny random SAM 2 (forward, a correction, reverse, two objects)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import torch_threads
from segany.models.sam2 import FrameFeatures, ObjectPointer, Sam2, SpatialMemory, build_sam2
from segany.predict.runtime import Sam2Runtime
from segany.video.fast_frames import FrameEncoder
from segany.video import fast_memory
from segany.video.fast_memory import MemoryConditioner, MemoryKeyCache
from segany.video.fast_memory_encoder import MemoryEncoderFast
from segany.video.sam2_video import Sam2VideoPredictor, video_frame_tensor
from test_sam2_predictor import tiny_random_sam2

TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Many small ops: one thread (two wait for each other on a busy 2-core machine)."""
    with torch_threads(1):
        yield


def _variant(heads: int, keys_pos: bool, **layer: object) -> Sam2:
    """The tiny random SAM 2 with ``heads`` cross-attention heads, two memory-attention layers,
    positions on the cross-attention keys or not, and other ``MemoryAttentionConfig`` fields."""
    base = tiny_random_sam2().config
    att = base.memory_attention
    config = dataclasses.replace(base, memory_attention=dataclasses.replace(
        att, num_layers=2, pos_enc_at_cross_attn_keys=keys_pos,
        cross_attention=dataclasses.replace(att.cross_attention, num_heads=heads), **layer))
    torch.manual_seed(1)
    model = build_sam2(config)
    with torch.no_grad():  # the trained temporal encodings are far from 0: make them matter
        model.maskmem_tpos_enc.normal_(0, 1)
    return model


@pytest.mark.parametrize(("heads", "keys_pos", "layer"), [
    (1, True, {}), (2, False, {}),
    # the layer variants of the in-place layer pass: positions at self-attention (q / k one
    # projection, v another) and at cross-attention queries, a GELU MLP, no positions at the input
    (1, True, {"pos_enc_at_attn": True, "pos_enc_at_cross_attn_queries": True, "activation": "gelu"}),
    (2, True, {"pos_enc_at_input": False}),
])
@pytest.mark.parametrize("tiled", [False, True], ids=["rows", "tiles"])
def test_conditioner_equals_condition_on_memory(heads: int, keys_pos: bool, layer: dict, tiled: bool,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    if tiled:  # the keys in tiles with an online softmax (large memories), here in small tiles
        monkeypatch.setattr(fast_memory, "SCORE_BYTES", 0)
        monkeypatch.setattr(fast_memory, "TILE_QUERIES", 24)
        monkeypatch.setattr(fast_memory, "TILE_KEYS", 40)
    model = _variant(heads, keys_pos, **layer)
    g = torch.Generator().manual_seed(0)
    c, mem_dim, side = model.hidden_dim, model.mem_dim, model.image_size // 16
    features = FrameFeatures(torch.randn(1, c, side, side, generator=g), torch.randn(1, c, side, side, generator=g), [])
    stored = [torch.randn(1, mem_dim, side, side, generator=g).to(torch.bfloat16) for _ in range(4)]
    memory_pos = torch.randn(1, mem_dim, side, side, generator=g)
    pointers = [ObjectPointer(t, torch.randn(1, c, generator=g)) for t in (3, 1, 2)]
    conditioner, cache = MemoryConditioner(model), MemoryKeyCache()
    with torch.inference_mode():
        # stored[0] a conditioning memory (slot 0), then a new tracked memory each frame at slot 6,
        # the older ones moving to slots 5, 4
        for step in range(1, 4):
            memories = [SpatialMemory(stored[0], 0)] + [SpatialMemory(stored[i], 6 - step + i) for i in range(1, step + 1)]
            plain = model.condition_on_memory(features, False, memories, pointers, memory_pos, num_frames=8)
            fast = conditioner.condition(features, memories, pointers, memory_pos, 8, cache)
            assert fast.shape == plain.shape
            assert (fast - plain).abs().max() <= TOL
        assert len(cache) == 4 and cache.computed == 4  # each memory's keys computed once, then reused


@pytest.mark.parametrize("layer_scale", [True, False])
def test_memory_encoder_fast_equals_plain(layer_scale: bool) -> None:
    model = tiny_random_sam2()
    encoder = model.memory_encoder
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # random, not the near-zero initial layer scale / identity norms: make them matter
        for p in encoder.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() == 1 else 0.2))
        if not layer_scale:
            for block in encoder.fuser.layers:
                block.gamma = None
    fast = MemoryEncoderFast(encoder)
    assert fast.covered  # SAM 2.1's layout
    side = model.image_size // 16
    pix = torch.randn(1, model.hidden_dim, side, side, generator=g)
    masks = torch.rand(1, 1, model.image_size, model.image_size, generator=g) * 20 - 10
    with torch.inference_mode():
        plain, got = encoder(pix, masks, skip_mask_sigmoid=True), fast(pix, masks, skip_mask_sigmoid=True)
        frame = FrameFeatures(pix, pix, [])
        mem_plain, _ = model.encode_memory(frame, masks, torch.ones(1, 1), False)
        mem, _ = model.encode_memory(frame, masks, torch.ones(1, 1), False, memory_encoder=fast)
    a, b = got["vision_features"], plain["vision_features"]
    assert a.shape == b.shape and a.is_contiguous()
    assert (a - b).abs().max() <= TOL * max(1.0, float(b.abs().max()))
    assert torch.equal(got["vision_pos_enc"][0], plain["vision_pos_enc"][0])
    assert (mem - mem_plain).abs().max() <= TOL * max(1.0, float(mem_plain.abs().max()))


def test_frame_encoder_equals_frame_features() -> None:
    model = tiny_random_sam2()
    encoder = FrameEncoder(model, Sam2Runtime(model))
    assert encoder.pairs is not None  # SAM 2.1's layout: the two high-res levels are folded
    image = torch.randn(1, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        plain, fast = model.frame_features(image), encoder(image)
        again = encoder(image)  # the folded weights and the position embedding come from the caches
    assert len(fast.high_res) == len(plain.high_res) == 2
    for a, b in zip([fast.vision_feats, fast.vision_pos, *fast.high_res, *again.high_res],
                    [plain.vision_feats, plain.vision_pos, *plain.high_res, *plain.high_res]):
        assert a.shape == b.shape
        assert (a - b).abs().max() <= TOL * max(1.0, float(b.abs().max()))


def test_bf16_frame_encoder_runs_the_cast_copy_and_returns_float32() -> None:
    """dtype=bfloat16: the trunk and neck run the runtime's bf16 copy of the encoder, the features
    come back in float32 within bf16 rounding of the plain float32 ones (and the model stays float32)."""
    model = tiny_random_sam2()
    runtime = Sam2Runtime(model, torch.bfloat16)
    encoder = FrameEncoder(model, runtime)
    assert runtime.encoder is not model.image_encoder and next(runtime.encoder.parameters()).dtype == torch.bfloat16
    image = torch.randn(1, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        plain, cast = model.frame_features(image), encoder(image)
    assert next(model.parameters()).dtype == torch.float32
    assert not torch.equal(cast.vision_feats, plain.vision_feats)  # computed in bf16, not the float32 answers
    for a, b in zip([cast.vision_feats, cast.vision_pos, *cast.high_res], [plain.vision_feats, plain.vision_pos, *plain.high_res]):
        assert a.dtype == torch.float32 and a.shape == b.shape
        assert (a - b).abs().max() <= 0.05 * max(1.0, float(b.abs().max()))  # but within bf16 rounding of them


def _clip(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    frames = []
    for t in range(n):
        frame = rng.integers(0, 60, (40, 56, 3), dtype=np.uint8)
        frame[6 + t % 4:26 + t % 4, 8 + 2 * t:28 + 2 * t] = 230
        frames.append(frame)
    return frames


def _track(predictor: Sam2VideoPredictor, frames: list[np.ndarray]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The logits of a forward pass, a correction and a reverse pass, with the objects' pointers;
    and their (bfloat16) memories."""
    state = predictor.init_state(frames)
    predictor.add_new_points_or_box(state, 0, 1, points=[[18, 15]], labels=[1])
    predictor.add_new_points_or_box(state, 0, 2, box=[0, 0, 30, 20])
    outputs = [logits.clone() for _, _, logits in predictor.propagate_in_video(state)]
    predictor.add_new_points_or_box(state, len(frames) - 1, 1, points=[[40, 20]], labels=[1])
    outputs += [logits.clone() for _, _, logits in predictor.propagate_in_video(state, start_frame_idx=len(frames) - 1,
                                                                                reverse=True)]
    outputs += [obj.output(t).obj_ptr for obj in state.objects for t in range(len(frames))]
    return outputs, [obj.output(t).maskmem_features.float() for obj in state.objects for t in range(len(frames))]


def test_fast_predictor_tracks_like_the_plain_one() -> None:
    model = tiny_random_sam2()
    frames = _clip(10)
    plain = _track(Sam2VideoPredictor(model, fill_hole_area=0, fast=False), frames)
    fast_predictor = Sam2VideoPredictor(model, fill_hole_area=0)
    assert fast_predictor.fast_memory is not None and fast_predictor.frame_encoder.pairs is not None
    fast = _track(fast_predictor, frames)
    assert len(fast[0]) == len(plain[0]) == 10 + 10 + 2 * 10
    for a, b in zip(fast[0], plain[0]):
        assert a.shape == b.shape
        assert (a - b).abs().max() <= TOL * max(1.0, float(b.abs().max()))
    for a, b in zip(fast[1], plain[1]):  # stored in bfloat16: at most one rounding step apart
        assert ((a - b).abs() <= 2**-7 * b.abs() + TOL).all()


def test_propagation_reads_the_next_frame_ahead() -> None:
    """While a frame is tracked, the next one in the propagation order is decoded in the background
    (forward and reverse), and it is the frame's official input tensor."""
    predictor = Sam2VideoPredictor(tiny_random_sam2(), fill_hole_area=0)
    frames = _clip(5)
    state = predictor.init_state(frames)
    predictor.add_new_points_or_box(state, 2, 1, points=[[18, 15]], labels=[1])
    for reverse, expected in ((False, [2, 3, 4]), (True, [2, 1, 0])):
        seen = []
        for frame_idx, _, _ in predictor.propagate_in_video(state, start_frame_idx=2, reverse=reverse):
            seen.append(frame_idx)
            if frame_idx != expected[-1]:
                following = frame_idx + (-1 if reverse else 1)
                assert list(predictor._read) == [following] and predictor._read[following][0] is state
                tensor = predictor._read[following][1].result()
                assert torch.equal(tensor, video_frame_tensor(frames[following], predictor.image_size))
        assert seen == expected
