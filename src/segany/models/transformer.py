"""The two-way transformer of SAM's mask decoder: prompt tokens and image tokens attend to
each other in both directions (Kirillov et al., 2023, §3 and appendix A)."""
from __future__ import annotations

from dataclasses import dataclass

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

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attention output, plus ``residual`` when given (added inside the last matmul where possible)."""
        path = self.plan(q.shape[0], q.shape[1], k.shape[0], k.shape[1])
        if path == "few_keys":
            return self._few_keys(q, k, v, residual)
        out = self._few_queries(q, k, v) if path == "few_queries" else self._standard(q, k, v)
        return out if residual is None else residual + out

    def project(self, linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, N, C) through one of the input projections, split per head: (B, h, N, d)."""
        return self._split_heads(linear(x))

    def attend_projected(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Attention of queries (B, Nq, C) to keys and values already projected by :meth:`project`
        (a batch of 1 is shared by all queries): the standard order without re-projecting them."""
        q = self._split_heads(self.q_proj(q))
        batch = max(q.shape[0], keys.shape[0])
        keys, values = keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1)
        out = F.scaled_dot_product_attention(q, keys, values)
        return self.out_proj(out.transpose(1, 2).flatten(2))

    def scaled_queries(self, q: torch.Tensor) -> torch.Tensor:
        """Projected queries (1, Nq, C) → (h*d, Nq), softmax scale folded in, for :meth:`read_few`."""
        return (self.q_proj(q[0]) * (self.internal_dim // self.num_heads) ** -0.5).T.contiguous()

    def read_few(
        self, queries: torch.Tensor, k: torch.Tensor, v: torch.Tensor, residual: torch.Tensor
    ) -> torch.Tensor:
        """Many queries already projected by :meth:`scaled_queries` (h*d, Nq), shared by the
        batch, reading a handful of keys (B, Nk, C); returns ``residual`` + output (B, Nq, C).

        Each head's keys go into a block-diagonal (h*Nk, h*d) matrix, so all heads' scores are
        one matmul of the unrepeated queries, laid out (B, h*Nk, Nq) so that the softmax over
        the few keys runs along a long axis; the output projection is folded into the values.
        """
        heads = self.num_heads
        batch, num_k = k.shape[0], k.shape[1]
        keys = self._split_heads(self.k_proj(k))  # (B, h, Nk, d)
        eye = torch.eye(heads, dtype=keys.dtype, device=keys.device)
        block_keys = torch.einsum("bhnd,hg->bhngd", keys, eye).reshape(batch, heads * num_k, -1)
        scores = torch.matmul(block_keys, queries)  # (B, h*Nk, Nq)
        probs = torch.softmax(scores.unflatten(1, (heads, num_k)), dim=2).flatten(1, 2)
        return torch.baddbmm(residual.expand(batch, -1, -1), probs.transpose(1, 2), self._value_map(v))

    def _value_map(self, v: torch.Tensor) -> torch.Tensor:
        """Values with the output projection folded in, (B, h*Nk, C). Each head's weights sum to
        one, so a 1/h share of the output bias on every row adds exactly the bias."""
        heads, head_dim = self.num_heads, self.internal_dim // self.num_heads
        values = self._split_heads(self.v_proj(v))
        out_weight = self.out_proj.weight.view(self.embedding_dim, heads, head_dim).permute(1, 2, 0)  # (h, d, C)
        return torch.matmul(values, out_weight).flatten(1, 2) + self.out_proj.bias / heads

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

    def _few_keys(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, residual: torch.Tensor | None
    ) -> torch.Tensor:
        """Scores q (W_q,h^T K_h^T) + b_q,h K_h^T and output P (V_h W_o,h^T) + b_o: the queries stay unprojected."""
        heads, head_dim = self.num_heads, self.internal_dim // self.num_heads
        scale = head_dim**-0.5
        keys = self._split_heads(self.k_proj(k))  # (Bk, h, Nk, d)
        key_map = (torch.matmul(keys, self._head_weights(self.q_proj)) * scale).flatten(1, 2)  # (Bk, h*Nk, C)
        key_bias = (torch.matmul(keys, self.q_proj.bias.view(heads, head_dim, 1)) * scale).flatten(1, 2)
        value_map = self._value_map(v)  # (Bv, h*Nk, C)
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


@dataclass
class SharedImageTokens:
    """The image side of the decoder for one image without a mask prompt: the same for every
    prompt, so prepared once (:meth:`TwoWayTransformer.share_image`) and reused by each batch.

    Holds the image tokens, their positional encodings, and the first block's projections of
    them (its image tokens are not yet prompt-specific): the token-to-image keys and values
    and the image-to-token queries.
    """

    keys: torch.Tensor  # (1, N, C)
    key_pe: torch.Tensor  # (1, N, C)
    token_to_image_keys: torch.Tensor  # (1, h, N, d)
    token_to_image_values: torch.Tensor  # (1, h, N, d)
    image_to_token_queries: torch.Tensor  # (h*d, N), scaled


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

    def share_image(self, keys: torch.Tensor, key_pe: torch.Tensor) -> SharedImageTokens:
        """This block's prompt-independent projections of image tokens (1, N, C)."""
        k = keys + key_pe
        to_image = self.cross_attn_token_to_image
        return SharedImageTokens(
            keys, key_pe, to_image.project(to_image.k_proj, k), to_image.project(to_image.v_proj, keys),
            self.cross_attn_image_to_token.scaled_queries(k),
        )

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        shared: SharedImageTokens | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (B, Nq, C) and image tokens (B or 1, N, C) → both updated. With ``shared``
        (from :meth:`share_image` of the same ``keys``), its projections are used instead."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = self.self_attn(q, q, queries, residual=queries)
        queries = self.norm1(queries)

        q = queries + query_pe
        if shared is None:
            k = keys + key_pe
            queries = self.norm2(self.cross_attn_token_to_image(q, k, keys, residual=queries))
        else:
            to_image = self.cross_attn_token_to_image
            attended = to_image.attend_projected(q, shared.token_to_image_keys, shared.token_to_image_values)
            queries = self.norm2(queries + attended)
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        if shared is None:
            keys = self.cross_attn_image_to_token(k, q, queries, residual=keys)
        else:
            keys = self.cross_attn_image_to_token.read_few(shared.image_to_token_queries, q, queries, residual=keys)
        return queries, self.norm4(keys)


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

    @staticmethod
    def _tokens(image: torch.Tensor) -> torch.Tensor:
        return image.flatten(2).transpose(1, 2).contiguous()

    def share_image(self, image_embedding: torch.Tensor, image_pe: torch.Tensor) -> SharedImageTokens:
        """What every prompt's pass over this image (1, C, h, w) has in common, for :meth:`forward`."""
        return self.layers[0].share_image(self._tokens(image_embedding), self._tokens(image_pe))

    def forward(
        self,
        image_embedding: torch.Tensor | None,
        image_pe: torch.Tensor | None,
        point_embedding: torch.Tensor,
        shared: SharedImageTokens | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, C, h, w) image, (1, C, h, w) positions, (B, N, C) tokens → (tokens, image tokens (B, h*w, C)).

        ``b`` is B or 1: one image embedding shared by all prompts stays unexpanded until the first
        image-to-token attention makes the image tokens prompt-specific. With ``shared`` (from
        :meth:`share_image`) the image and positions are taken from it and may be None.
        """
        if shared is None:
            keys, key_pe = self._tokens(image_embedding), self._tokens(image_pe)
        else:
            keys, key_pe = shared.keys, shared.key_pe
        queries = point_embedding
        for index, layer in enumerate(self.layers):
            queries, keys = layer(queries, keys, point_embedding, key_pe, shared if index == 0 else None)
        q = queries + point_embedding
        k = keys + key_pe
        queries = self.norm_final_attn(self.final_attn_token_to_image(q, k, keys, residual=queries))
        return queries, keys
