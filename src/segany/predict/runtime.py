"""How a :class:`segany.Predictor` runs its networks: precision, compilation, quantisation, backend.

- ``dtype=torch.float32`` (default): the exact path, same outputs as the official code up to float
  rounding.
- ``dtype=torch.bfloat16`` (CPUs with AVX512-BF16 or AMX, and GPUs) or ``torch.float16`` (GPUs):
  the image encoder, 97-99% of the work for a few prompts, runs under ``torch.autocast``: matmuls
  and convolutions in that dtype, reductions and the residual stream in float32. The mask decoder
  stays float32 unless ``decoder_dtype`` is given too (worth it for large prompt batches on GPU;
  its logits are the most rounding-sensitive part). Embeddings and logits are returned as float32.
- ``compile=True``: the image encoder goes through ``torch.compile`` (first call slow).
- ``quantize="int8"``: the image encoder's Linear layers use dynamic int8 quantisation (CPU).
- ``backend="onnxruntime"``: encoder and decoder run as ONNX graphs in onnxruntime (exported on
  the fly, or read from ``onnx_dir`` written by ``segany export onnx``); with ``quantize="int8"``
  the graphs are onnxruntime's dynamic int8 quantisations. ``decoder_backend`` overrides the
  backend of the prompt decoder alone, e.g. a bf16 torch encoder with the onnxruntime decoder
  (fewer, fused operations: faster for small prompt batches on CPU).
"""
from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Callable

import torch
from torch import nn

from ..errors import BackendError
from ..models.encoders.hiera import Hiera, Sam2ImageEncoder
from ..models.sam import Sam
from ..models.sam2 import Sam2
from .allocator import tune_malloc
from .fast_decoder import FastMaskDecoder, HighResSkips, SharedImageTokens, values_key
from .onnx_backend import OnnxRuntimeSam, check_backend

