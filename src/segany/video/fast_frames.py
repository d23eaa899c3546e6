"""Inference fast path of ``Sam2.frame_features`` for video frames, with the same answers up to
float rounding (tests/test_video_fast.py compares it with the plain path).

SAM 2's two high-resolution maps go through two 1x1 convolutions in a row: the FPN neck's
lateral projection of the trunk's stride-4 / stride-8 stage to ``d_model`` (256) channels, then
the mask decoder's ``conv_s0`` / ``conv_s1`` down to 32 / 64. Those levels take no top-down
input, and their position encodings are not used by the tracker, so the pair is one affine map
``(W_s W_lateral) x + (W_s b_lateral + b_s)`` of the trunk's channels: computed directly on the
trunk's channels-last output, it skips the 256-channel maps at 4x and 2x the stride-16 resolution
(the largest tensors of a frame) and 8x the multiply-adds of those levels. The coarser levels
run through the neck as usual; the trunk gets its position embedding from the image path's cache.
With a bfloat16 runtime the trunk and neck run its bf16 copy of the encoder (weights cast once) and
the features come back in float32; the folded projections stay float32.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models.encoders.hiera import Sam2ImageEncoder
from ..models.sam2 import FrameFeatures, Sam2
from ..predict.fast_decoder import values_key
from ..predict.runtime import Sam2Runtime

FOLDED_LEVELS = 2  # the stride-4 and stride-8 levels (conv_s0, conv_s1)


def _pointwise(conv: nn.Module) -> nn.Conv2d | None:
    """The 1x1 convolution a neck lateral (a Sequential of one conv) or a projection is, else None."""
    if isinstance(conv, nn.Sequential) and len(conv) == 1:
        conv = conv[0]
    if type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1 \
            and conv.padding in ((0, 0), "valid"):
        return conv
    return None


def frame_features_in(model: Sam2, image: torch.Tensor, dtype: torch.dtype,
                      pos_embed: torch.Tensor | None = None) -> FrameFeatures:
    """The plain ``model.frame_features`` of a (1, 3, S, S) float32 frame, under ``torch.autocast``
    in ``dtype`` unless it is float32, returned in float32."""
    with torch.autocast(image.device.type, dtype=dtype, enabled=dtype != torch.float32):
        features = model.frame_features(image) if pos_embed is None else model.frame_features(image, pos_embed)
    return FrameFeatures(features.vision_feats.float(), features.vision_pos.float(), [f.float() for f in features.high_res])


class FrameEncoder:
    """``model.frame_features`` of a frame with the high-resolution projections folded into the
    lateral ones (see the module docstring); falls back to the plain path for encoders or
    configurations it does not cover."""

    def __init__(self, model: Sam2, runtime: Sam2Runtime) -> None:
        self.model = model
        self.runtime = runtime
        self._folded: tuple[tuple, list[tuple[torch.Tensor, torch.Tensor]]] | None = None
        self.pairs = self._pairs()

    def _pairs(self) -> list[tuple[nn.Conv2d, nn.Conv2d]] | None:
        """The (lateral, projection) convolutions of the folded levels, or None where folding does
        not give the plain answers (no high-res features, top-down input, other layouts)."""
        model, encoder = self.model, self.model.image_encoder
        if not (isinstance(encoder, Sam2ImageEncoder) and model.use_high_res_features_in_sam):
            return None
        neck = encoder.neck
        n = len(neck.convs) - 1
        if len(neck.convs) - encoder.scalp != model.num_feature_levels or model.num_feature_levels != FOLDED_LEVELS + 1:
            return None
        if any(level in neck.fpn_top_down_levels for level in range(FOLDED_LEVELS)):
            return None
        decoder = model.sam_mask_decoder
        pairs = [(_pointwise(neck.convs[n - level]), _pointwise(proj))
                 for level, proj in enumerate((decoder.conv_s0, decoder.conv_s1))]
        return None if any(a is None or b is None for a, b in pairs) else pairs

    def _folded_weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per folded level: the (out, in) weight and (out,) bias of projection after lateral."""
        tensors = [t for pair in self.pairs for conv in pair for t in (conv.weight, conv.bias)]
        key = values_key(*tensors)
        if key is not None and self._folded is not None and self._folded[0] == key:
            return self._folded[1]
        folded = []
        for lateral, proj in self.pairs:
            w_l, w_p = lateral.weight[:, :, 0, 0], proj.weight[:, :, 0, 0]
            folded.append((w_p @ w_l, w_p @ lateral.bias + proj.bias))
        if key is not None:
            self._folded = (key, folded)
        return folded

    def __call__(self, image: torch.Tensor) -> FrameFeatures:
        """float32 :class:`FrameFeatures` of one normalised (1, 3, S, S) float32 frame."""
        model, plain = self.model, self.model.image_encoder
        if not isinstance(plain, Sam2ImageEncoder) or self.pairs is None:
            pos_embed = self.runtime.trunk_pos_embed(plain.trunk, image) if isinstance(plain, Sam2ImageEncoder) else None
            return frame_features_in(model, image, self.runtime.dtype, pos_embed)
        encoder = self.runtime.encoder
        image = image.to(self.runtime.dtype)
        stages = encoder.trunk(image, self.runtime.trunk_pos_embed(encoder.trunk, image))
        levels, pos = encoder.neck(stages, positions=True, finest=FOLDED_LEVELS)
        # (out, C) @ the stage's (C, HW) channels-last view (a transposed operand, not copied): NCHW out
        high_res = [(weight @ stage.flatten(2).float()).add_(bias[:, None]).view(stage.shape[0], -1, *stage.shape[2:])
                    for stage, (weight, bias) in zip(stages, self._folded_weights())]
        return FrameFeatures(levels[FOLDED_LEVELS].float(), pos[FOLDED_LEVELS].float(), high_res)
