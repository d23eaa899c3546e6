"""ONNX export of a SAM model: the prompt decoder with the official export's signature, and the
image encoder (optionally with the pixel normalisation and padding folded in).

``export_onnx(model, out_dir)`` writes

- ``decoder.onnx``: the official web-demo model. Inputs ``image_embeddings`` (1, C, h, w)
  ((1, 256, 64, 64) officially), ``point_coords`` (B, N, 2) in the input frame (1024 officially),
  ``point_labels`` (B, N) as float
  (1 foreground, 0 background, -1 padding, 2 / 3 box corners; append a (0, 0) point labelled -1
  when there is no box), ``mask_input`` (B, 1, 4h, 4w), ``has_mask_input`` (1,),
  ``orig_im_size`` (2,) as float (H, W) → ``masks`` (logits at the original size),
  ``iou_predictions``, ``low_res_masks``; all float32, N and B dynamic. ``masks`` has the four
  mask tokens unless ``return_single_mask`` (the official web demo draws channel 0, so it needs
  that option: then channel 0 is the official single-mask selection);
- ``decoder_low_res.onnx``: the same inputs without ``orig_im_size`` → ``iou_predictions`` and
  ``low_res_masks`` of all four mask tokens (what :class:`segany.Predictor` runs, upsampling in torch);
- ``encoder.onnx``: ``input_image`` (1, 3, S, S), normalised and padded → ``image_embeddings``;
- ``encoder_preprocess.onnx`` (``fold_preprocessing=True``): ``image`` (h, w, 3) uint8 RGB already
  resized so its longest side is S (Pillow bilinear, as :class:`segany.predict.transforms.ResizeLongestSide`)
  → ``image_embeddings``;
- ``segany_onnx.json``: what was exported, from which model, and with which options.

``quantize=True`` replaces each network by its onnxruntime dynamic int8 quantisation (weights
int8, activations quantised on the fly).

SAM 2 / 2.1 models (:class:`~segany.models.sam2.Sam2`, ``SAM2ImagePredictor`` semantics) export as

- ``encoder.onnx``: ``input_image`` (1, 3, S, S), resized to S x S (no padding) and normalised as
  :func:`segany.predict.sam2_transforms.preprocess_image` does → ``image_embed`` (1, C, S/16, S/16),
  ``no_mem_embed`` added, and the projected ``high_res_feats_0`` (1, C/8, S/4, S/4) and
  ``high_res_feats_1`` (1, C/4, S/8, S/8);
- ``decoder.onnx``: ``image_embed``, ``high_res_feats_0``, ``high_res_feats_1``, ``point_coords``
  (B, N, 2) in the S x S input frame, ``point_labels`` (B, N) as float (1, 0, -1 padding, 2 / 3 box
  corners placed before the clicks; the decoder itself appends the padding point SAM 2 always adds,
  so do not add one), ``mask_input`` (B or 1, 1, S/4, S/4), ``has_mask_input`` (1,), ``orig_im_size``
  (2,) as float (H, W) → ``masks`` (logits resized straight to ``orig_im_size``: no padding to crop),
  ``iou_predictions``, ``low_res_masks`` (clamped to [-32, 32] as the predictor returns them) and
  ``object_score_logits`` (B, 1); B and N dynamic. The masks are the three multimask tokens
  (``multimask_output=True``); ``return_single_mask`` bakes in ``multimask_output=False`` instead:
  token 0, replaced by the best multimask token where it is unstable (the 2.1 dynamic multimask);
- ``decoder_low_res.onnx``: the same inputs without ``orig_im_size`` → ``iou_predictions`` (B, 4) and
  ``low_res_masks`` (B, 4, S/4, S/4), not clamped, of all four mask tokens (what
  :class:`segany.Predictor` runs with ``backend="onnxruntime"``; it picks the tokens and upsamples in torch).
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ExportError, UnsupportedOperationError
from ..fileio import atomic_write_json
from ..models.sam import Sam
from ..models.sam2 import Sam2

OPSET = 17
DECODER = "decoder.onnx"
DECODER_LOW_RES = "decoder_low_res.onnx"
ENCODER = "encoder.onnx"
ENCODER_PREPROCESS = "encoder_preprocess.onnx"
MANIFEST = "segany_onnx.json"

DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size")
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")
LOW_RES_OUTPUTS = ("iou_predictions", "low_res_masks")  # decoder_low_res.onnx of either family


class PromptDecoder(nn.Module):
    """Prompt encoder + mask decoder in the official ONNX model's branch-free form.

    Called with ``orig_im_size``, it has the official ``SamOnnxModel`` semantics: optional
    single-mask selection by the number of points, and logits upsampled to ``orig_im_size``.
    Without it, the low-res variant: the scores and low-res logits of all four mask tokens.
    """

    def __init__(self, model: Sam, return_single_mask: bool = False) -> None:
        super().__init__()
        self.model = model
        self.return_single_mask = return_single_mask

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """(masks, iou_predictions, low_res_masks) with ``orig_im_size``, else (iou_predictions, low_res_masks)."""
        prompt_encoder = self.model.prompt_encoder
        sparse = prompt_encoder.embed_points(point_coords, point_labels)
        dense = prompt_encoder.embed_mask_input(mask_input, has_mask_input)
        masks, scores = self.model.mask_decoder.predict_masks(image_embeddings, prompt_encoder.get_dense_pe(), sparse, dense)
        if orig_im_size is None:
            return scores, masks
        if self.return_single_mask:
            masks, scores = self._select(masks, scores, point_coords.shape[1])
        return self._postprocess(masks, orig_im_size), scores, masks

    def _postprocess(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        size = self.model.image_size
        masks = F.interpolate(masks, size=(size, size), mode="bilinear", align_corners=False)
        scale = size / torch.max(orig_im_size)
        prepadded = torch.floor(orig_im_size * scale + 0.5).to(torch.int64)
        # Index tensors rather than Python slice bounds, so the crop stays a function of
        # orig_im_size in the traced graph instead of the example's constant.
        rows = torch.arange(prepadded[0], device=masks.device)
        cols = torch.arange(prepadded[1], device=masks.device)
        masks = masks.index_select(2, rows).index_select(3, cols)
        original = orig_im_size.to(torch.int64)
        return F.interpolate(masks, size=(original[0], original[1]), mode="bilinear", align_corners=False)

    @staticmethod
    def _select(masks: torch.Tensor, scores: torch.Tensor, num_points: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The single-mask token for 3+ points (padding included), else the best multimask one."""
        reweight = torch.zeros_like(scores[:1])
        reweight[:, 0] = 1000.0
        best = torch.argmax(scores + (num_points - 2.5) * reweight, dim=1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        return masks[rows, best].unsqueeze(1), scores[rows, best].unsqueeze(1)


class PreprocessingImageEncoder(nn.Module):
    """(h, w, 3) uint8 RGB resized image → normalised, zero-padded → image embedding."""

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.image_encoder(self.model.preprocess(image.permute(2, 0, 1)[None].float()))


def _decoder_example(model: Sam, num_points: int = 5) -> dict[str, torch.Tensor]:
    """Example inputs in the official export script's shapes and dtypes."""
    embed_h, embed_w = model.prompt_encoder.image_embedding_size
    generator = torch.Generator().manual_seed(0)
    return {
        "image_embeddings": torch.randn(1, model.prompt_encoder.embed_dim, embed_h, embed_w, generator=generator),
        "point_coords": torch.randint(0, model.image_size, (1, num_points, 2), generator=generator).float(),
        "point_labels": torch.randint(0, 4, (1, num_points), generator=generator).float(),
        "mask_input": torch.randn(1, 1, 4 * embed_h, 4 * embed_w, generator=generator),
        "has_mask_input": torch.tensor([1.0]),
        "orig_im_size": torch.tensor([1500.0, 2250.0]),
    }


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic: dict) -> None:
    with warnings.catch_warnings():
        # The tracer warns about Python ints taken from tensors (sizes): they are recorded as
        # graph operations here, which is what the dynamic axes need.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=dynamic,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as exc:  # the exporter raises many unrelated types
            raise ExportError(f"ONNX export of {path.name} failed: {exc}") from exc