QUANTIZATIONS = ("int8",)
_DTYPE_NAMES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """A compute dtype from a torch dtype or its name (``"bf16"``, ``"float16"``, ...)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        if dtype.lower() not in _DTYPE_NAMES:
            raise BackendError(f"unknown dtype {dtype!r}: use one of float32, bfloat16, float16")
        return _DTYPE_NAMES[dtype.lower()]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise BackendError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
    return dtype


def _quantized_encoder(encoder: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notes of torch.ao.quantization (moving to torchao)
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(copy.deepcopy(encoder), {nn.Linear}, dtype=torch.qint8)


class Runtime:
    """The encoder and decoder calls of one predictor, configured once."""

    def __init__(
        self,
        model: Sam,
        dtype: torch.dtype | str | None = None,
        decoder_dtype: torch.dtype | str | None = None,
        compile: bool = False,
        quantize: str | None = None,
        backend: str = "torch",
        onnx_dir: str | os.PathLike | None = None,
        decoder_backend: str | None = None,
    ) -> None:
        self.model = model
        if model.device.type == "cpu":
            tune_malloc()
        self.dtype = resolve_dtype(dtype)
        self.decoder_dtype = resolve_dtype(decoder_dtype)
        self.backend = backend
        self.decoder_backend = decoder_backend or backend
        self.quantize = quantize
        self._check(compile, onnx_dir)
        onnx_encoder, onnx_decoder = backend == "onnxruntime", self.decoder_backend == "onnxruntime"

        self.onnx: OnnxRuntimeSam | None = None
        self.decoder = FastMaskDecoder(model.mask_decoder, model.prompt_encoder)
        self._shared: tuple[torch.Tensor, SharedImageTokens] | None = None  # (features, their decoder prep)
        self._encoder: Callable[[torch.Tensor], torch.Tensor] = model.image_encoder
        if onnx_encoder or onnx_decoder:
            if onnx_dir is None:
                # int8 graphs with an onnxruntime encoder; otherwise quantize is the torch encoder's
                self.onnx = OnnxRuntimeSam.from_model(model, quantize=bool(quantize) and onnx_encoder, encoder=onnx_encoder)
            else:
                self.onnx = OnnxRuntimeSam(onnx_dir, encoder=onnx_encoder)
                self.onnx.check_model(model)
        if onnx_encoder:
            self._encoder = self.onnx.encode
        elif quantize:
            self._encoder = _quantized_encoder(model.image_encoder)
        if compile:
            self._encoder = torch.compile(self._encoder)

    def _check(self, compile: bool, onnx_dir: str | os.PathLike | None) -> None:
        """Refuse option combinations that cannot work, with the reason."""
        device = self.model.device
        onnx_encoder, onnx_decoder = self.backend == "onnxruntime", self.decoder_backend == "onnxruntime"
        for name in (self.backend, self.decoder_backend):
            check_backend(name)
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            raise BackendError(f"quantize must be None or 'int8', got {self.quantize!r}")
        if torch.float16 in (self.dtype, self.decoder_dtype) and device.type == "cpu":
            raise BackendError("float16 needs a CUDA device; on CPU use dtype=torch.bfloat16")
        if self.quantize and self.dtype != torch.float32:
            raise BackendError("quantize='int8' runs the other layers in float32: leave dtype at float32")
        if (onnx_encoder and (self.dtype != torch.float32 or compile)) or (
            onnx_decoder and self.decoder_dtype != torch.float32
        ):
            raise BackendError("the onnxruntime backend runs float32 (or int8) graphs: no dtype or compile options")
        if onnx_dir is not None and not (onnx_encoder or onnx_decoder):
            raise BackendError("onnx_dir is only used with backend='onnxruntime'")
        if self.quantize and not onnx_encoder and device.type != "cpu":
            raise BackendError("dynamic int8 quantisation runs on CPU only")

    def autocast(self, dtype: torch.dtype) -> contextlib.AbstractContextManager:
        """The reduced-precision context for ``dtype``, or a no-op for float32."""
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.model.device.type, dtype=dtype)

    def encode(self, input_image: torch.Tensor) -> torch.Tensor:
        """Normalised, padded images (B, 3, S, S) → float32 embeddings (B, C, S / patch, S / patch),
        in one encoder pass (the onnxruntime graph takes one image: one run per image)."""
        with self.autocast(self.dtype):
            if self.backend == "onnxruntime" and input_image.shape[0] > 1:
                features = torch.cat([self._encoder(image[None]) for image in input_image])
            else:
                features = self._encoder(input_image)
        return features.to(self.model.device, torch.float32)

    def decode(
        self,
        features: torch.Tensor,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 low-res logits (B, M, low, low) and IoU predictions (B, M)."""
        selected = slice(1, None) if multimask_output else slice(0, 1)
        if self.decoder_backend == "onnxruntime" and (point_coords is not None or boxes is not None):
            low_res, iou = self.onnx.decode(features, point_coords, point_labels, boxes, mask_input)
            device = self.model.device
            return low_res[:, selected].to(device), iou[:, selected].to(device)
        model = self.model
        points = (point_coords, point_labels) if point_coords is not None else None
        with self.autocast(self.decoder_dtype):
            sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
            image_pe = self.decoder.dense_pe()
            low_res, iou = self.decoder(
                image_embeddings=features,
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
                shared=None if mask_input is not None else self._shared_tokens(features, image_pe, dense),
            )
        return low_res.float(), iou.float()

    def forget_image(self) -> None:
        """Drop the decoder's shared work for the last embedding (and the reference to it)."""
        self._shared = None

    def _shared_tokens(self, features: torch.Tensor, image_pe: torch.Tensor, dense: torch.Tensor) -> SharedImageTokens:
        """The decoder's prompt-independent work for ``features``, done on their first prompt."""
        if self._shared is None or self._shared[0] is not features:
            self._shared = (features, self.decoder.share_image(features, image_pe, dense))
        return self._shared[1]


