"""SAM 2's mask decoder: SAM's two-way transformer and hypernetwork heads, plus high-resolution
skip features in the upscaling, an object-score token and head, sigmoid IoU predictions, the
output token chosen for the object pointer, and the dynamic fallback to the best multimask
output when the single mask is unstable.

The two-way transformer and the MLPs are segany's (:mod:`segany.models.transformer`,
:mod:`segany.models.mask_decoder`): the same computation as the official SAM 2 code; only the
transformer MLP's parameter names differ (``mlp.layers.{0,1}`` in SAM 2, ``mlp.lin{1,2}`` in SAM).
"""
from __future__ import annotations

import torch
from torch import nn

from ..common import LayerNorm2d
from ..mask_decoder import MLP
from ..transformer import TwoWayTransformer


def two_way_transformer(depth: int, embedding_dim: int, num_heads: int, mlp_dim: int,
                        attention_downsample_rate: int = 2) -> TwoWayTransformer:
    """SAM's :class:`TwoWayTransformer` with SAM 2's tensor names: each block's ReLU MLP is an
    :class:`MLP` of two layers (``mlp.layers.0`` / ``mlp.layers.1``), the same Linear-ReLU-Linear."""
    transformer = TwoWayTransformer(depth, embedding_dim, num_heads, mlp_dim, attention_downsample_rate)
    for layer in transformer.layers:
        layer.mlp = MLP(embedding_dim, mlp_dim, embedding_dim, 2)
    return transformer


def stability_scores(mask_logits: torch.Tensor, delta: float) -> torch.Tensor:
    """``count(logit > delta) / count(logit > -delta)`` over the last two axes (1 when nothing is above -delta)."""
    flat = mask_logits.flatten(-2)
    area_i = torch.sum(flat > delta, dim=-1).float()
    area_u = torch.sum(flat > -delta, dim=-1).float()
    return torch.where(area_u > 0, area_i / area_u, 1.0)