def export_decoder(model: Sam, path: str | os.PathLike, return_single_mask: bool = False, low_res: bool = False) -> Path:
    """Write the prompt decoder (official signature, or the low-res variant) to ``path``."""
    path = Path(path)
    example = _decoder_example(model)
    points = {1: "num_points"}
    module = PromptDecoder(model, return_single_mask)
    if low_res:
        names = list(DECODER_INPUTS[:-1])
        outputs = list(LOW_RES_OUTPUTS)
        dynamic = {"point_coords": {0: "batch", 1: "num_points"}, "point_labels": {0: "batch", 1: "num_points"},
                   "mask_input": {0: "batch"}}
    else:
        names = list(DECODER_INPUTS)
        outputs = list(DECODER_OUTPUTS)
        dynamic = {"point_coords": points, "point_labels": points}
    with torch.inference_mode(False), torch.no_grad():
        _export(module.eval(), tuple(example[name] for name in names), path, names, outputs, dynamic)
    return path


def decoder_bytes(model: Sam, return_single_mask: bool = False) -> bytes:
    """:func:`export_decoder`'s ``decoder.onnx`` (official signature) as bytes, through a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="segany-decoder-") as folder:
        return export_decoder(model, Path(folder) / DECODER, return_single_mask).read_bytes()


def export_encoder(model: Sam, path: str | os.PathLike, fold_preprocessing: bool = False) -> Path:
    """Write the image encoder to ``path``: on the normalised padded input, or on the resized uint8 image."""
    path = Path(path)
    size = model.image_size
    with torch.inference_mode(False), torch.no_grad():
        if fold_preprocessing:
            example = torch.randint(0, 256, (size * 3 // 4, size, 3), dtype=torch.uint8)
            dynamic = {"image": {0: "height", 1: "width"}}
            _export(PreprocessingImageEncoder(model).eval(), (example,), path, ["image"], ["image_embeddings"], dynamic)
        else:
            example = torch.randn(1, 3, size, size)
            _export(model.image_encoder.eval(), (example,), path, ["input_image"], ["image_embeddings"], {})
    return path


def quantize_file(path: Path) -> Path:
    """Replace an ONNX file by its onnxruntime dynamic int8 quantisation (weights int8)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_suffix(".quant.onnx")
    try:
        quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
    except Exception as exc:
        raise ExportError(f"onnxruntime quantisation of {path.name} failed: {exc}") from exc
    os.replace(quantized, path)
    return path


