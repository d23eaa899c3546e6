"""The two-way transformer of SAM's mask decoder: prompt tokens and image tokens attend to
each other in both directions (Kirillov et al., 2023, §3 and appendix A)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLPBlock


class Attention(nn.Module):
    """Multi-head attention with optional down-projection of the internal width.

    Queries are (Bq, Nq, C), keys and values (Bk, Nk, C); a batch size of 1 on either side is
    shared by the other's batch (one image, many prompts), and its projections are computed once. Three
    evaluation orders give the same result up to float rounding, and the cheapest for the shapes
    at hand is used:

    - ``standard``: project queries, keys and values, attend, project the output;
    - ``few queries`` (a handful of tokens reading the 4096 image tokens): fold the key projection
      into the queries and the value projection after the weighted sum, so the image tokens are
      never projected (a per-query constant in the scores, from the key bias, cannot change the
      softmax and is left out);
    - ``few keys`` (image tokens reading a handful of tokens): fold the query projection into the
      keys and the output projection into the values, so only the handful is projected.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide embedding_dim // downsample_rate")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def _head_weights(self, linear: nn.Linear) -> torch.Tensor:
        """A projection's weight split per head: (heads, head_dim, C)."""
        return linear.weight.reshape(self.num_heads, -1, self.embedding_dim)

    def plan(self, batch_q: int, num_q: int, batch_k: int, num_k: int) -> str:
        """The cheapest evaluation order by multiply-adds (see the class docstring)."""
        c, d, h = self.embedding_dim, self.internal_dim, self.num_heads
        batch = max(batch_q, batch_k)
        standard = (batch_q * num_q * c * d + 2 * batch_k * num_k * c * d + 2 * batch * num_q * num_k * d
                    + batch * num_q * d * c)
        few_queries = 4 * batch * num_q * c * d + 2 * batch * h * num_q * num_k * c
        few_keys = 4 * batch * num_k * c * d + 2 * batch * h * num_q * num_k * c + batch_q * num_q * c
        costs = {"standard": standard, "few_queries": few_queries, "few_keys": few_keys}
        return min(costs, key=costs.__getitem__)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        path = self.plan(q.shape[0], q.shape[1], k.shape[0], k.shape[1])
        if path == "few_queries":
            return self._few_queries(q, k, v)
        if path == "few_keys":
            return self._few_keys(q, k, v)
        return self._standard(q, k, v)

    # Written with broadcasting matmuls and shape-free reshapes so that a traced graph (ONNX
    # export) stays valid for any batch size and number of tokens. The branches on a batch of 1
    # shared by a larger batch only merge that batch into one large matmul.

    def _standard(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = self._split_heads(self.q_proj(q))
        k = self._split_heads(self.k_proj(k))
        v = self._split_heads(self.v_proj(v))
        if k.shape[0] != q.shape[0]:
            batch = max(q.shape[0], k.shape[0])
            q, k, v = q.expand(batch, -1, -1, -1), k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).flatten(2))

    def _few_queries(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Scores (Q_h W_k,h) k^T and values ((P v) W_v,h^T + b_v): the keys stay unprojected."""
        heads, head_dim = self.num_heads, self.internal_dim // self.num_heads
        queries = self._split_heads(self.q_proj(q))  # (B, h, Nq, d)
        folded = torch.matmul(queries, self._head_weights(self.k_proj)) * head_dim**-0.5  # (B, h, Nq, C)
        if k.shape[0] == 1 and q.shape[0] > 1:
            rows = folded.reshape(-1, folded.shape[-1])
            mixed = torch.softmax(rows @ k[0].T, dim=-1) @ v[0]
            mixed = mixed.view(folded.shape)
        else:
            folded = folded.flatten(1, 2)
            mixed = torch.softmax(torch.matmul(folded, k.transpose(1, 2)), dim=-1) @ v
            mixed = mixed.unflatten(1, (heads, -1))
        values = torch.matmul(mixed, self._head_weights(self.v_proj).transpose(1, 2))  # (B, h, Nq, d)
        values = values + self.v_proj.bias.view(heads, 1, head_dim)
        return self.out_proj(values.transpose(1, 2).flatten(2))

    def _few_keys(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Scores q (W_q,h^T K_h^T) + b_q,h K_h^T and output P (V_h W_o,h^T) + b_o: the queries stay unprojected."""
        heads, head_dim = self.num_heads, self.internal_dim // self.num_heads
        scale = head_dim**-0.5
        keys = self._split_heads(self.k_proj(k))  # (Bk, h, Nk, d)
        values = self._split_heads(self.v_proj(v))
        key_map = (torch.matmul(keys, self._head_weights(self.q_proj)) * scale).flatten(1, 2)  # (Bk, h*Nk, C)
        key_bias = (torch.matmul(keys, self.q_proj.bias.view(heads, head_dim, 1)) * scale).flatten(1, 2)
        out_weight = self.out_proj.weight.view(self.embedding_dim, heads, head_dim).permute(1, 2, 0)  # (h, d, C)
        value_map = torch.matmul(values, out_weight).flatten(1, 2)  # (Bv, h*Nk, C)
        # Scores laid out (B, h*Nk, Nq) so the softmax over the few keys runs along a long axis.
        if q.shape[0] == 1 and k.shape[0] > 1:
            scores = torch.addmm(key_bias.reshape(-1, 1), key_map.reshape(-1, key_map.shape[-1]), q[0].T)
            scores = scores.view(k.shape[0], -1, q.shape[1])
        else:
            scores = torch.matmul(key_map, q.transpose(1, 2)) + key_bias
        probs = torch.softmax(scores.unflatten(1, (heads, -1)), dim=2).flatten(1, 2)
        return torch.matmul(probs.transpose(1, 2), value_map) + self.out_proj.bias


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token→image, MLP on tokens, image→token — each with a LayerNorm."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        q = queries + query_pe
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Stack of two-way blocks and a final token→image attention."""

    def __init__(self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int, attention_downsample_rate: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, attention_downsample_rate, skip_first_layer_pe=i == 0)
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, C, h, w) image, (1, C, h, w) positions, (B, N, C) tokens → (tokens, image tokens (B, h*w, C)).

        ``b`` is B or 1: one image embedding shared by all prompts stays unexpanded until the first
        image-to-token attention makes the image tokens prompt-specific.
        """
        keys = image_embedding.flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        q = queries + point_embedding
        k = keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
