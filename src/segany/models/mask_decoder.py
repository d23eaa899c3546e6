"""SAM's mask decoder: output tokens read the image through the two-way transformer, then
hypernetwork MLPs turn each mask token into weights for the upscaled image features."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .common import LayerNorm2d, layer_norm_last
from .fused import dense_act
from .transformer import SharedImageTokens, TwoWayTransformer

_PROMPT_CHUNK = 4  # prompts decoded at once: their image tokens (4 MB each) stay cache-sized
_UPSCALE_CHUNK = 1  # prompts per upscaling step: keeps the 4h x 4w features cache-sized


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MaskDecoder(nn.Module):
    """Image embedding + prompt embeddings → low-res mask logits (B, M, 256, 256) and IoU (B, M).

    Token 0 is the single-mask output used for unambiguous prompts; tokens 1..3 are the
    ambiguity-aware whole / part / sub-part outputs returned when ``multimask_output`` is set.
    """

    def __init__(
        self,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        shared: SharedImageTokens | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        selected = slice(1, None) if multimask_output else slice(0, 1)
        return self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, selected, shared
        )

    def share_image(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, dense_prompt_embeddings: torch.Tensor
    ) -> SharedImageTokens:
        """The prompt-independent part of decoding one image (1, C, h, w) with a dense embedding
        that is the same for every prompt (no mask input), to pass as ``shared`` to later calls."""
        return self.transformer.share_image(image_embeddings + dense_prompt_embeddings[:1], image_pe)

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        selected: slice = slice(None),
        shared: SharedImageTokens | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits (B, M, 256, 256) and IoU predictions (B, M) of the ``selected`` mask tokens
        (all four by default).

        One image embedding (1, C, h, w) serves the whole batch of prompts; it is not copied per
        prompt while it is the same for all of them (no mask input). ``shared`` (from
        :meth:`share_image` of this image, for prompts without mask input) skips recomputing
        the prompt-independent part. Large batches go through a few prompts at a time, so the
        per-prompt image tokens stay cache-sized.
        """
        batch = sparse_prompt_embeddings.shape[0]
        step = batch if torch.jit.is_tracing() else _PROMPT_CHUNK
        if batch > step:
            dense = dense_prompt_embeddings
            parts = [
                self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings[i : i + step],
                                   dense if dense.shape[0] == 1 else dense[i : i + step], selected, shared)
                for i in range(0, batch, step)
            ]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse_prompt_embeddings], dim=1)

        if shared is None:
            dense = dense_prompt_embeddings
            if dense.shape[0] > 1 and dense.stride(0) == 0:  # one embedding broadcast over the prompts
                dense = dense[:1]
            hs, keys = self.transformer(image_embeddings + dense, image_pe, tokens)
        else:
            hs, keys = self.transformer(None, None, tokens, shared)
        iou_pred = self.iou_prediction_head(hs[:, 0, :])[:, selected]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        indices = range(self.num_mask_tokens)[selected]
        hyper_in = torch.stack(
            [self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in indices], dim=1
        )
        height, width = image_embeddings.shape[-2:]
        return self.masks_from_tokens(keys, (height, width), hyper_in), iou_pred

    def masks_from_tokens(
        self, keys: torch.Tensor, size: tuple[int, int], hyper_in: torch.Tensor
    ) -> torch.Tensor:
        """``output_upscaling`` of the image tokens (B, h*w, C) dotted with ``hyper_in`` (B, M, C/8).

        Each stride-2, 2x2 transposed convolution maps every input pixel to a 2x2 block on its
        own, i.e. it is one matmul over channels; done that way on channels-last tokens, and a few
        prompts at a time so the (B, 32, 4h, 4w) features stay in cache, the result is the official
        (B, M, 4h, 4w) logits without an image-shaped intermediate.
        """
        up1, norm, act1, up2, act2 = self.output_upscaling
        channels = keys.shape[-1]
        weight1 = up1.weight.permute(0, 2, 3, 1).reshape(channels, -1)  # columns ordered (kh, kw, out)
        weight2 = up2.weight.permute(2, 3, 1, 0).reshape(-1, up2.in_channels)  # rows ordered (kh, kw, out)
        bias1, bias2 = up1.bias.repeat(4), up2.bias.repeat(4)
        height, width = size
        num_masks = hyper_in.shape[1]
        # A traced graph (ONNX export) must not bake the example's batch size into a loop.
        step = keys.shape[0] if torch.jit.is_tracing() else _UPSCALE_CHUNK
        chunks = []
        for start in range(0, keys.shape[0], step):
            part = keys[start : start + step]
            n = part.shape[0]
            x = torch.addmm(bias1, part.reshape(-1, channels), weight1)
            x = act1(layer_norm_last(x.view(-1, up1.out_channels), norm))
            x = dense_act(x, weight2, bias2, act2)  # rows (n, h, w, kh1, kw1), cols (kh2, kw2, c)
            masks = torch.bmm(hyper_in[start : start + n], x.view(n, -1, up2.out_channels).transpose(1, 2))
            masks = masks.view(n, num_masks, height, width, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)
            chunks.append(masks.reshape(n, num_masks, 4 * height, 4 * width))
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)