class MaskDecoder(nn.Module):
    """Image embedding (1 or B, C, h, w) + prompts → mask logits (B, M, 4h, 4w), IoU (B, M),
    the SAM output tokens for the object pointer (B, 1 or 3, C) and object-score logits (B, 1).

    Output tokens are ``[obj_score_token (if pred_obj_scores), iou_token, mask_tokens x4]``;
    M is 3 (tokens 1-3) with ``multimask_output``, else 1.
    """

    def __init__(
        self,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        use_high_res_features: bool = False,
        iou_prediction_use_sigmoid: bool = False,
        dynamic_multimask_via_stability: bool = False,
        dynamic_multimask_stability_delta: float = 0.05,
        dynamic_multimask_stability_thresh: float = 0.98,
        pred_obj_scores: bool = False,
        pred_obj_scores_mlp: bool = False,
        use_multimask_token_for_obj_ptr: bool = False,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, transformer_dim)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)
        self.iou_prediction_use_sigmoid = iou_prediction_use_sigmoid
        if pred_obj_scores:
            self.pred_obj_score_head: nn.Module = (
                MLP(transformer_dim, transformer_dim, 1, 3) if pred_obj_scores_mlp else nn.Linear(transformer_dim, 1)
            )
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The selected masks and IoUs, the output tokens for the pointer, object-score logits.

        ``repeat_image``: one image embedding (1, C, h, w) serves all B prompts; otherwise it is
        already (B, C, h, w). ``high_res_features``: [stride-4 (·, C/8, 4h, 4w), stride-8
        (·, C/4, 2h, 2w)] maps, already projected by ``conv_s0`` / ``conv_s1``.
        """
        masks, iou_pred, mask_tokens_out, object_score_logits = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, repeat_image, high_res_features
        )
        masks, iou_pred = self.select_masks(masks, iou_pred, multimask_output)
        # The pointer token: the multimask tokens when asked for, else always the single-mask token.
        sam_tokens_out = mask_tokens_out[:, 1:] if multimask_output and self.use_multimask_token_for_obj_ptr \
            else mask_tokens_out[:, 0:1]
        return masks, iou_pred, sam_tokens_out, object_score_logits

    def select_masks(self, masks: torch.Tensor, iou_pred: torch.Tensor, multimask_output: bool,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """The outputs asked for among all 4 tokens' (:meth:`predict_masks`): the three multimask
        tokens, or token 0 (replaced where unstable by the best multimask one with the dynamic fallback)."""
        if multimask_output:
            return masks[:, 1:], iou_pred[:, 1:]
        if self.dynamic_multimask_via_stability and not self.training:
            return self._dynamic_multimask_via_stability(masks, iou_pred)
        return masks[:, 0:1], iou_pred[:, 0:1]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        repeat_image: bool,
        high_res_features: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All 4 tokens' mask logits (B, 4, 4h, 4w), IoUs (B, 4), mask tokens (B, 4, C), object score (B, 1)."""
        weights = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_scores:
            weights.insert(0, self.obj_score_token.weight)
        s = int(self.pred_obj_scores)
        batch = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat(weights, dim=0).unsqueeze(0).expand(batch, -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)

        if repeat_image:
            src = torch.repeat_interleave(image_embeddings, batch, dim=0)
        elif image_embeddings.shape[0] != batch:
            raise ValueError(f"{image_embeddings.shape[0]} image embeddings for {batch} prompts (use repeat_image)")
        else:
            src = image_embeddings
        src = src + dense_prompt_embeddings
        pos_src = torch.repeat_interleave(image_pe, batch, dim=0)
        b, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, s, :]
        mask_tokens_out = hs[:, s + 1 : s + 1 + self.num_mask_tokens, :]

        src = src.transpose(1, 2).reshape(b, c, h, w)
        if not self.use_high_res_features:
            upscaled = self.output_upscaling(src)
        else:
            if high_res_features is None:
                raise ValueError("this decoder uses high-resolution features: pass high_res_features")
            dc1, ln1, act1, dc2, act2 = self.output_upscaling
            feat_s0, feat_s1 = high_res_features
            upscaled = act1(ln1(dc1(src) + feat_s1))
            upscaled = act2(dc2(upscaled) + feat_s0)

        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)

        iou_pred = self.iou_prediction_head(iou_token_out)
        if self.iou_prediction_use_sigmoid:
            iou_pred = iou_pred.sigmoid()
        if self.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(hs[:, 0, :])
        else:  # the object is taken as present: sigmoid(10) ~ 1
            object_score_logits = 10.0 * iou_pred.new_ones(iou_pred.shape[0], 1)
        return masks, iou_pred, mask_tokens_out, object_score_logits

    def _dynamic_multimask_via_stability(
        self, all_mask_logits: torch.Tensor, all_iou_scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token 0's mask (B, 1, H, W) and IoU (B, 1) where its stability score reaches the threshold,
        else the multimask token (1-3) with the highest predicted IoU."""
        multimask_logits, multimask_iou = all_mask_logits[:, 1:], all_iou_scores[:, 1:]
        best = torch.argmax(multimask_iou, dim=-1)
        rows = torch.arange(multimask_iou.shape[0], device=all_iou_scores.device)
        best_logits = multimask_logits[rows, best].unsqueeze(1)
        best_iou = multimask_iou[rows, best].unsqueeze(1)
        single_logits, single_iou = all_mask_logits[:, 0:1], all_iou_scores[:, 0:1]
        is_stable = self.is_stable(single_logits)
        mask_out = torch.where(is_stable[..., None, None].expand_as(single_logits), single_logits, best_logits)
        iou_out = torch.where(is_stable.expand_as(single_iou), single_iou, best_iou)
        return mask_out, iou_out

    def is_stable(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """Whether each mask's stability score (B, M) reaches ``dynamic_multimask_stability_thresh``."""
        return stability_scores(mask_logits, self.dynamic_multimask_stability_delta) >= self.dynamic_multimask_stability_thresh