def require_network(model: object) -> Sam | Sam2:
    """``model`` if it is a SAM or SAM 2 network; :class:`UnsupportedOperationError` for the classic engine."""
    if not isinstance(model, (Sam, Sam2)):
        raise UnsupportedOperationError(
            f"the {getattr(model, 'name', type(model).__name__)} engine has no network to export to ONNX: "
            "pass --model vit_t|vit_b|vit_l|vit_h|sam2.1_hiera_t|... (weights cached or downloadable) "
            "or --checkpoint PATH"
        )
    return model


def export_onnx(
    model: Sam | Sam2,
    out_dir: str | os.PathLike,
    *,
    encoder: bool = True,
    fold_preprocessing: bool = False,
    return_single_mask: bool = False,
    quantize: bool = False,
    name: str | None = None,
) -> dict:
    """Export ``model`` into ``out_dir`` (see the module docstring); returns the manifest."""
    model = require_network(model).eval()
    out = Path(out_dir)
    if isinstance(model, Sam2):
        return export_sam2_onnx(model, out, encoder=encoder, fold_preprocessing=fold_preprocessing,
                                return_single_mask=return_single_mask, quantize=quantize, name=name)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "decoder": export_decoder(model, out / DECODER, return_single_mask=return_single_mask),
        "decoder_low_res": export_decoder(model, out / DECODER_LOW_RES, low_res=True),
    }
    if encoder:
        files["encoder"] = export_encoder(model, out / ENCODER)
        if fold_preprocessing:
            files["encoder_preprocess"] = export_encoder(model, out / ENCODER_PREPROCESS, fold_preprocessing=True)
    if quantize:
        for path in files.values():
            quantize_file(path)
    manifest = {
        "model": name or model.config.name,
        "image_size": model.image_size,
        "mask_threshold": model.mask_threshold,
        "pixel_mean": list(model.config.pixel_mean),
        "pixel_std": list(model.config.pixel_std),
        "opset": OPSET,
        "quantized": quantize,
        "return_single_mask": return_single_mask,
        "files": {key: path.name for key, path in files.items()},
        "decoder_inputs": list(DECODER_INPUTS),
        "decoder_outputs": list(DECODER_OUTPUTS),
    }
    atomic_write_json(out / MANIFEST, manifest, indent=1)
    return manifest


