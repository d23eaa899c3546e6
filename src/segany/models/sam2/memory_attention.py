"""SAM 2's memory attention: the current frame's stride-16 features attend to themselves and to
the memories of other frames (spatial memories and object pointers), with axial rotary position
encoding (RoPE) on queries and spatial keys.

Sequences are (N, B, C) at the :class:`MemoryAttention` boundary (the official layout) and
batch-first inside the layers.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..position_encoding import apply_rotary_enc, compute_axial_cis
from ..transformer import Attention

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}


class RoPEAttention(Attention):
    """Multi-head attention with 2-D axial RoPE on q and on the first ``M - num_k_exclude_rope`` keys.

    Queries are a square grid of N = s * s tokens (B, N, C); keys / values (B, M, kv_in_dim) with
    ``rope_k_repeat`` hold M = r * N grid tokens (r memory frames) plus excluded ones (pointers).
    ``feat_sizes`` is the grid the rotations are first computed for; another square size is
    computed on demand.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: int | None = None,
        rope_theta: float = 10000.0,
        rope_k_repeat: bool = False,
        feat_sizes: tuple[int, int] = (64, 64),
    ) -> None:
        super().__init__(embedding_dim, num_heads, downsample_rate)
        self.kv_in_dim = embedding_dim if kv_in_dim is None else kv_in_dim
        self.k_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.dropout_p = dropout
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self.feat_sizes = tuple(feat_sizes)
        self._freqs_cis: torch.Tensor | None = None

    def freqs_cis(self, num_tokens: int, device: torch.device) -> torch.Tensor:
        """The complex rotations (N, d/2) of a square grid of ``num_tokens`` cells, cached."""
        cached = self._freqs_cis
        if cached is None or cached.shape[0] != num_tokens or cached.device != device:
            end_x, end_y = self.feat_sizes
            if end_x * end_y != num_tokens:
                end_x = end_y = math.isqrt(num_tokens)
                if end_x * end_y != num_tokens:
                    raise ValueError(f"RoPE attention needs a square grid of queries, got {num_tokens} tokens")
            cached = compute_axial_cis(self.internal_dim // self.num_heads, end_x, end_y, self.rope_theta, device)
            self._freqs_cis = cached
        return cached

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0) -> torch.Tensor:
        q = self.separate_heads(self.q_proj(q))
        k = self.separate_heads(self.k_proj(k))
        v = self.separate_heads(self.v_proj(v))
        if q.shape[-2] != k.shape[-2] and not self.rope_k_repeat:
            raise ValueError("queries and keys differ in length: this attention needs rope_k_repeat")
        num_k_rope = k.shape[-2] - num_k_exclude_rope
        q, k_rope = apply_rotary_enc(q, k[:, :, :num_k_rope], self.freqs_cis(q.shape[-2], q.device), self.rope_k_repeat)
        k = torch.cat([k_rope, k[:, :, num_k_rope:]], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout_p if self.training else 0.0)
        return self.out_proj(self.recombine_heads(out))


class MemoryAttentionLayer(nn.Module):
    """Pre-norm self-attention, cross-attention to the memory, MLP — each a residual branch."""

    def __init__(
        self,
        activation: str,
        cross_attention: RoPEAttention,
        d_model: int,
        dim_feedforward: int,
        dropout: float,
        pos_enc_at_attn: bool,
        pos_enc_at_cross_attn_keys: bool,
        pos_enc_at_cross_attn_queries: bool,
        self_attention: RoPEAttention,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation should be one of {', '.join(_ACTIVATIONS)}, not {activation!r}")
        self.d_model = d_model
        self.dim_feedforward = dim_feedforward
        self.dropout_value = dropout
        self.self_attn = self_attention
        self.cross_attn_image = cross_attention
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation_str = activation
        self.activation = _ACTIVATIONS[activation]
        self.pos_enc_at_attn = pos_enc_at_attn
        self.pos_enc_at_cross_attn_queries = pos_enc_at_cross_attn_queries
        self.pos_enc_at_cross_attn_keys = pos_enc_at_cross_attn_keys

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
        num_k_exclude_rope: int = 0,
        cross_attend: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Current tokens (B, N, C), memory (B, M, mem_dim) and their positions → updated tokens.

        ``cross_attend`` (inference fast paths) replaces the cross-attention to ``memory``: it maps
        the cross-attention's queries (B, N, C), before their projection, to its output (B, N, C)."""
        tgt2 = self.norm1(tgt)
        q = k = tgt2 + query_pos if self.pos_enc_at_attn else tgt2
        tgt = tgt + self.dropout1(self.self_attn(q, k, v=tgt2))

        tgt2 = self.norm2(tgt)
        queries = tgt2 + query_pos if self.pos_enc_at_cross_attn_queries else tgt2
        if cross_attend is not None:
            tgt2 = cross_attend(queries)
        else:
            tgt2 = self.cross_attn_image(
                q=queries,
                k=memory + pos if self.pos_enc_at_cross_attn_keys else memory,
                v=memory,
                num_k_exclude_rope=num_k_exclude_rope,
            )
        tgt = tgt + self.dropout2(tgt2)

        tgt2 = self.linear2(self.dropout(self.activation(self.linear1(self.norm3(tgt)))))
        return tgt + self.dropout3(tgt2)


class MemoryAttention(nn.Module):
    """``num_layers`` copies of ``layer`` and a final LayerNorm."""

    def __init__(self, d_model: int, pos_enc_at_input: bool, layer: MemoryAttentionLayer, num_layers: int,
                 batch_first: bool = True) -> None:
        super().__init__()
        self.d_model = d_model
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = nn.LayerNorm(d_model)
        self.pos_enc_at_input = pos_enc_at_input
        self.batch_first = batch_first

    def forward(
        self,
        curr: torch.Tensor,
        memory: torch.Tensor | None,
        curr_pos: torch.Tensor | None = None,
        memory_pos: torch.Tensor | None = None,
        num_obj_ptr_tokens: int = 0,
        cross_attends: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """Current features (N, B, C) conditioned on the memory (M, B, mem_dim) → (N, B, C).

        The last ``num_obj_ptr_tokens`` memory tokens are object pointers, excluded from RoPE.
        ``cross_attends``: one per layer, each its :class:`MemoryAttentionLayer` ``cross_attend``
        (batch-first); ``memory`` and ``memory_pos`` are then unused (None).
        """
        if cross_attends is not None and len(cross_attends) != self.num_layers:
            raise ValueError(f"{len(cross_attends)} cross_attends for {self.num_layers} layers")
        if memory is not None and curr.shape[1] != memory.shape[1]:
            raise ValueError(f"batch sizes differ: current {curr.shape[1]}, memory {memory.shape[1]}")
        output = curr
        if self.pos_enc_at_input and curr_pos is not None:
            output = output + 0.1 * curr_pos
        if self.batch_first:
            output = output.transpose(0, 1)
            memory = memory.transpose(0, 1) if memory is not None else None
            curr_pos = curr_pos.transpose(0, 1) if curr_pos is not None else None
            memory_pos = memory_pos.transpose(0, 1) if memory_pos is not None else None
        for i, layer in enumerate(self.layers):
            output = layer(tgt=output, memory=memory, pos=memory_pos, query_pos=curr_pos,
                           num_k_exclude_rope=num_obj_ptr_tokens,
                           cross_attend=None if cross_attends is None else cross_attends[i])
        normed = self.norm(output)
        return normed.transpose(0, 1) if self.batch_first else normed
