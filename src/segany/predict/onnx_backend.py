"""Running an exported SAM or SAM 2 model with onnxruntime: the image encoder and the low-res
prompt decoder written by :func:`segany.deploy.onnx.export_onnx`.

:class:`segany.Predictor` uses this with ``backend="onnxruntime"`` (:class:`OnnxRuntimeSam` for
SAM 1 / MobileSAM, :class:`OnnxRuntimeSam2` for SAM 2 / 2.1); it keeps the torch prompt checks,
coordinate transforms, token choice and mask upsampling, so results follow the same semantics.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..deploy.onnx import DECODER_LOW_RES, ENCODER, MANIFEST, export_onnx
from ..errors import BackendError, ExportError
from ..models.sam import Sam
from ..models.sam2 import Sam2

BACKENDS = ("torch", "onnxruntime")
BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 2.0, 3.0  # point labels of box corners in the ONNX decoder
PADDING_LABEL = -1.0


def _session(path: Path, threads: int | None, providers: list[str] | None, arena: bool = True):
    """An onnxruntime session; ``arena=False`` returns memory after each run instead of keeping
    the largest batch's working set (the decoder's grows with the number of prompts)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.enable_cpu_mem_arena = arena
    options.log_severity_level = 3  # errors only: the SAM 2 encoder's lenient shape merges are not a user's concern
    available = ort.get_available_providers()
    chosen = [p for p in (providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]) if p in available]
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=chosen or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ExportError(f"onnxruntime cannot load {path}: {exc}") from exc


def check_backend(name: str) -> None:
    """:class:`BackendError` unless ``name`` is one of :data:`BACKENDS`."""
    if name not in BACKENDS:
        raise BackendError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")


