"""The SAM 2 model: an injected image encoder, SAM's prompt encoder, SAM 2's mask decoder,
memory attention, memory encoder and the top-level parameters, exactly as the official
``SAM2Base`` creates them (same names, shapes and registration order), plus the image path the
image predictor needs, as functions of tensors.

The image encoder is any module whose forward maps (B, 3, S, S) images to the official
``ImageEncoder`` dict: ``backbone_fpn`` (feature maps, highest resolution first, after the
scalp) and ``vision_pos_enc`` (their position encodings).
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import HieraConfig
from ..encoders.hiera import Sam2ImageEncoder
from ..mask_decoder import MLP
from ..position_encoding import PositionEmbeddingSine
from ..prompt_encoder import PromptEncoder
from .config import RoPEAttentionConfig, Sam2Config
from .mask_decoder import MaskDecoder, two_way_transformer
from .memory_attention import MemoryAttention, MemoryAttentionLayer, RoPEAttention
from .memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder

NO_OBJ_SCORE = -1024.0  # the mask logit of every pixel of an object found absent


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
        raise NotImplementedError("use Sam2.image_features and Sam2.decode_prompts (the image path)")

    def forward_image(self, images: torch.Tensor) -> dict:
        """The image encoder's output for (B, 3, S, S) normalised images, with the two highest-
        resolution maps projected once by the decoder's ``conv_s0`` / ``conv_s1``."""
        encoded = self.image_encoder(images)
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


def build_sam2(config: Sam2Config, image_encoder: nn.Module | None = None) -> Sam2:
    """A :class:`Sam2` of ``config`` in eval mode, around ``image_encoder`` (default: the
    :class:`~segany.models.encoders.hiera.Sam2ImageEncoder` of ``config.encoder``, a HieraConfig)."""
    if image_encoder is None:
        if not isinstance(config.encoder, HieraConfig):
            raise ValueError(f"config {config.name!r} has no HieraConfig encoder: pass image_encoder")
        image_encoder = Sam2ImageEncoder(config.encoder)
    return Sam2(config, image_encoder).eval()