# --- SAM 2 / 2.1 -------------------------------------------------------------------------------

# deploy sits below predict in the layers: the predictor's values (tests/test_sam2_onnx.py checks they agree)
SAM2_LOW_RES_CLAMP = 32.0  # Sam2Predictor's LOW_RES_CLAMP
SAM2_PIXEL_MEAN = (0.485, 0.456, 0.406)  # sam2_transforms' ImageNet normalisation, in [0, 1] units
SAM2_PIXEL_STD = (0.229, 0.224, 0.225)
SAM2_ENCODER_OUTPUTS = ("image_embed", "high_res_feats_0", "high_res_feats_1")
SAM2_DECODER_INPUTS = (*SAM2_ENCODER_OUTPUTS, "point_coords", "point_labels", "mask_input", "has_mask_input",
                       "orig_im_size")
SAM2_DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks", "object_score_logits")


class Sam2ImageEncoder(nn.Module):
    """(1, 3, S, S) normalised image → what ``SAM2ImagePredictor.set_image`` keeps (:meth:`Sam2.image_features`)."""

    def __init__(self, model: Sam2) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        embed, (feat_s0, feat_s1) = self.model.image_features(input_image)
        return embed, feat_s0, feat_s1


class Sam2PromptDecoder(nn.Module):
    """SAM 2's prompt encoder + mask decoder on one image's features, branch-free for export
    (``SAM2ImagePredictor._predict`` semantics; see the module docstring). Without
    ``orig_im_size``, the low-res variant: the IoUs and unclamped low-res logits of all four tokens."""

    def __init__(self, model: Sam2, return_single_mask: bool = False) -> None:
        super().__init__()
        self.model = model
        self.return_single_mask = return_single_mask

    def forward(
        self,
        image_embed: torch.Tensor,
        high_res_feats_0: torch.Tensor,
        high_res_feats_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """(masks, iou_predictions, low_res_masks, object_score_logits) with ``orig_im_size``, else
        (iou_predictions, low_res_masks) of all four tokens."""
        prompt_encoder = self.model.sam_prompt_encoder
        decoder = self.model.sam_mask_decoder
        sparse = prompt_encoder.embed_points(point_coords, point_labels, pad=True)
        dense = prompt_encoder.embed_mask_input(mask_input, has_mask_input)
        all_low_res, all_iou, _, object_score = decoder.predict_masks(
            image_embed, prompt_encoder.get_dense_pe(), sparse, dense, repeat_image=True,
            high_res_features=[high_res_feats_0, high_res_feats_1])
        if orig_im_size is None:
            return all_iou, all_low_res
        low_res, iou = decoder.select_masks(all_low_res, all_iou, multimask_output=not self.return_single_mask)
        size = orig_im_size.to(torch.int64)
        masks = F.interpolate(low_res, size=(size[0], size[1]), mode="bilinear", align_corners=False)
        return masks, iou, low_res.clamp(-SAM2_LOW_RES_CLAMP, SAM2_LOW_RES_CLAMP), object_score


def _sam2_decoder_example(model: Sam2, num_points: int = 3) -> tuple[torch.Tensor, ...]:
    """Example decoder inputs (batch 2, so that the batch axis is traced as one)."""
    c, g, s = model.hidden_dim, model.config.image_embedding_size, model.image_size
    generator = torch.Generator().manual_seed(0)
    return (
        torch.randn(1, c, g, g, generator=generator),
        torch.randn(1, c // 8, 4 * g, 4 * g, generator=generator),
        torch.randn(1, c // 4, 2 * g, 2 * g, generator=generator),
        torch.randint(0, s, (2, num_points, 2), generator=generator).float(),
        torch.randint(0, 4, (2, num_points), generator=generator).float(),
        torch.randn(2, 1, 4 * g, 4 * g, generator=generator),
        torch.tensor([1.0]),
        torch.tensor([1500.0, 2250.0]),
    )


def _require_high_res(model: Sam2) -> None:
    if not model.use_high_res_features_in_sam:
        raise UnsupportedOperationError(
            f"{model.config.name}: ONNX export needs use_high_res_features_in_sam=True (every official SAM 2 config)")


def export_sam2_encoder(model: Sam2, path: str | os.PathLike) -> Path:
    """Write SAM 2's image encoder (normalised S x S image → embedding + high-res features) to ``path``."""
    _require_high_res(model)
    path = Path(path)
    example = torch.randn(1, 3, model.image_size, model.image_size)
    with torch.inference_mode(False), torch.no_grad():
        _export(Sam2ImageEncoder(model).eval(), (example,), path, ["input_image"], list(SAM2_ENCODER_OUTPUTS), {})
    return path


def export_sam2_decoder(model: Sam2, path: str | os.PathLike, return_single_mask: bool = False,
                        low_res: bool = False) -> Path:
    """Write SAM 2's prompt decoder, or its low-res variant (see the module docstring), to ``path``."""
    _require_high_res(model)
    path = Path(path)
    prompts = {0: "batch", 1: "num_points"}
    inputs = list(SAM2_DECODER_INPUTS[:-1] if low_res else SAM2_DECODER_INPUTS)
    outputs = list(LOW_RES_OUTPUTS if low_res else SAM2_DECODER_OUTPUTS)
    dynamic = {"point_coords": prompts, "point_labels": prompts, "mask_input": {0: "mask_batch"},
               **{name: {0: "batch"} for name in outputs}}
    with torch.inference_mode(False), torch.no_grad():
        _export(Sam2PromptDecoder(model, return_single_mask).eval(), _sam2_decoder_example(model)[:len(inputs)], path,
                inputs, outputs, dynamic)
    return path


def export_sam2_onnx(
    model: Sam2,
    out_dir: str | os.PathLike,
    *,
    encoder: bool = True,
    fold_preprocessing: bool = False,
    return_single_mask: bool = False,
    quantize: bool = False,
    name: str | None = None,
) -> dict:
    """Export a SAM 2 ``model`` into ``out_dir`` (``encoder.onnx``, ``decoder.onnx``,
    ``decoder_low_res.onnx``, the manifest)."""
    if fold_preprocessing:
        raise UnsupportedOperationError(
            "fold_preprocessing is not available for SAM 2: its S x S antialiased resize has no ONNX opset-17 "
            "equivalent; feed encoder.onnx the preprocessed image (segany.predict.sam2_transforms.preprocess_image)")
    _require_high_res(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"decoder": export_sam2_decoder(model, out / DECODER, return_single_mask=return_single_mask),
             "decoder_low_res": export_sam2_decoder(model, out / DECODER_LOW_RES, low_res=True)}
    if encoder:
        files["encoder"] = export_sam2_encoder(model, out / ENCODER)
    if quantize:
        for path in files.values():
            quantize_file(path)
    manifest = {
        "model": name or model.config.name,
        "family": "sam2",
        "image_size": model.image_size,
        "mask_threshold": 0.0,
        "pixel_mean": list(SAM2_PIXEL_MEAN),
        "pixel_std": list(SAM2_PIXEL_STD),
        "opset": OPSET,
        "quantized": quantize,
        "return_single_mask": return_single_mask,
        "files": {key: path.name for key, path in files.items()},
        "encoder_outputs": list(SAM2_ENCODER_OUTPUTS),
        "decoder_inputs": list(SAM2_DECODER_INPUTS),
        "decoder_outputs": list(SAM2_DECODER_OUTPUTS),
    }
    atomic_write_json(out / MANIFEST, manifest, indent=1)
    return manifest
