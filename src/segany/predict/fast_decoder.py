"""The mask decoder evaluated for inference: the same weights and results as
:class:`segany.models.mask_decoder.MaskDecoder` (up to float rounding), less work.

The paper modules in :mod:`segany.models` stay plain and trainable; this module reads their
parameters and reorders the computation where the shapes of inference make it cheaper:

- **One image, many prompts.** The image embedding (1, C, h, w) is not copied per prompt: the image
  tokens stay a batch of 1 until the first image-to-token attention makes them prompt-specific.
- **Shared image work** (:class:`SharedImageTokens`). Without a mask prompt, the first two-way
  block's projections of the image tokens do not depend on the prompt; they are computed once per
  image (:meth:`FastMaskDecoder.share_image`) and reused by every batch of prompts.
- **Attention orders** (:func:`plan`). Attention between a handful of tokens and thousands of image
  tokens is evaluated in the cheapest of three equivalent orders, folding projections into the
  small side and adding residuals inside the last matmul.
- **Prompt chunks.** Prompts go through a few at a time so the per-prompt image tokens stay cache-sized.
- **Matmul upscaling.** The two stride-2, 2x2 transposed convolutions map every input pixel to a
  2x2 block on its own: each is one matmul over channels, done on channels-last tokens with the
  activation fused (:mod:`segany.models.fused`), without an image-shaped intermediate.
- **SAM 2's decoder** (:class:`segany.models.sam2.mask_decoder.MaskDecoder`) goes the same way:
  its object-score token leads the output tokens, its high-resolution skip features are laid out
  once per image for the matmul upscaling with the transposed convolutions' biases folded in
  (:class:`HighResSkips`), IoUs go through a sigmoid where the model says so, and a single-mask
  request falls back to the best multimask output by the model's own stability rule.
- The dense positional encoding is cached until its buffer changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..models.common import layer_norm_last
from ..models.fused import dense_act
from ..models.mask_decoder import MaskDecoder
from ..models.prompt_encoder import PromptEncoder
from ..models.sam2.mask_decoder import MaskDecoder as Sam2MaskDecoder
from ..models.transformer import Attention, TwoWayAttentionBlock, TwoWayTransformer

PROMPT_CHUNK = 4  # prompts decoded at once: their image tokens (4 MB each at SAM's size) stay cache-sized
UPSCALE_CHUNK = 1  # prompts per upscaling step: keeps the (32, 4h, 4w) features cache-sized


# --- attention -------------------------------------------------------------------------------
# Three evaluation orders of Attention.forward, the same result up to float rounding:
# - "standard": project queries, keys and values, attend, project the output;
# - "few_queries" (a handful of tokens reading the image tokens): fold the key projection into the
#   queries and the value projection after the weighted sum, so the image tokens are never
#   projected (a per-query constant in the scores, from the key bias, cannot change the softmax);
# - "few_keys" (image tokens reading a handful of tokens): fold the query projection into the keys
#   and the output projection into the values, so only the handful is projected.
# A batch of 1 on either side is shared by the other's batch.


def plan(attn: Attention, batch_q: int, num_q: int, batch_k: int, num_k: int) -> str:
    """The cheapest evaluation order by multiply-adds."""
    c, d, h = attn.embedding_dim, attn.internal_dim, attn.num_heads
    batch = max(batch_q, batch_k)
    standard = (batch_q * num_q * c * d + 2 * batch_k * num_k * c * d + 2 * batch * num_q * num_k * d
                + batch * num_q * d * c)
    few_queries = 4 * batch * num_q * c * d + 2 * batch * h * num_q * num_k * c
    few_keys = 4 * batch * num_k * c * d + 2 * batch * h * num_q * num_k * c + batch_q * num_q * c
    costs = {"standard": standard, "few_queries": few_queries, "few_keys": few_keys}
    return min(costs, key=costs.__getitem__)


def attention(
    attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, residual: torch.Tensor | None = None
) -> torch.Tensor:
    """``attn(q, k, v)``, plus ``residual`` when given, in the cheapest order for these shapes."""
    path = plan(attn, q.shape[0], q.shape[1], k.shape[0], k.shape[1])
    if path == "few_keys":
        return few_keys(attn, q, k, v, residual)
    out = few_queries(attn, q, k, v) if path == "few_queries" else attn(q, k, v)
    return out if residual is None else residual + out


def _head_weights(attn: Attention, linear: nn.Linear) -> torch.Tensor:
    """A projection's weight split per head: (heads, head_dim, C)."""
    return linear.weight.reshape(attn.num_heads, -1, attn.embedding_dim)


