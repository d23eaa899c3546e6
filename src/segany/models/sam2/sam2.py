"""The SAM 2 model: an injected image encoder, SAM's prompt encoder, SAM 2's mask decoder,
memory attention, memory encoder and the top-level parameters, exactly as the official
``SAM2Base`` creates them (same names, shapes and registration order), plus the image path the
image predictor needs, as functions of tensors.

The image encoder is any module whose forward maps (B, 3, S, S) images to the official
``ImageEncoder`` dict: ``backbone_fpn`` (feature maps, highest resolution first, after the
scalp) and ``vision_pos_enc`` (their position encodings).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import HieraConfig
from ..encoders.hiera import Sam2ImageEncoder
from ..mask_decoder import MLP
from ..position_encoding import PositionEmbeddingSine, get_1d_sine_pe
from ..prompt_encoder import PromptEncoder
from .config import RoPEAttentionConfig, Sam2Config
from .mask_decoder import MaskDecoder, two_way_transformer
from .memory_attention import MemoryAttention, MemoryAttentionLayer, RoPEAttention
from .memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder

NO_OBJ_SCORE = -1024.0  # the mask logit of every pixel of an object found absent
MASK_OUT_SCALE, MASK_OUT_BIAS = 20.0, -10.0  # a binary mask as logits: -10 / +10 (sigmoid 4.5e-5 / 1 - 4.5e-5)


@dataclass
class FrameFeatures:
    """One frame's image features for tracking (batch 1, grid h = w = S / 16).

    ``vision_feats`` (1, C, h, w) is the raw stride-16 map (no ``no_mem_embed``), ``vision_pos``
    (1, C, h, w) its sine encoding, ``high_res`` the [(1, C/8, 4h, 4w), (1, C/4, 2h, 2w)] maps
    already projected by ``conv_s0`` / ``conv_s1`` (empty without high-res features)."""

    vision_feats: torch.Tensor
    vision_pos: torch.Tensor
    high_res: list[torch.Tensor]


@dataclass
class SamHeadsOutput:
    """The SAM heads on one frame (``SAM2Base._forward_sam_heads``), batch B = 1 here.

    ``low_res_multimasks`` (B, M, 4h, 4w) and ``ious`` (B, M) are all M candidates (NO_OBJ_SCORE
    where the object is absent); ``low_res_masks`` (B, 1, 4h, 4w) / ``high_res_masks`` (B, 1, S, S)
    the chosen one (best IoU with multimask), ``obj_ptr`` (B, C) its object pointer,
    ``object_score_logits`` (B, 1); ``multimask``: whether the decoder gave 3 candidates
    (None for a mask used as output)."""

    low_res_multimasks: torch.Tensor
    ious: torch.Tensor
    low_res_masks: torch.Tensor
    high_res_masks: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    multimask: bool | None


@dataclass
class SpatialMemory:
    """A memory the current frame attends to: ``features`` (1, mem_dim, h, w) as stored (bfloat16)
    and its temporal slot ``t_pos`` (0 for conditioning frames, else num_maskmem - distance)."""

    features: torch.Tensor
    t_pos: int


@dataclass
class ObjectPointer:
    """An object pointer (1, C) and its signed temporal offset from the current frame."""

    offset: int
    pointer: torch.Tensor


def _rope_attention(cfg: RoPEAttentionConfig) -> RoPEAttention:
    return RoPEAttention(cfg.embedding_dim, cfg.num_heads, cfg.downsample_rate, cfg.dropout, cfg.kv_in_dim,
                         cfg.rope_theta, cfg.rope_k_repeat, cfg.feat_sizes)


def build_memory_attention(config: Sam2Config) -> MemoryAttention:
    """The official ``MemoryAttention`` of ``config.memory_attention``."""
    cfg = config.memory_attention
    layer = MemoryAttentionLayer(
        cfg.activation, _rope_attention(cfg.cross_attention), cfg.d_model, cfg.dim_feedforward, cfg.dropout,
        cfg.pos_enc_at_attn, cfg.pos_enc_at_cross_attn_keys, cfg.pos_enc_at_cross_attn_queries,
        _rope_attention(cfg.self_attention),
    )
    return MemoryAttention(cfg.d_model, cfg.pos_enc_at_input, layer, cfg.num_layers)


def build_memory_encoder(config: Sam2Config) -> MemoryEncoder:
    """The official ``MemoryEncoder`` of ``config.memory_encoder``."""
    cfg = config.memory_encoder
    pe = cfg.position_encoding
    return MemoryEncoder(
        cfg.out_dim,
        MaskDownSampler(cfg.in_dim, cfg.mask_kernel_size, cfg.mask_stride, cfg.mask_padding, cfg.mask_total_stride),
        Fuser(CXBlock(cfg.cx_dim, cfg.cx_kernel_size, cfg.cx_padding, cfg.cx_layer_scale_init_value, cfg.cx_use_dwconv),
              cfg.fuser_num_layers, dim=cfg.cx_dim, input_projection=cfg.fuser_input_projection),
        PositionEmbeddingSine(pe.num_pos_feats, pe.temperature, pe.normalize, pe.scale),
        in_dim=cfg.in_dim,
    )


class Sam2(nn.Module):
    """SAM 2 (``SAM2Base``'s modules and parameters); the video path comes with the video predictor.

    Top-level tensors: ``maskmem_tpos_enc`` (num_maskmem, 1, 1, mem_dim), ``no_mem_embed`` and
    ``no_mem_pos_enc`` (1, 1, C), ``no_obj_ptr`` (1, C), ``no_obj_embed_spatial`` (1, mem_dim),
    ``mask_downsample`` (4x4 stride-4 conv), ``obj_ptr_proj``, ``obj_ptr_tpos_proj``.
    """

    def __init__(self, config: Sam2Config, image_encoder: nn.Module,
                 memory_attention: nn.Module | None = None, memory_encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        hidden, mem_dim = config.hidden_dim, config.mem_dim
        self.image_encoder = image_encoder
        self.use_high_res_features_in_sam = config.use_high_res_features_in_sam
        self.num_feature_levels = 3 if config.use_high_res_features_in_sam else 1
        if config.use_obj_ptrs_in_encoder:
            # mask prompt → stride 4, logit scale: a mask given as output still yields a pointer
            self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.memory_attention = memory_attention if memory_attention is not None else build_memory_attention(config)
        self.hidden_dim = hidden
        self.memory_encoder = memory_encoder if memory_encoder is not None else build_memory_encoder(config)
        self.mem_dim = mem_dim
        self.num_maskmem = config.num_maskmem
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(config.num_maskmem, 1, 1, mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, hidden))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, hidden))
        self.directly_add_no_mem_embed = config.directly_add_no_mem_embed
        self.image_size = config.image_size
        self.backbone_stride = config.backbone_stride
        self.pred_obj_scores = config.pred_obj_scores
        if config.pred_obj_scores and config.use_obj_ptrs_in_encoder:
            self.no_obj_ptr = nn.Parameter(torch.zeros(1, hidden))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, mem_dim)) if config.no_obj_embed_spatial else None
        for tensor in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc,
                       getattr(self, "no_obj_ptr", None), self.no_obj_embed_spatial):
            if tensor is not None:
                nn.init.trunc_normal_(tensor, std=0.02)

        self.sam_prompt_embed_dim = hidden
        self.sam_image_embedding_size = config.image_embedding_size
        grid = config.image_embedding_size
        self.sam_prompt_encoder = PromptEncoder(hidden, (grid, grid), (config.image_size, config.image_size), mask_in_chans=16)
        self.sam_mask_decoder = MaskDecoder(
            hidden,
            two_way_transformer(depth=2, embedding_dim=hidden, num_heads=8, mlp_dim=2048),
            num_multimask_outputs=3,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
            use_high_res_features=config.use_high_res_features_in_sam,
            iou_prediction_use_sigmoid=config.iou_prediction_use_sigmoid,
            dynamic_multimask_via_stability=config.dynamic_multimask_via_stability,
            dynamic_multimask_stability_delta=config.dynamic_multimask_stability_delta,
            dynamic_multimask_stability_thresh=config.dynamic_multimask_stability_thresh,
            pred_obj_scores=config.pred_obj_scores,
            pred_obj_scores_mlp=config.pred_obj_scores_mlp,
            use_multimask_token_for_obj_ptr=config.use_multimask_token_for_obj_ptr,
        )
        self.obj_ptr_proj: nn.Module = nn.Identity()
        if config.use_obj_ptrs_in_encoder:
            self.obj_ptr_proj = MLP(hidden, hidden, hidden, 3) if config.use_mlp_for_obj_ptr_proj else nn.Linear(hidden, hidden)
        self.obj_ptr_tpos_proj: nn.Module = nn.Linear(hidden, mem_dim) if config.proj_tpos_enc_in_obj_ptrs else nn.Identity()

    def forward(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError("use Sam2.image_features and Sam2.decode_prompts (the image path) "
                                  "or segany.VideoPredictor (the video path)")

    def forward_image(self, images: torch.Tensor, pos_embed: torch.Tensor | None = None) -> dict:
        """The image encoder's output for (B, 3, S, S) normalised images, with the two highest-
        resolution maps projected once by the decoder's ``conv_s0`` / ``conv_s1``; ``pos_embed``
        (a Hiera encoder's trunk position embedding, kept by the caller) is passed to the encoder."""
        encoded = self.image_encoder(images) if pos_embed is None else self.image_encoder(images, pos_embed=pos_embed)
        out = encoded._asdict() if hasattr(encoded, "_asdict") else dict(encoded)
        out["backbone_fpn"] = self.project_high_res(out["backbone_fpn"])
        return out

    def project_high_res(self, backbone_fpn: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """The encoder's ``backbone_fpn`` with its two highest-resolution maps projected by
        ``conv_s0`` / ``conv_s1`` (unchanged without high-res features)."""
        fpn = list(backbone_fpn)
        if self.use_high_res_features_in_sam:
            fpn[0] = self.sam_mask_decoder.conv_s0(fpn[0])
            fpn[1] = self.sam_mask_decoder.conv_s1(fpn[1])
        return fpn

    def image_features(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """What ``SAM2ImagePredictor.set_image`` keeps: the stride-16 embedding (B, C, S/16, S/16),
        plus ``no_mem_embed`` when ``directly_add_no_mem_embed``, and the projected high-resolution
        maps [(B, C/8, S/4, S/4), (B, C/4, S/8, S/8)] (empty without high-res features)."""
        return self.features_from_fpn(self.forward_image(images)["backbone_fpn"])

    def features_from_fpn(self, backbone_fpn: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`image_features` from a projected ``backbone_fpn`` (:meth:`project_high_res`)."""
        fpn = backbone_fpn[-self.num_feature_levels:]
        embed = fpn[-1]
        if self.directly_add_no_mem_embed:
            embed = embed + self.no_mem_embed.reshape(1, -1, 1, 1)
        return embed, list(fpn[:-1])

    def encode_prompts(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt encoder's sparse (B, N, C) and dense (B, C, h, w) embeddings of the prompts of
        :meth:`decode_prompts`: a box becomes two points labelled 2 and 3 placed before the clicks."""
        points = None if point_coords is None else (point_coords, point_labels)
        if boxes is not None:
            box_coords = boxes.reshape(-1, 2, 2)
            box_labels = torch.tensor([[2, 3]], dtype=torch.int, device=boxes.device).repeat(box_coords.shape[0], 1)
            if points is not None:
                points = (torch.cat([box_coords, points[0]], dim=1), torch.cat([box_labels, points[1]], dim=1))
            else:
                points = (box_coords, box_labels)
        return self.sam_prompt_encoder(points=points, boxes=None, masks=mask_input)

    def decode_prompts(
        self,
        image_embed: torch.Tensor,
        high_res_feats: list[torch.Tensor],
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res mask logits (B, M, 4h, 4w) and IoU predictions (B, M) of one image's prompts
        (``SAM2ImagePredictor._predict`` before upsampling).

        ``image_embed`` (1, C, h, w) and ``high_res_feats`` are one image's :meth:`image_features`;
        points (B, N, 2) / labels (B, N) and boxes (B, 4) are in the model's input frame (pixels of
        the S x S input); ``mask_input`` (B, 1, 4h, 4w) logits. A box becomes two points labelled
        2 and 3 placed before the clicks; the padding point is always appended.
        """
        sparse, dense = self.encode_prompts(point_coords, point_labels, boxes, mask_input)
        batched = (point_coords is not None or boxes is not None) and sparse.shape[0] > 1
        low_res_masks, iou_predictions, _, _ = self.sam_mask_decoder(
            image_embeddings=image_embed,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=batched,
            high_res_features=high_res_feats if self.use_high_res_features_in_sam else None,
        )
        return low_res_masks, iou_predictions

    # ---- the video path (SAM2Base's tracking methods), batch 1 per object ----

    def frame_features(self, image: torch.Tensor, pos_embed: torch.Tensor | None = None) -> FrameFeatures:
        """:class:`FrameFeatures` of one normalised (1, 3, S, S) frame (``_prepare_backbone_features``);
        ``pos_embed`` as :meth:`forward_image`'s."""
        out = self.forward_image(image, pos_embed)
        maps = list(out["backbone_fpn"])[-self.num_feature_levels:]
        pos = list(out["vision_pos_enc"])[-self.num_feature_levels:]
        return FrameFeatures(maps[-1], pos[-1], maps[:-1])

    def use_multimask(self, is_init_cond_frame: bool, num_points: int) -> bool:
        """Whether the decoder gives 3 candidates (``_use_multimask``): ``num_points`` counts the
        prompt's points (a box is 2), 0 on a tracked frame."""
        cfg = self.config
        return (cfg.multimask_output_in_sam and (is_init_cond_frame or cfg.multimask_output_for_tracking)
                and cfg.multimask_min_pt_num <= num_points <= cfg.multimask_max_pt_num)

    def sam_heads(
        self,
        backbone_features: torch.Tensor,
        high_res: list[torch.Tensor],
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> SamHeadsOutput:
        """Prompt encoder and mask decoder on (B, C, h, w) features (``_forward_sam_heads``).

        Points (B, N, 2) in the S x S frame with labels (B, N) (none: one padding point);
        ``mask_inputs`` (B, 1, ·, ·) logits or a mask, resized (antialiased) to 4h x 4w if needed.
        """
        b = backbone_features.shape[0]
        device = backbone_features.device
        if point_coords is None:
            point_coords = torch.zeros(b, 1, 2, device=device)
            point_labels = -torch.ones(b, 1, dtype=torch.int32, device=device)
        mask_prompt = None
        if mask_inputs is not None:
            mask_prompt = mask_inputs
            if tuple(mask_inputs.shape[-2:]) != tuple(self.sam_prompt_encoder.mask_input_size):
                mask_prompt = F.interpolate(mask_inputs.float(), size=self.sam_prompt_encoder.mask_input_size,
                                            align_corners=False, mode="bilinear", antialias=True)
        sparse, dense = self.sam_prompt_encoder(points=(point_coords, point_labels), boxes=None, masks=mask_prompt)
        low_res_multimasks, ious, sam_output_tokens, object_score_logits = self.sam_mask_decoder(
            image_embeddings=backbone_features,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=False,
            high_res_features=high_res if self.use_high_res_features_in_sam else None,
        )
        is_obj_appearing = object_score_logits > 0
        if self.pred_obj_scores:
            low_res_multimasks = torch.where(is_obj_appearing[:, None, None], low_res_multimasks, NO_OBJ_SCORE)
        low_res_multimasks = low_res_multimasks.float()
        sam_output_token = sam_output_tokens[:, 0]
        if multimask_output:
            best = torch.argmax(ious, dim=-1)
            rows = torch.arange(b, device=device)
            low_res_masks = low_res_multimasks[rows, best].unsqueeze(1)
            if sam_output_tokens.shape[1] > 1:
                sam_output_token = sam_output_tokens[rows, best]
        else:
            low_res_masks = low_res_multimasks
        # upsampled after the choice (the official upsamples every candidate, then picks one: the same values)
        high_res_masks = F.interpolate(low_res_masks, size=(self.image_size, self.image_size),
                                       mode="bilinear", align_corners=False)
        obj_ptr = self._absent_pointer(self.obj_ptr_proj(sam_output_token), is_obj_appearing.float(),
                                       object_score_logits)
        return SamHeadsOutput(low_res_multimasks, ious, low_res_masks, high_res_masks, obj_ptr,
                              object_score_logits, multimask_output)

    def _absent_pointer(self, obj_ptr: torch.Tensor, appearing: torch.Tensor,
                        object_score_logits: torch.Tensor) -> torch.Tensor:
        """The (B, C) pointer moved towards ``no_obj_ptr`` where the object is absent."""
        if not self.pred_obj_scores:
            return obj_ptr
        weight = object_score_logits.sigmoid() if self.config.soft_no_obj_ptr else appearing
        if self.config.fixed_no_obj_ptr:
            obj_ptr = weight * obj_ptr
        return obj_ptr + (1 - weight) * self.no_obj_ptr

    def mask_as_output(self, backbone_features: torch.Tensor, high_res: list[torch.Tensor],
                       mask_inputs: torch.Tensor) -> SamHeadsOutput:
        """A binary (B, 1, S, S) mask taken as the output (``_use_mask_as_output``): logits
        +-10, low-res by antialiased downsampling, IoU 1, object score +-10; the pointer comes
        from the SAM heads prompted with the mask (``mask_downsample``)."""
        mask = mask_inputs.float()
        high_res_masks = mask * MASK_OUT_SCALE + MASK_OUT_BIAS
        low_res_masks = F.interpolate(high_res_masks, size=(high_res_masks.shape[-2] // 4, high_res_masks.shape[-1] // 4),
                                      align_corners=False, mode="bilinear", antialias=True)
        ious = mask_inputs.new_ones(mask_inputs.shape[0], 1).float()
        if not self.config.use_obj_ptrs_in_encoder:
            obj_ptr = torch.zeros(mask_inputs.shape[0], self.hidden_dim, device=mask_inputs.device)
        else:
            obj_ptr = self.sam_heads(backbone_features, high_res, mask_inputs=self.mask_downsample(mask)).obj_ptr
        appearing = torch.any(mask_inputs.flatten(1).float() > 0.0, dim=1)[..., None].float()
        object_score_logits = MASK_OUT_SCALE * appearing + MASK_OUT_BIAS
        if self.pred_obj_scores:
            if self.config.fixed_no_obj_ptr:
                obj_ptr = appearing * obj_ptr
            obj_ptr = obj_ptr + (1 - appearing) * self.no_obj_ptr
        return SamHeadsOutput(low_res_masks, ious, low_res_masks, high_res_masks, obj_ptr, object_score_logits, None)

    def condition_on_memory(
        self,
        features: FrameFeatures,
        is_init_cond_frame: bool,
        memories: Sequence[SpatialMemory] = (),
        pointers: Sequence[ObjectPointer] = (),
        memory_pos: torch.Tensor | None = None,
        num_frames: int = 16,
    ) -> torch.Tensor:
        """The frame's (1, C, h, w) features fused with the memory (``_prepare_memory_conditioned_features``).

        An initial conditioning frame uses no memory (``no_mem_embed``). Otherwise ``memories``
        (conditioning ones first, then the recent frames) with ``memory_pos`` (1, mem_dim, h, w)
        plus their temporal encoding, and ``pointers`` (each split into C / mem_dim tokens, not
        rotated) with the sine encoding of ``offset / (min(num_frames, max_obj_ptrs_in_encoder) - 1)``.
        """
        feats = features.vision_feats
        b, c, h, w = feats.shape
        curr = feats.flatten(2).permute(2, 0, 1)
        curr_pos = features.vision_pos.flatten(2).permute(2, 0, 1)
        if self.num_maskmem == 0:
            return feats
        num_obj_ptr_tokens = 0
        if is_init_cond_frame:
            if self.directly_add_no_mem_embed:
                return (curr + self.no_mem_embed).permute(1, 2, 0).view(b, c, h, w)
            to_cat_memory = [self.no_mem_embed.expand(1, b, self.mem_dim)]
            to_cat_pos = [self.no_mem_pos_enc.expand(1, b, self.mem_dim)]
        else:
            if not memories or memory_pos is None:
                raise ValueError("a frame that is not an initial conditioning frame needs memories and memory_pos")
            to_cat_memory, to_cat_pos = [], []
            spatial_pos = memory_pos.flatten(2).permute(2, 0, 1)
            for memory in memories:
                to_cat_memory.append(memory.features.flatten(2).permute(2, 0, 1))
                to_cat_pos.append(spatial_pos + self.maskmem_tpos_enc[self.num_maskmem - memory.t_pos - 1])
            if pointers and self.config.use_obj_ptrs_in_encoder:
                obj_ptrs, obj_pos = self.pointer_tokens(pointers, b, num_frames)
                to_cat_memory.append(obj_ptrs)
                to_cat_pos.append(obj_pos)
                num_obj_ptr_tokens = obj_ptrs.shape[0]
        memory = torch.cat(to_cat_memory, dim=0).float()
        memory_pos_embed = torch.cat(to_cat_pos, dim=0)
        out = self.memory_attention(curr=curr, curr_pos=curr_pos, memory=memory, memory_pos=memory_pos_embed,
                                    num_obj_ptr_tokens=num_obj_ptr_tokens)
        return out.permute(1, 2, 0).view(b, c, h, w)

    def pointer_tokens(self, pointers: Sequence[ObjectPointer], batch: int, num_frames: int,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """The memory tokens (P, B, mem_dim) of object pointers (each (B, C) split into C / mem_dim
        tokens) and their position encodings (the sine encoding of the offset over
        ``min(num_frames, max_obj_ptrs_in_encoder) - 1``, projected; zeros without it)."""
        cfg, c = self.config, self.hidden_dim
        obj_ptrs = torch.stack([p.pointer for p in pointers], dim=0)
        if cfg.add_tpos_enc_to_obj_ptrs:
            t_diff_max = min(num_frames, cfg.max_obj_ptrs_in_encoder) - 1
            tpos_dim = c if cfg.proj_tpos_enc_in_obj_ptrs else self.mem_dim
            obj_pos = torch.tensor([p.offset for p in pointers], device=obj_ptrs.device)
            obj_pos = self.obj_ptr_tpos_proj(get_1d_sine_pe(obj_pos / t_diff_max, dim=tpos_dim))
            obj_pos = obj_pos.unsqueeze(1).expand(-1, batch, self.mem_dim)
        else:
            obj_pos = obj_ptrs.new_zeros(len(pointers), batch, self.mem_dim)
        if self.mem_dim < c:
            obj_ptrs = obj_ptrs.reshape(-1, batch, c // self.mem_dim, self.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
            obj_pos = obj_pos.repeat_interleave(c // self.mem_dim, dim=0)
        return obj_ptrs, obj_pos

    def encode_memory(self, features: FrameFeatures, high_res_masks: torch.Tensor, object_score_logits: torch.Tensor,
                      binarize: bool, memory_encoder: Callable[..., dict] | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """A frame's memory (1, mem_dim, h, w) float32 and its position encoding (``_encode_new_memory``)
        from the (1, 1, S, S) mask logits: binarised (``> 0``) when ``binarize`` (prompted frames with
        ``binarize_mask_from_pts_for_mem_enc``), else a sigmoid; then ``* 20 - 10`` (the configured
        scale / bias); ``no_obj_embed_spatial`` is added where the object is absent.
        ``memory_encoder`` (inference fast paths) replaces ``self.memory_encoder``, called the same way."""
        mask = (high_res_masks > 0).float() if binarize else torch.sigmoid(high_res_masks)
        cfg = self.config
        if cfg.sigmoid_scale_for_mem_enc != 1.0:
            mask = mask * cfg.sigmoid_scale_for_mem_enc
        if cfg.sigmoid_bias_for_mem_enc != 0.0:
            mask = mask + cfg.sigmoid_bias_for_mem_enc
        out = (memory_encoder or self.memory_encoder)(features.vision_feats, mask, skip_mask_sigmoid=True)
        maskmem, pos = out["vision_features"], out["vision_pos_enc"][-1]
        if self.no_obj_embed_spatial is not None:
            appearing = (object_score_logits > 0).float()
            maskmem = maskmem + (1 - appearing[..., None, None]) * self.no_obj_embed_spatial[..., None, None]
        return maskmem, pos


def build_sam2(config: Sam2Config, image_encoder: nn.Module | None = None) -> Sam2:
    """A :class:`Sam2` of ``config`` in eval mode, around ``image_encoder`` (default: the
    :class:`~segany.models.encoders.hiera.Sam2ImageEncoder` of ``config.encoder``, a HieraConfig)."""
    if image_encoder is None:
        if not isinstance(config.encoder, HieraConfig):
            raise ValueError(f"config {config.name!r} has no HieraConfig encoder: pass image_encoder")
        image_encoder = Sam2ImageEncoder(config.encoder)
    return Sam2(config, image_encoder).eval()