class Sam2Runtime:
    """The encoder and decoder calls of a :class:`~segany.predict.sam2_predictor.Sam2Predictor`.

    ``dtype`` bfloat16 (or float16 on GPU) runs a copy of the image encoder with its weights cast
    once to that dtype, activations in it too; the features are kept in float32. Prompts
    are decoded by :class:`FastMaskDecoder` over the model's own decoder weights, float32; the
    prompt-independent work of the image decoded last (the first block's projections of its image
    tokens, its high-resolution skips laid out for the upscaling) is kept for its next prompts.
    """

    def __init__(self, model: Sam2, dtype: torch.dtype | str | None = None) -> None:
        self.model = model
        if next(model.parameters()).device.type == "cpu":
            tune_malloc()
        self.dtype = resolve_dtype(dtype)
        if self.dtype == torch.float16 and next(model.parameters()).device.type == "cpu":
            raise BackendError("float16 needs a CUDA device; on CPU use dtype=torch.bfloat16")
        self._encoder = model.image_encoder
        if self.dtype != torch.float32:  # the weights cast once, not by autocast at every call
            self._encoder = copy.deepcopy(model.image_encoder).to(self.dtype)
        self._pos_embed: tuple[tuple, torch.Tensor] | None = None
        self.decoder = FastMaskDecoder(model.sam_mask_decoder, model.sam_prompt_encoder)
        # (embeddings, image index, its skips, its shared tokens once a prompt without mask input came)
        self._image: tuple[torch.Tensor, int, HighResSkips | None, SharedImageTokens | None] | None = None

    @property
    def encoder(self) -> nn.Module:
        """The image encoder the runtime runs: the model's, or its copy in ``dtype``."""
        return self._encoder

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Normalised (B, 3, S, S) images → float32 ``Sam2.image_features``: the embeddings and the
        projected high-resolution maps. A Hiera encoder gets its position embedding from a cache
        and computes no position encodings (the image path uses none)."""
        model, encoder = self.model, self._encoder
        images = images.to(self.dtype)
        if isinstance(encoder, Sam2ImageEncoder):
            fpn = encoder(images, pos_embed=self.trunk_pos_embed(encoder.trunk, images), positions=False).backbone_fpn
        else:
            encoded = encoder(images)
            fpn = (encoded._asdict() if hasattr(encoded, "_asdict") else dict(encoded))["backbone_fpn"]
        if self.dtype == torch.float32:
            return model.features_from_fpn(model.project_high_res(fpn))
        with torch.autocast(images.device.type, dtype=self.dtype):  # project before widening: 8x fewer values
            fpn = model.project_high_res(fpn)
        return model.features_from_fpn([level.float() for level in fpn])

    def trunk_pos_embed(self, trunk: Hiera, images: torch.Tensor) -> torch.Tensor:
        """``trunk._get_pos_embed`` of the images' patch grid, recomputed only when the input size
        or the trunk's position parameters change."""
        conv = trunk.patch_embed.proj
        grid = tuple((size + 2 * pad - kernel) // step + 1 for size, pad, kernel, step in zip(
            images.shape[-2:], conv.padding, conv.kernel_size, conv.stride))
        key = values_key(trunk.pos_embed, trunk.pos_embed_window)
        if key is None:
            return trunk._get_pos_embed(grid)
        key = (grid, *key)
        if self._pos_embed is None or self._pos_embed[0] != key:
            self._pos_embed = (key, trunk._get_pos_embed(grid))
        return self._pos_embed[1]

    def decode(
        self,
        embeddings: torch.Tensor,
        high_res_feats: list[torch.Tensor],
        img_idx: int,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``Sam2.decode_prompts`` for image ``img_idx`` of the features (B, C, h, w) and
        [(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)]: low-res logits (P, M, 4h, 4w) and IoUs (P, M)."""
        model = self.model
        embed = embeddings[img_idx].unsqueeze(0)
        sparse, dense = model.encode_prompts(point_coords, point_labels, boxes, mask_input)
        image_pe = self.decoder.dense_pe()
        cached = self._image
        if cached is None or cached[0] is not embeddings or cached[1] != img_idx:
            skips = self.decoder.share_high_res([level[img_idx].unsqueeze(0) for level in high_res_feats])
            cached = (embeddings, img_idx, skips, None)
        shared = None
        if mask_input is None:
            if cached[3] is None:
                cached = (*cached[:3], self.decoder.share_image(embed, image_pe, dense))
            shared = cached[3]
        self._image = cached
        return self.decoder(embed, image_pe, sparse, dense, multimask_output, shared=shared, skips=cached[2])

    def forget_image(self) -> None:
        """Drop the kept work for the last image (and the reference to its features)."""
        self._image = None