def project(attn: Attention, linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, N, C) through one of ``attn``'s input projections, split per head: (B, h, N, d)."""
    return attn.separate_heads(linear(x))


def attend_projected(attn: Attention, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Attention of queries (B, Nq, C) to keys and values already projected by :func:`project`
    (a batch of 1 is shared by all queries): the standard order without re-projecting them."""
    q = attn.separate_heads(attn.q_proj(q))
    batch = max(q.shape[0], keys.shape[0])
    keys, values = keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1)
    out = F.scaled_dot_product_attention(q, keys, values)
    return attn.out_proj(attn.recombine_heads(out))


def scaled_queries(attn: Attention, q: torch.Tensor) -> torch.Tensor:
    """Projected queries (1, Nq, C) → (h*d, Nq), softmax scale folded in, for :func:`read_few`."""
    return (attn.q_proj(q[0]) * (attn.internal_dim // attn.num_heads) ** -0.5).T.contiguous()


def read_few(
    attn: Attention, queries: torch.Tensor, k: torch.Tensor, v: torch.Tensor, residual: torch.Tensor
) -> torch.Tensor:
    """Many queries already projected by :func:`scaled_queries` (h*d, Nq), shared by the batch,
    reading a handful of keys (B, Nk, C); returns ``residual`` + output (B, Nq, C).

    Each head's keys go into a block-diagonal (h*Nk, h*d) matrix, so all heads' scores are one
    matmul of the unrepeated queries, laid out (B, h*Nk, Nq) so that the softmax over the few keys
    runs along a long axis; the output projection is folded into the values.
    """
    heads = attn.num_heads
    batch, num_k = k.shape[0], k.shape[1]
    keys = attn.separate_heads(attn.k_proj(k))  # (B, h, Nk, d)
    eye = torch.eye(heads, dtype=keys.dtype, device=keys.device)
    block_keys = torch.einsum("bhnd,hg->bhngd", keys, eye).reshape(batch, heads * num_k, -1)
    scores = torch.matmul(block_keys, queries)  # (B, h*Nk, Nq)
    probs = torch.softmax(scores.unflatten(1, (heads, num_k)), dim=2).flatten(1, 2)
    return torch.baddbmm(residual.expand(batch, -1, -1), probs.transpose(1, 2), _value_map(attn, v))


def _value_map(attn: Attention, v: torch.Tensor) -> torch.Tensor:
    """Values with the output projection folded in, (B, h*Nk, C). Each head's weights sum to
    one, so a 1/h share of the output bias on every row adds exactly the bias."""
    heads, head_dim = attn.num_heads, attn.internal_dim // attn.num_heads
    values = attn.separate_heads(attn.v_proj(v))
    out_weight = attn.out_proj.weight.view(attn.embedding_dim, heads, head_dim).permute(1, 2, 0)  # (h, d, C)
    return torch.matmul(values, out_weight).flatten(1, 2) + attn.out_proj.bias / heads


def few_queries(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scores (Q_h W_k,h) k^T and values ((P v) W_v,h^T + b_v): the keys stay unprojected."""
    heads, head_dim = attn.num_heads, attn.internal_dim // attn.num_heads
    queries = attn.separate_heads(attn.q_proj(q))  # (B, h, Nq, d)
    folded = torch.matmul(queries, _head_weights(attn, attn.k_proj)) * head_dim**-0.5  # (B, h, Nq, C)
    if k.shape[0] == 1 and q.shape[0] > 1:
        rows = folded.reshape(-1, folded.shape[-1])
        mixed = torch.softmax(rows @ k[0].T, dim=-1) @ v[0]
        mixed = mixed.view(folded.shape)
    else:
        folded = folded.flatten(1, 2)
        mixed = torch.softmax(torch.matmul(folded, k.transpose(1, 2)), dim=-1) @ v
        mixed = mixed.unflatten(1, (heads, -1))
    values = torch.matmul(mixed, _head_weights(attn, attn.v_proj).transpose(1, 2))  # (B, h, Nq, d)
    values = values + attn.v_proj.bias.view(heads, 1, head_dim)
    return attn.out_proj(attn.recombine_heads(values))


def few_keys(
    attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, residual: torch.Tensor | None = None
) -> torch.Tensor:
    """Scores q (W_q,h^T K_h^T) + b_q,h K_h^T and output P (V_h W_o,h^T) + b_o: the queries stay unprojected."""
    heads, head_dim = attn.num_heads, attn.internal_dim // attn.num_heads
    scale = head_dim**-0.5
    keys = attn.separate_heads(attn.k_proj(k))  # (Bk, h, Nk, d)
    key_map = (torch.matmul(keys, _head_weights(attn, attn.q_proj)) * scale).flatten(1, 2)  # (Bk, h*Nk, C)
    key_bias = (torch.matmul(keys, attn.q_proj.bias.view(heads, head_dim, 1)) * scale).flatten(1, 2)
    value_map = _value_map(attn, v)  # (Bv, h*Nk, C)
    # Scores laid out (B, h*Nk, Nq) so the softmax over the few keys runs along a long axis.
    if q.shape[0] == 1 and k.shape[0] > 1:
        scores = torch.addmm(key_bias.reshape(-1, 1), key_map.reshape(-1, key_map.shape[-1]), q[0].T)
        scores = scores.view(k.shape[0], -1, q.shape[1])
    else:
        scores = torch.matmul(key_map, q.transpose(1, 2)) + key_bias
    probs = torch.softmax(scores.unflatten(1, (heads, -1)), dim=2).flatten(1, 2).transpose(1, 2)
    if residual is None:
        return torch.matmul(probs, value_map)
    batch = max(probs.shape[0], residual.shape[0])
    return torch.baddbmm(residual.expand(batch, -1, -1), probs.expand(batch, -1, -1), value_map.expand(batch, -1, -1))


# --- the two-way transformer -----------------------------------------------------------------


@dataclass
class SharedImageTokens:
    """The image side of the decoder for one image without a mask prompt: the same for every
    prompt, so prepared once (:meth:`FastMaskDecoder.share_image`) and reused by each batch.

    Holds the image tokens, their positional encodings, and the first block's projections of
    them (its image tokens are not yet prompt-specific): the token-to-image keys and values
    and the image-to-token queries.
    """

    keys: torch.Tensor  # (1, N, C)
    key_pe: torch.Tensor  # (1, N, C)
    token_to_image_keys: torch.Tensor  # (1, h, N, d)
    token_to_image_values: torch.Tensor  # (1, h, N, d)
    image_to_token_queries: torch.Tensor  # (h*d, N), scaled


def _tokens(image: torch.Tensor) -> torch.Tensor:
    return image.flatten(2).transpose(1, 2).contiguous()


def share_block(block: TwoWayAttentionBlock, keys: torch.Tensor, key_pe: torch.Tensor) -> SharedImageTokens:
    """The block's prompt-independent projections of image tokens (1, N, C)."""
    k = keys + key_pe
    to_image = block.cross_attn_token_to_image
    return SharedImageTokens(
        keys, key_pe, project(to_image, to_image.k_proj, k), project(to_image, to_image.v_proj, keys),
        scaled_queries(block.cross_attn_image_to_token, k),
    )


def block_forward(
    block: TwoWayAttentionBlock,
    queries: torch.Tensor,
    keys: torch.Tensor,
    query_pe: torch.Tensor,
    key_pe: torch.Tensor,
    shared: SharedImageTokens | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``block(queries, keys, query_pe, key_pe)`` with image tokens (B or 1, N, C); with ``shared``
    (from :func:`share_block` of the same ``keys``), its projections are used instead."""
    if block.skip_first_layer_pe:
        queries = attention(block.self_attn, queries, queries, queries)
    else:
        q = queries + query_pe
        queries = attention(block.self_attn, q, q, queries, residual=queries)
    queries = block.norm1(queries)

    q = queries + query_pe
    if shared is None:
        k = keys + key_pe
        queries = block.norm2(attention(block.cross_attn_token_to_image, q, k, keys, residual=queries))
    else:
        attended = attend_projected(block.cross_attn_token_to_image, q, shared.token_to_image_keys,
                                    shared.token_to_image_values)
        queries = block.norm2(queries + attended)
    queries = block.norm3(queries + block.mlp(queries))

    q = queries + query_pe
    if shared is None:
        keys = attention(block.cross_attn_image_to_token, k, q, queries, residual=keys)
    else:
        keys = read_few(block.cross_attn_image_to_token, shared.image_to_token_queries, q, queries, residual=keys)
    return queries, block.norm4(keys)


def transformer_forward(
    transformer: TwoWayTransformer,
    image_embedding: torch.Tensor | None,
    image_pe: torch.Tensor | None,
    point_embedding: torch.Tensor,
    shared: SharedImageTokens | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``transformer(image, pe, tokens)`` for a (B or 1, C, h, w) image: one image embedding shared
    by all prompts stays unexpanded until the first image-to-token attention. With ``shared`` the
    image and positions are taken from it and may be None."""
    if shared is None:
        keys, key_pe = _tokens(image_embedding), _tokens(image_pe)
    else:
        keys, key_pe = shared.keys, shared.key_pe
    queries = point_embedding
    for index, layer in enumerate(transformer.layers):
        queries, keys = block_forward(layer, queries, keys, point_embedding, key_pe, shared if index == 0 else None)
    q = queries + point_embedding
    k = keys + key_pe
    queries = transformer.norm_final_attn(attention(transformer.final_attn_token_to_image, q, k, keys, residual=queries))
    return queries, keys


# --- the mask decoder ------------------------------------------------------------------------


@dataclass
class HighResSkips:
    """SAM 2's projected high-resolution features of one image in the row and column order of
    :func:`upscaled_masks`' matmuls, each with its transposed convolution's bias added: what the
    upscaling adds to its two steps, prepared once per image (:meth:`FastMaskDecoder.share_high_res`)."""

    stride8: torch.Tensor  # (h*w, 4*C/4): rows (y, x), columns (kh, kw, c): feat_s1 + up1 bias
    stride4: torch.Tensor  # (4*h*w, 4*C/8): rows (y, x, kh1, kw1), columns (kh2, kw2, c): feat_s0 + up2 bias


def high_res_skips(decoder: Sam2MaskDecoder, feat_s0: torch.Tensor, feat_s1: torch.Tensor) -> HighResSkips:
    """:class:`HighResSkips` of one image's (1, C/8, 4h, 4w) and (1, C/4, 2h, 2w) maps: pixel
    (2y + kh, 2x + kw) of the stride-8 map is what the first 2x2 step writes from token (y, x)."""
    up1, _, _, up2, _ = decoder.output_upscaling
    c4, height, width = feat_s1.shape[1], feat_s1.shape[2] // 2, feat_s1.shape[3] // 2
    stride8 = feat_s1[0].view(c4, height, 2, width, 2).permute(1, 3, 2, 4, 0) + up1.bias
    c8 = feat_s0.shape[1]
    stride4 = feat_s0[0].view(c8, height, 2, 2, width, 2, 2).permute(1, 4, 2, 5, 3, 6, 0) + up2.bias
    return HighResSkips(stride8.reshape(height * width, -1), stride4.reshape(4 * height * width, -1))


_PAIRS = {2: torch.int32, 4: torch.int64}  # a dtype holding two values of an item size


def _to_image_layout(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(n, M, h*w*16) logits ordered (y, x, kh1, kw1, kh2, kw2) → (n, M, 4h, 4w) images. The
    horizontally adjacent kw2 pairs move as one wider item: a 7-D instead of an 8-D permutation,
    about ten times faster on CPU; the same bits."""
    n, num_masks = masks.shape[:2]
    pair = _PAIRS.get(masks.element_size())
    if pair is None or not masks.is_contiguous():
        moved = masks.view(n, num_masks, height, width, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)
        return moved.reshape(n, num_masks, 4 * height, 4 * width)
    moved = masks.view(pair).view(n, num_masks, height, width, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5)
    return moved.reshape(n, num_masks, 4 * height, 2 * width).view(masks.dtype)


def _per_prompt(rows: torch.Tensor, n: int) -> torch.Tensor:
    """One image's skip rows for ``n`` prompts stacked (no copy for one)."""
    return rows if n == 1 else rows.repeat(n, 1)


def upscaled_masks(
    decoder: MaskDecoder | Sam2MaskDecoder,
    keys: torch.Tensor,
    size: tuple[int, int],
    hyper_in: torch.Tensor,
    skips: HighResSkips | None = None,
) -> torch.Tensor:
    """``decoder.output_upscaling`` of the image tokens (B, h*w, C) dotted with ``hyper_in``
    (B, M, C/8): the (B, M, 4h, 4w) logits, each transposed convolution as a matmul over
    channels, a few prompts at a time so the (B, C/8, 4h, 4w) features stay in cache. With
    ``skips`` (SAM 2), each step adds its high-resolution features before the activation."""
    up1, norm, act1, up2, act2 = decoder.output_upscaling
    channels = keys.shape[-1]
    weight1 = up1.weight.permute(0, 2, 3, 1).reshape(channels, -1)  # columns ordered (kh, kw, out)
    weight2 = up2.weight.permute(2, 3, 1, 0).reshape(-1, up2.in_channels)  # rows ordered (kh, kw, out)
    bias1, bias2 = up1.bias.repeat(4), up2.bias.repeat(4)
    height, width = size
    chunks = []
    for start in range(0, keys.shape[0], UPSCALE_CHUNK):
        part = keys[start : start + UPSCALE_CHUNK]
        n = part.shape[0]
        first = bias1 if skips is None else _per_prompt(skips.stride8, n)
        x = torch.addmm(first, part.reshape(-1, channels), weight1)
        x = act1(layer_norm_last(x.view(-1, up1.out_channels), norm))
        if skips is None:
            x = dense_act(x, weight2, bias2, act2)  # rows (n, h, w, kh1, kw1), cols (kh2, kw2, c)
        else:
            x = act2(torch.addmm(_per_prompt(skips.stride4, n), x, weight2.T))
        masks = torch.bmm(hyper_in[start : start + n], x.view(n, -1, up2.out_channels).transpose(1, 2))
        chunks.append(_to_image_layout(masks, height, width))
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


class DecoderOutput(NamedTuple):
    """The selected mask tokens' logits (B, M, 4h, 4w) and IoU predictions (B, M), and (SAM 2 with
    an object-score head) the object-score logits (B, 1), else None."""

    masks: torch.Tensor
    iou: torch.Tensor
    object_score_logits: torch.Tensor | None


def values_key(*tensors: torch.Tensor) -> tuple | None:
    """What a value computed from ``tensors`` (parameters) may be cached under: their storage,
    version counters, devices and dtypes, and the grad mode; None for inference tensors, which
    have no version counter (compute afresh)."""
    if any(t.is_inference() for t in tensors):
        return None
    return (torch.is_inference_mode_enabled(),
            *((t.device, t.dtype, t.data_ptr(), t._version) for t in tensors))


class FastMaskDecoder:
    """Inference evaluation of a SAM or SAM 2 model's mask decoder (and the prompt encoder's dense
    positional encoding), over the model's own parameters: no weights of its own."""

    def __init__(self, mask_decoder: MaskDecoder | Sam2MaskDecoder, prompt_encoder: PromptEncoder) -> None:
        self.decoder = mask_decoder
        self.prompt_encoder = prompt_encoder
        self._dense_pe: torch.Tensor | None = None
        self._dense_pe_key: tuple | None = None

    def dense_pe(self) -> torch.Tensor:
        """``prompt_encoder.get_dense_pe()``, computed once and reused until the random Fourier
        matrix changes (new weights, another device or dtype) or the grad mode differs."""
        key = values_key(self.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix)
        if key is None:
            return self.prompt_encoder.get_dense_pe()
        if self._dense_pe_key != key:
            self._dense_pe = self.prompt_encoder.get_dense_pe()
            self._dense_pe_key = key
        return self._dense_pe

    @property
    def is_sam2(self) -> bool:
        return isinstance(self.decoder, Sam2MaskDecoder)

    def share_image(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, dense_prompt_embeddings: torch.Tensor
    ) -> SharedImageTokens:
        """The prompt-independent part of decoding one image (1, C, h, w) with a dense embedding
        that is the same for every prompt (no mask input), to pass as ``shared`` to later calls."""
        transformer = self.decoder.transformer
        image = image_embeddings + dense_prompt_embeddings[:1]
        return share_block(transformer.layers[0], _tokens(image), _tokens(image_pe))

    def share_high_res(self, high_res_features: list[torch.Tensor]) -> HighResSkips | None:
        """SAM 2's projected high-resolution maps [(1, C/8, 4h, 4w), (1, C/4, 2h, 2w)] of one image,
        laid out for the upscaling (pass as ``skips``); None for a decoder without them."""
        if not (self.is_sam2 and self.decoder.use_high_res_features):
            return None
        if not high_res_features:
            raise ValueError("this decoder uses high-resolution features: pass high_res_features")
        return high_res_skips(self.decoder, *high_res_features)

    def __call__(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        shared: SharedImageTokens | None = None,
        skips: HighResSkips | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``MaskDecoder.forward``: the selected masks and IoUs (SAM 2: a single mask falls back to
        the best multimask output where the model's dynamic stability rule says so)."""
        decoder = self.decoder
        dynamic = (not multimask_output and self.is_sam2 and decoder.dynamic_multimask_via_stability
                   and not decoder.training)
        selected = slice(1, None) if multimask_output else slice(None) if dynamic else slice(0, 1)
        masks, iou, _ = self.decode(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                                    selected, shared, skips)
        if dynamic:
            return decoder._dynamic_multimask_via_stability(masks, iou)
        return masks, iou

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        selected: slice = slice(None),
        shared: SharedImageTokens | None = None,
        skips: HighResSkips | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits (B, M, 4h, 4w) and IoU predictions (B, M) of the ``selected`` mask tokens
        (all four by default): ``MaskDecoder.predict_masks`` for one image embedding (1, C, h, w)."""
        masks, iou, _ = self.decode(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                                    selected, shared, skips)
        return masks, iou

    def decode(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        selected: slice = slice(None),
        shared: SharedImageTokens | None = None,
        skips: HighResSkips | None = None,
    ) -> DecoderOutput:
        """:meth:`predict_masks` plus SAM 2's object-score logits.

        ``shared`` (from :meth:`share_image` of this image, for prompts without mask input) skips
        recomputing the prompt-independent part; ``skips`` (from :meth:`share_high_res`, required
        by a SAM 2 decoder with high-resolution features) are the image's skip features; large
        batches go through a few prompts at a time.
        """
        batch = sparse_prompt_embeddings.shape[0]
        if self.is_sam2 and self.decoder.use_high_res_features and skips is None:
            raise ValueError("this decoder uses high-resolution features: pass skips=share_high_res(features)")
        if batch > PROMPT_CHUNK:
            dense = dense_prompt_embeddings
            parts = [
                self.decode(image_embeddings, image_pe, sparse_prompt_embeddings[i : i + PROMPT_CHUNK],
                            dense if dense.shape[0] == 1 else dense[i : i + PROMPT_CHUNK], selected, shared, skips)
                for i in range(0, batch, PROMPT_CHUNK)
            ]
            scores = None if parts[0][2] is None else torch.cat([p[2] for p in parts])
            return DecoderOutput(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), scores)
        decoder = self.decoder
        weights = [decoder.iou_token.weight, decoder.mask_tokens.weight]
        object_token = self.is_sam2 and decoder.pred_obj_scores
        if object_token:
            weights.insert(0, decoder.obj_score_token.weight)
        first = int(object_token)  # index of the IoU token
        output_tokens = torch.cat(weights, dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse_prompt_embeddings], dim=1)

        if shared is None:
            dense = dense_prompt_embeddings
            if dense.shape[0] > 1 and dense.stride(0) == 0:  # one embedding broadcast over the prompts
                dense = dense[:1]
            hs, keys = transformer_forward(decoder.transformer, image_embeddings + dense, image_pe, tokens)
        else:
            hs, keys = transformer_forward(decoder.transformer, None, None, tokens, shared)
        iou_pred = decoder.iou_prediction_head(hs[:, first, :])[:, selected]
        if self.is_sam2 and decoder.iou_prediction_use_sigmoid:
            iou_pred = iou_pred.sigmoid()
        mask_tokens_out = hs[:, first + 1 : first + 1 + decoder.num_mask_tokens, :]

        indices = range(decoder.num_mask_tokens)[selected]
        hyper_in = torch.stack(
            [decoder.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in indices], dim=1
        )
        masks = upscaled_masks(decoder, keys, tuple(image_embeddings.shape[-2:]), hyper_in, skips)
        scores = decoder.pred_obj_score_head(hs[:, 0, :]) if object_token else None
        return DecoderOutput(masks, iou_pred, scores)
