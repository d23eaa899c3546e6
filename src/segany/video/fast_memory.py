"""Inference fast path of SAM 2's memory conditioning for tracking (``Sam2.condition_on_memory``
on a frame that is not an initial conditioning frame), with the same answers up to float rounding
(tests/test_video_fast.py compares it with the plain path).

It does less work per frame than the plain path, not different work:

- **Keys once per memory.** A cross-attention key is ``RoPE(k_proj(memory + spatial_pos +
  tpos[slot]))``. ``k_proj`` and the rotation are linear, so it is ``RoPE(k_proj(memory +
  spatial_pos))`` — fixed once the frame's memory is encoded, computed once per memory and layer
  and kept while the memory is attended to — plus ``RoPE(W_k tpos[slot])``, one term per temporal
  slot and layer. The object pointers (a few tokens, offsets changing every frame) are projected
  every frame and not rotated, as in the plain path.
- **No value projection.** The values ``v_proj(memory)`` are an affine map of mem_dim (64) wide
  tokens, and each row of the attention weights sums to 1, so ``out_proj(P v_proj(X)) =
  (P X) (W_o W_v)^T + (W_o b_v + b_o)``: the weights multiply the 64-wide memory instead of its
  256-wide projection (4x less work in the P V product) and the values are never formed.
- The attention itself runs as two matmuls over blocks of queries, with the softmax's
  normalisation applied to the (block, mem_dim) result. The scores are in base 2 (the queries'
  scale times log2 e) and the weights their ``exp2``: the same softmax, and PyTorch's exp2
  kernel took about half the time of its exp on a 1024 x 512 block (one AMD Zen 3 core, AVX2).
  When a block's rows of weights would not
  stay in cache (many memory tokens: 7 x 4096 at 1024 px), the keys are taken in tiles with an
  online softmax (running row maximum and sum, the partial P V rescaled when the maximum grows,
  as flash attention does), so the weights are written and read from cache instead of memory.
- **The layers in place.** The memory-attention layers run on one (N, C) residual stream that each
  branch's output projection is accumulated into (``addmm_``: no bias broadcast copy, no separate
  residual add); the self-attention's q / k / v projections are one matmul over the shared input;
  the MLP's first linear and its ReLU / GELU are one oneDNN kernel (``models.fused.dense_act``), the
  projections oneDNN kernels with the bias added in the kernel (``models.fused.linear``).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models.fused import dense_act, linear
from ..models.position_encoding import apply_rotary_enc
from ..models.sam2 import FrameFeatures, ObjectPointer, Sam2, SpatialMemory
from ..models.sam2.memory_attention import MemoryAttentionLayer, RoPEAttention
from ..predict.fast_decoder import values_key

QUERY_BLOCK = 256  # queries per attention block: the (block, keys) weights stay in cache
SCORE_BYTES = 8 << 20  # larger (block, keys) weights than this: keys in tiles, online softmax
TILE_QUERIES, TILE_KEYS = 1024, 512  # the tiled path's block: 2 MiB of weights, one core's L2
LOG2_E = math.log2(math.e)  # softmax(s) = exp2(s log2 e) normalised: exp2 is the cheaper kernel
_ACTIVATIONS = {"relu": nn.ReLU(), "gelu": nn.GELU(), "glu": nn.GLU()}  # dense_act fuses the first two


@dataclass
class MemoryKeys:
    """One memory frame's cached attention inputs: ``tokens`` (HW, mem_dim) float32 (the values'
    input) and, per layer, its rotated keys (heads, HW, d) without the temporal term."""

    source: torch.Tensor
    tokens: torch.Tensor
    keys: list[torch.Tensor]


class MemoryKeyCache:
    """One object's :class:`MemoryKeys` by stored memory tensor; entries not used by the last
    frame are dropped, so it holds at most the memories one frame attends to."""

    def __init__(self) -> None:
        self._entries: dict[int, MemoryKeys] = {}
        self.key: tuple | None = None  # the weights and spatial position encoding they were made with
        self.computed = 0  # memories whose keys were computed (tests)

    def get(self, features: torch.Tensor, make: Callable[[torch.Tensor], MemoryKeys]) -> MemoryKeys:
        entry = self._entries.get(id(features))
        if entry is None or entry.source is not features:
            entry = self._entries[id(features)] = make(features)
            self.computed += 1
        return entry

    def keep_only(self, used: Sequence[torch.Tensor]) -> None:
        ids = {id(t) for t in used}
        self._entries = {k: v for k, v in self._entries.items() if k in ids}

    def reset(self, key: tuple | None) -> None:
        self._entries.clear()
        self.key = key

    def __len__(self) -> int:
        return len(self._entries)


def _rotate(x: torch.Tensor, attn: RoPEAttention) -> torch.Tensor:
    """(heads, N, d) tokens of one query-sized grid rotated as the attention rotates its queries."""
    return apply_rotary_enc(x[None], x[None, :, :0], attn.freqs_cis(x.shape[-2], x.device))[0][0]


def _heads(x: torch.Tensor, attn: RoPEAttention) -> torch.Tensor:
    """(N, h*d) → (h, N, d)."""
    return x.reshape(x.shape[0], attn.num_heads, -1).transpose(0, 1)


@dataclass
class _LayerConstants:
    slot_keys: list[torch.Tensor] | None  # per temporal slot (heads, HW, d): RoPE(W_k tpos[slot])
    value_out: torch.Tensor  # (heads * mem_dim, C): per head (W_o,h W_v,h)^T
    value_out_bias: torch.Tensor  # (C,): W_o b_v + b_o


class MemoryConditioner:
    """``Sam2.condition_on_memory`` of tracked frames (batch 1, eval) with per-memory key caching
    and without the value projection; see the module docstring."""

    def __init__(self, model: Sam2) -> None:
        self.model = model
        self._constants: tuple[tuple, list[_LayerConstants]] | None = None
        self._scores: list[torch.Tensor] = []  # the attention weights of a block of queries
        self._keys: list[torch.Tensor] = []  # per layer: the key buffer, reused frame to frame

    def _buffer(self, buffers: list[torch.Tensor], index: int, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """``buffers[index]`` viewed as ``shape``, grown when too small: the same memory every frame
        (a fresh allocation of this size starts with page faults)."""
        while len(buffers) <= index:
            buffers.append(like.new_empty(0))
        size = math.prod(shape)
        if buffers[index].numel() < size or buffers[index].device != like.device:
            buffers[index] = like.new_empty(size)
        return buffers[index][:size].view(shape)

    def _cross_attentions(self) -> list[tuple[nn.Module, RoPEAttention]]:
        return [(layer, layer.cross_attn_image) for layer in self.model.memory_attention.layers]

    def _weights_key(self, memory_pos: torch.Tensor) -> tuple | None:
        tensors = [self.model.maskmem_tpos_enc]
        for _, attn in self._cross_attentions():
            tensors += [attn.k_proj.weight, attn.k_proj.bias, attn.v_proj.weight, attn.v_proj.bias,
                        attn.out_proj.weight, attn.out_proj.bias]
        key = values_key(*tensors)
        return None if key is None else (key, memory_pos.data_ptr(), tuple(memory_pos.shape))

    def _layer_constants(self, key: tuple | None, grid: int) -> list[_LayerConstants]:
        if key is not None and self._constants is not None and self._constants[0] == (key, grid):
            return self._constants[1]
        model = self.model
        constants = []
        for layer, attn in self._cross_attentions():
            slot_keys = None
            if layer.pos_enc_at_cross_attn_keys:
                tpos = model.maskmem_tpos_enc.reshape(model.num_maskmem, -1)
                slot_keys = [_rotate(_heads((attn.k_proj.weight @ t).expand(grid, -1), attn), attn) for t in tpos]
            heads, d = attn.num_heads, attn.internal_dim // attn.num_heads
            w_v = attn.v_proj.weight.reshape(heads, d, -1)  # (h, d, mem_dim)
            w_o = attn.out_proj.weight.reshape(-1, heads, d).transpose(0, 1)  # (h, C, d)
            value_out = torch.bmm(w_o, w_v).transpose(1, 2).reshape(-1, w_o.shape[1])  # (h*mem_dim, C)
            constants.append(_LayerConstants(slot_keys, value_out,
                                             attn.out_proj.weight @ attn.v_proj.bias + attn.out_proj.bias))
        if key is not None:
            self._constants = ((key, grid), constants)
        return constants

    def _memory_keys(self, features: torch.Tensor, spatial_pos: torch.Tensor) -> MemoryKeys:
        tokens = features.flatten(2)[0].t().float()  # (HW, mem_dim)
        keys = []
        for layer, attn in self._cross_attentions():
            k_in = tokens + spatial_pos if layer.pos_enc_at_cross_attn_keys else tokens
            keys.append(_rotate(_heads(linear(k_in, attn.k_proj), attn), attn))
        return MemoryKeys(features, tokens, keys)

    def condition(self, features: FrameFeatures, memories: Sequence[SpatialMemory], pointers: Sequence[ObjectPointer],
                  memory_pos: torch.Tensor, num_frames: int, cache: MemoryKeyCache) -> torch.Tensor:
        """The (1, C, h, w) features of a tracked frame fused with its memories (what
        ``condition_on_memory(features, False, memories, pointers, memory_pos, num_frames)`` gives)."""
        model = self.model
        feats = features.vision_feats
        b, c, h, w = feats.shape
        if b != 1:
            raise ValueError(f"the memory fast path tracks one object at a time, got a batch of {b}")
        if not memories:
            raise ValueError("a tracked frame needs memories")
        grid = h * w
        key = self._weights_key(memory_pos)
        if key is None or cache.key != key:
            cache.reset(key)
        constants = self._layer_constants(key, grid)
        spatial_pos = memory_pos.flatten(2)[0].t()
        entries = [cache.get(m.features, lambda f: self._memory_keys(f, spatial_pos)) for m in memories]
        cache.keep_only([m.features for m in memories])
        tokens = [e.tokens for e in entries]
        ptr_tokens = ptr_pos = None
        if pointers and model.config.use_obj_ptrs_in_encoder:
            ptr_tokens, ptr_pos = model.pointer_tokens(pointers, 1, num_frames)
            ptr_tokens, ptr_pos = ptr_tokens[:, 0].float(), ptr_pos[:, 0]
            tokens.append(ptr_tokens)
        values = torch.cat(tokens, dim=0)  # (M, mem_dim)
        slots = [model.num_maskmem - m.t_pos - 1 for m in memories]
        attends = []
        for i, ((layer, attn), const) in enumerate(zip(self._cross_attentions(), constants)):
            keys = self._buffer(self._keys, i, (attn.num_heads, values.shape[0], attn.internal_dim // attn.num_heads),
                                values)
            for j, (entry, slot) in enumerate(zip(entries, slots)):
                if const.slot_keys is None:
                    keys[:, j * grid:(j + 1) * grid] = entry.keys[i]
                else:
                    torch.add(entry.keys[i], const.slot_keys[slot], out=keys[:, j * grid:(j + 1) * grid])
            if ptr_tokens is not None:
                k_in = ptr_tokens + ptr_pos if layer.pos_enc_at_cross_attn_keys else ptr_tokens
                keys[:, len(entries) * grid:] = _heads(linear(k_in, attn.k_proj), attn)
            attends.append(self._cross_attend(attn, const, keys, values))
        out = self._layers(feats.flatten(2)[0].t(), features.vision_pos.flatten(2)[0].t(), attends)
        return out.t().view(b, c, h, w)

    def _layers(self, curr: torch.Tensor, curr_pos: torch.Tensor,
                attends: Sequence[Callable[[torch.Tensor, torch.Tensor], None]]) -> torch.Tensor:
        """``model.memory_attention`` of the (N, C) current tokens and positions, each layer's
        cross-attention given by its ``attends`` entry, on one residual stream (see the module
        docstring)."""
        attention = self.model.memory_attention
        x = curr + 0.1 * curr_pos if attention.pos_enc_at_input else curr.clone()
        for layer, attend in zip(attention.layers, attends):
            self._self_attend(layer, layer.norm1(x), curr_pos, x)
            normed = layer.norm2(x)
            attend(normed + curr_pos if layer.pos_enc_at_cross_attn_queries else normed, x)
            normed = layer.norm3(x)
            hidden = dense_act(normed, layer.linear1.weight, layer.linear1.bias, _ACTIVATIONS[layer.activation_str])
            x.addmm_(hidden, layer.linear2.weight.t()).add_(layer.linear2.bias)
        return attention.norm(x)

    @staticmethod
    def _self_attend(layer: MemoryAttentionLayer, normed: torch.Tensor, pos: torch.Tensor, out: torch.Tensor) -> None:
        """Adds the layer's self-attention of the (N, C) normed tokens to ``out``; the projections
        that share an input are one matmul."""
        attn = layer.self_attn
        width = attn.internal_dim
        if layer.pos_enc_at_attn:
            w = torch.cat([attn.q_proj.weight, attn.k_proj.weight])
            q, k = dense_act(normed + pos, w, torch.cat([attn.q_proj.bias, attn.k_proj.bias]), None).split(width, dim=-1)
            v = linear(normed, attn.v_proj)
        else:
            w = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
            b = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
            q, k, v = dense_act(normed, w, b, None).split(width, dim=-1)
        q, k = _rotate(_heads(q, attn), attn), _rotate(_heads(k, attn), attn)
        heads = F.scaled_dot_product_attention(q[None], k[None], _heads(v, attn)[None])[0]  # (h, N, d)
        out.addmm_(heads.transpose(0, 1).reshape(normed.shape[0], -1), attn.out_proj.weight.t())
        out.add_(attn.out_proj.bias)

    def _cross_attend(self, attn: RoPEAttention, const: _LayerConstants, keys: torch.Tensor,
                      values: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], None]:
        def attend(queries: torch.Tensor, out: torch.Tensor) -> None:
            """Adds the cross-attention of the (N, C) queries to ``out``."""
            q = _rotate(_heads(linear(queries, attn.q_proj), attn), attn)  # (h, N, d)
            heads, n, d = q.shape
            m = keys.shape[1]
            keys_t = keys.transpose(1, 2)
            weighted = values.new_empty(heads, n, values.shape[1])
            q = q * (d ** -0.5 * LOG2_E)  # scores in base 2: the weights are exp2 of them
            if QUERY_BLOCK * m * keys.element_size() <= SCORE_BYTES:
                self._attend_rows(q, keys_t, values, weighted)
            else:
                self._attend_tiles(q, keys_t, values, weighted)
            out.addmm_(weighted.transpose(0, 1).reshape(n, -1), const.value_out).add_(const.value_out_bias)

        return attend

    def _attend_rows(self, q: torch.Tensor, keys_t: torch.Tensor, values: torch.Tensor, out: torch.Tensor) -> None:
        """``out`` (h, N, mem_dim) = softmax(q keys_t) values, by blocks of whole rows of weights;
        q (h, N, d) already scaled (and by log2 e: the scores are in base 2), keys_t (h, d, M),
        values (M, mem_dim)."""
        heads, n, _ = q.shape
        m = keys_t.shape[-1]
        scores_buffer = self._buffer(self._scores, 0, (heads * QUERY_BLOCK * m,), values)
        for start in range(0, n, QUERY_BLOCK):
            stop = min(start + QUERY_BLOCK, n)
            scores = scores_buffer[:heads * (stop - start) * m].view(heads, stop - start, m)
            torch.bmm(q[:, start:stop], keys_t, out=scores)
            scores.sub_(scores.amax(dim=-1, keepdim=True)).exp2_()
            norm = scores.sum(dim=-1, keepdim=True)
            block = out[:, start:stop]
            torch.matmul(scores, values, out=block)
            block.div_(norm)

    def _attend_tiles(self, q: torch.Tensor, keys_t: torch.Tensor, values: torch.Tensor, out: torch.Tensor) -> None:
        """:meth:`_attend_rows` with the keys in tiles and an online softmax (see the module docstring)."""
        heads, n, _ = q.shape
        m = keys_t.shape[-1]
        scores_buffer = self._buffer(self._scores, 1, (heads * TILE_QUERIES * TILE_KEYS,), values)
        for start in range(0, n, TILE_QUERIES):
            stop = min(start + TILE_QUERIES, n)
            acc = out[:, start:stop]
            top = total = None
            for first in range(0, m, TILE_KEYS):
                last = min(first + TILE_KEYS, m)
                scores = scores_buffer[:heads * (stop - start) * (last - first)].view(heads, stop - start, last - first)
                torch.bmm(q[:, start:stop], keys_t[:, :, first:last], out=scores)
                tile_top = scores.amax(dim=-1, keepdim=True)
                if top is None:
                    top = tile_top
                elif bool((tile_top > top).any()):
                    grown = torch.maximum(top, tile_top)
                    scale = top.sub_(grown).exp2_()
                    total.mul_(scale)
                    acc.mul_(scale)
                    top = grown
                scores.sub_(top).exp2_()
                tile_values = values[first:last].expand(heads, -1, -1)
                if total is None:
                    total = scores.sum(dim=-1, keepdim=True)
                    torch.bmm(scores, tile_values, out=acc)
                else:
                    total.add_(scores.sum(dim=-1, keepdim=True))
                    acc.baddbmm_(scores, tile_values)
            acc.div_(total)