class OnnxRuntimeSam:
    """Encoder (optional) and low-res decoder sessions of one exported SAM model."""

    family = "sam"  # the manifest's "family" (absent in SAM 1 exports)

    def __init__(
        self,
        directory: str | os.PathLike,
        threads: int | None = None,
        providers: list[str] | None = None,
        encoder: bool = True,
    ) -> None:
        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST
        if not manifest_path.is_file():
            raise ExportError(f"{self.directory} is not a segany ONNX export (no {MANIFEST}); run `segany export onnx`")
        self.manifest = json.loads(manifest_path.read_text())
        family = self.manifest.get("family", "sam")
        if family != self.family:
            raise ExportError(f"{self.directory} holds a {family!r} export; this model is of the {self.family!r} family")
        files = self.manifest.get("files", {})
        if files.get("decoder_low_res") != DECODER_LOW_RES or (encoder and files.get("encoder") != ENCODER):
            missing = DECODER_LOW_RES if files.get("decoder_low_res") != DECODER_LOW_RES else ENCODER
            raise ExportError(f"{self.directory} has no {missing}: export it with `segany export onnx`")
        self.encoder = _session(self.directory / ENCODER, threads, providers) if encoder else None
        self.decoder = _session(self.directory / DECODER_LOW_RES, threads, providers, arena=False)
        self._tempdir: tempfile.TemporaryDirectory | None = None

    @classmethod
    def from_model(
        cls, model: Sam | Sam2, quantize: bool = False, threads: int | None = None, encoder: bool = True
    ) -> OnnxRuntimeSam:
        """Export ``model`` (the encoder too, if ``encoder``) to a private temporary folder, removed
        with this object, and load it."""
        tempdir = tempfile.TemporaryDirectory(prefix="segany-onnx-")
        export_onnx(model, tempdir.name, encoder=encoder, quantize=quantize)
        backend = cls(tempdir.name, threads=threads, encoder=encoder)
        backend._tempdir = tempdir
        return backend

    def check_model(self, model: Sam | Sam2) -> None:
        """Refuse an export of another architecture than ``model``'s."""
        if self.manifest.get("model") != model.config.name:
            raise BackendError(
                f"the ONNX export in {self.directory} is of model {self.manifest.get('model')!r}, not {model.config.name!r}"
            )

    def encode(self, input_image: torch.Tensor) -> torch.Tensor:
        """Normalised, padded (1, 3, S, S) image → (1, C, h, w) embedding."""
        if self.encoder is None:
            raise BackendError("this onnxruntime backend was loaded without the image encoder")
        array = input_image.detach().to("cpu", torch.float32).contiguous().numpy()
        (features,) = self.encoder.run(None, {"input_image": array})
        return torch.from_numpy(features)

    def decode(
        self,
        features: torch.Tensor,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits (B, 4, 4h, 4w) and IoU predictions (B, 4) of all mask tokens, for an
        embedding (1, C, h, w).

        Points, labels and boxes as :meth:`segany.Predictor.predict_torch` takes them (input frame);
        boxes become two corner points and, without a box, the padding point is appended, as the
        official ONNX decoder expects.
        """
        coords, labels = [], []
        if point_coords is not None:
            coords.append(point_coords.float())
            labels.append(point_labels.float())
        if boxes is not None:
            coords.append(boxes.float().reshape(-1, 2, 2))
            corner_labels = torch.tensor([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT])
            labels.append(corner_labels.expand(boxes.shape[0], 2))
        else:
            batch = coords[0].shape[0]
            coords.append(torch.zeros(batch, 1, 2))
            labels.append(torch.full((batch, 1), PADDING_LABEL))
        has_mask = mask_input is not None
        if mask_input is None:
            mask_input = torch.zeros(1, 1, 4 * features.shape[-2], 4 * features.shape[-1])
        inputs = {
            "image_embeddings": features.detach().to("cpu", torch.float32).contiguous().numpy(),
            "point_coords": torch.cat(coords, dim=1).cpu().numpy(),
            "point_labels": torch.cat(labels, dim=1).cpu().numpy(),
            "mask_input": mask_input.detach().to("cpu", torch.float32).contiguous().numpy(),
            "has_mask_input": np.array([1.0 if has_mask else 0.0], dtype=np.float32),
        }
        iou, low_res = self.decoder.run(None, inputs)
        return torch.from_numpy(low_res), torch.from_numpy(iou)


class OnnxRuntimeSam2(OnnxRuntimeSam):
    """Encoder (optional) and low-res decoder sessions of one exported SAM 2 / 2.1 model, bound
    to the model whose mask decoder picks the tokens (:meth:`MaskDecoder.select_masks`)."""

    family = "sam2"
    mask_decoder: Any = None  # the bound model's MaskDecoder (for_model)

    @classmethod
    def for_model(cls, model: Sam2, onnx_dir: str | os.PathLike | None = None, threads: int | None = None,
                  ) -> OnnxRuntimeSam2:
        """``model``'s export in ``onnx_dir`` (checked to be of its architecture), or exported now
        to a private temporary folder when ``onnx_dir`` is None."""
        backend = cls.from_model(model, threads=threads) if onnx_dir is None else cls(onnx_dir, threads=threads)
        backend.check_model(model)
        backend.mask_decoder = model.sam_mask_decoder
        return backend

    def encode(self, input_image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Normalised (B, 3, S, S) images → ``Sam2.image_features``: embedding, [feat_s0, feat_s1]."""
        if self.encoder is None:
            raise BackendError("this onnxruntime backend was loaded without the image encoder")
        array = input_image.detach().to("cpu", torch.float32).contiguous().numpy()
        runs = [self.encoder.run(None, {"input_image": array[i : i + 1]}) for i in range(array.shape[0])]
        embed, *high_res = (torch.from_numpy(np.concatenate(maps)) for maps in zip(*runs))
        return embed, high_res

    def decode(
        self,
        image_embed: torch.Tensor,
        high_res_feats: list[torch.Tensor],
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``Sam2.decode_prompts`` in onnxruntime: low-res logits (B, M, 4h, 4w), not clamped, and
        IoUs (B, M); box corners (labels 2, 3) go before the clicks, the graph appends the padding."""
        if self.mask_decoder is None:
            raise BackendError("OnnxRuntimeSam2 decodes for a model: create it with OnnxRuntimeSam2.for_model(model)")
        coords, labels = [], []
        if boxes is not None:
            coords.append(boxes.float().reshape(-1, 2, 2))
            labels.append(torch.tensor([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]).expand(coords[0].shape[0], 2))
        if point_coords is not None:
            coords.append(point_coords.float())
            labels.append(point_labels.float())
        has_mask = mask_input is not None
        if mask_input is None:
            mask_input = torch.zeros(1, 1, 4 * image_embed.shape[-2], 4 * image_embed.shape[-1])
        arrays = [image_embed, *high_res_feats, torch.cat(coords, dim=1), torch.cat(labels, dim=1), mask_input]
        names = ("image_embed", "high_res_feats_0", "high_res_feats_1", "point_coords", "point_labels", "mask_input")
        inputs = {name: a.detach().to("cpu", torch.float32).contiguous().numpy() for name, a in zip(names, arrays)}
        inputs["has_mask_input"] = np.array([1.0 if has_mask else 0.0], dtype=np.float32)
        iou, low_res = self.decoder.run(None, inputs)
        low_res, iou = self.mask_decoder.select_masks(torch.from_numpy(low_res), torch.from_numpy(iou), multimask_output)
        return low_res, iou


def sam2_backend(model: Sam2, backend: str = "torch", onnx_dir: str | os.PathLike | None = None,
                 dtype: torch.dtype = torch.float32) -> OnnxRuntimeSam2 | None:
    """The onnxruntime sessions a :class:`~segany.predict.sam2_predictor.Sam2Predictor` asked for
    (None for ``backend="torch"``); :class:`BackendError` for options that cannot go together."""
    check_backend(backend)
    if backend == "torch":
        if onnx_dir is not None:
            raise BackendError("onnx_dir is only used with backend='onnxruntime'")
        return None
    if dtype != torch.float32:
        raise BackendError("the onnxruntime backend runs float32 graphs: leave dtype at float32")
    return OnnxRuntimeSam2.for_model(model, onnx_dir)
