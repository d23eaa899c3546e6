"""SAM 2 / 2.1 architecture configs (frozen dataclasses): every argument of the official
``SAM2Base``, its memory attention and memory encoder that changes the network or its semantics.

Field names are the official constructor arguments; defaults are the official defaults
(``SAM2Base``'s own, not a particular model's). The image encoder's config (``encoder``) belongs to
the encoder package: a ``HieraConfig`` when it exists, else the official trunk / neck arguments as
a plain dict (``{"scalp": 1, "trunk": {...}, "neck": {...}}``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the Hiera encoder's config, written with the encoder
    from ..config import HieraConfig  # type: ignore[attr-defined]


@dataclass(frozen=True)
class RoPEAttentionConfig:
    """``RoPEAttention``'s arguments (``sam2.modeling.sam.transformer``)."""

    embedding_dim: int = 256
    num_heads: int = 1
    downsample_rate: int = 1
    dropout: float = 0.1
    rope_theta: float = 10000.0
    feat_sizes: tuple[int, int] = (64, 64)
    rope_k_repeat: bool = False
    kv_in_dim: int | None = None


@dataclass(frozen=True)
class MemoryAttentionConfig:
    """``MemoryAttention`` and its ``MemoryAttentionLayer`` (cloned ``num_layers`` times)."""

    d_model: int = 256
    pos_enc_at_input: bool = True
    num_layers: int = 4
    activation: str = "relu"
    dim_feedforward: int = 2048
    dropout: float = 0.1
    pos_enc_at_attn: bool = False
    pos_enc_at_cross_attn_keys: bool = True
    pos_enc_at_cross_attn_queries: bool = False
    self_attention: RoPEAttentionConfig = RoPEAttentionConfig()
    cross_attention: RoPEAttentionConfig = RoPEAttentionConfig(rope_k_repeat=True, kv_in_dim=64)


@dataclass(frozen=True)
class SinePositionConfig:
    """``PositionEmbeddingSine``'s arguments (``num_pos_feats`` is the output channel count)."""

    num_pos_feats: int = 64
    temperature: int = 10000
    normalize: bool = True
    scale: float | None = None


@dataclass(frozen=True)
class MemoryEncoderConfig:
    """``MemoryEncoder`` with its ``MaskDownSampler``, ``Fuser`` of ``CXBlock`` s and position encoding."""

    out_dim: int = 64
    in_dim: int = 256
    position_encoding: SinePositionConfig = SinePositionConfig()
    # MaskDownSampler
    mask_kernel_size: int = 3
    mask_stride: int = 2
    mask_padding: int = 1
    mask_total_stride: int = 16
    # Fuser and its CXBlock
    fuser_num_layers: int = 2
    fuser_input_projection: bool = False
    cx_dim: int = 256
    cx_kernel_size: int = 7
    cx_padding: int = 3
    cx_layer_scale_init_value: float = 1e-6
    cx_use_dwconv: bool = True


@dataclass(frozen=True)
class Sam2Config:
    """A SAM 2 model: ``SAM2Base``'s arguments plus the mask decoder's extra arguments.

    ``hidden_dim`` is the image encoder neck's ``d_model`` (the prompt / decoder width). The three
    ``dynamic_multimask_*`` fields are ``sam_mask_decoder_extra_args``: the official builders set
    them (``apply_postprocessing``) to True / 0.05 / 0.98.
    """

    name: str = "sam2"
    encoder: HieraConfig | dict | None = None
    memory_attention: MemoryAttentionConfig = MemoryAttentionConfig()
    memory_encoder: MemoryEncoderConfig = MemoryEncoderConfig()
    hidden_dim: int = 256
    num_maskmem: int = 7
    image_size: int = 512
    backbone_stride: int = 16
    sigmoid_scale_for_mem_enc: float = 1.0
    sigmoid_bias_for_mem_enc: float = 0.0
    binarize_mask_from_pts_for_mem_enc: bool = False
    use_mask_input_as_output_without_sam: bool = False
    max_cond_frames_in_attn: int = -1
    directly_add_no_mem_embed: bool = False
    use_high_res_features_in_sam: bool = False
    multimask_output_in_sam: bool = False
    multimask_min_pt_num: int = 1
    multimask_max_pt_num: int = 1
    multimask_output_for_tracking: bool = False
    use_multimask_token_for_obj_ptr: bool = False
    iou_prediction_use_sigmoid: bool = False
    memory_temporal_stride_for_eval: int = 1
    non_overlap_masks_for_mem_enc: bool = False
    use_obj_ptrs_in_encoder: bool = False
    max_obj_ptrs_in_encoder: int = 16
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = False
    use_signed_tpos_enc_to_obj_ptrs: bool = False
    only_obj_ptrs_in_the_past_for_eval: bool = False
    pred_obj_scores: bool = False
    pred_obj_scores_mlp: bool = False
    fixed_no_obj_ptr: bool = False
    soft_no_obj_ptr: bool = False
    use_mlp_for_obj_ptr_proj: bool = False
    no_obj_embed_spatial: bool = False
    dynamic_multimask_via_stability: bool = False
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98

    def __post_init__(self) -> None:
        if self.proj_tpos_enc_in_obj_ptrs and not self.add_tpos_enc_to_obj_ptrs:
            raise ValueError("proj_tpos_enc_in_obj_ptrs needs add_tpos_enc_to_obj_ptrs")
        if self.fixed_no_obj_ptr and not (self.pred_obj_scores and self.use_obj_ptrs_in_encoder):
            raise ValueError("fixed_no_obj_ptr needs pred_obj_scores and use_obj_ptrs_in_encoder")
        if self.image_size % self.backbone_stride:
            raise ValueError(f"image_size {self.image_size} is not a multiple of backbone_stride {self.backbone_stride}")

    @property
    def image_embedding_size(self) -> int:
        """Side of the stride-16 grid the decoder works on (64 at 1024)."""
        return self.image_size // self.backbone_stride

    @property
    def mem_dim(self) -> int:
        """Channels of a memory: the memory encoder's ``out_dim`` when it compresses, else ``hidden_dim``."""
        enc = self.memory_encoder
        return enc.out_dim if enc.out_dim != enc.in_dim else self.hidden_dim
