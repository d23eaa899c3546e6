"""Every error segany raises on purpose: one place, one base class, messages a user can act on."""
from __future__ import annotations


class SeganyError(Exception):
    """Base class of all segany errors."""


class ConfigError(SeganyError, ValueError):
    """An unknown model name or a malformed model configuration."""


class CheckpointError(SeganyError):
    """A checkpoint file that cannot be read or does not fit the architecture."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's tensor names or shapes differ from the model's."""


class WeightsUnavailableError(CheckpointError):
    """Weights are neither cached nor downloadable (offline machine, failed download)."""


class ChecksumError(CheckpointError):
    """A downloaded file's size or sha256 differs from the registry's."""


class ImageError(SeganyError, ValueError):
    """A missing, corrupt or unsupported image file, or an image array of the wrong form."""


class PromptError(SeganyError, ValueError):
    """Points, labels, boxes or mask inputs of the wrong shape, type or range."""


class PredictorStateError(SeganyError, RuntimeError):
    """A predictor used out of order, e.g. ``predict`` before ``set_image``."""


class DatasetError(SeganyError, ValueError):
    """An evaluation dataset that cannot be found or read, or whose masks do not fit its images."""


class UnsupportedOperationError(SeganyError, NotImplementedError):
    """An engine asked for something it does not have, e.g. an image embedding from the classic engine."""


class NotFoundError(SeganyError, LookupError):
    """An unknown id: an image, an annotation or a logits handle that does not exist (or expired)."""


class AnnotationError(SeganyError, ValueError):
    """An annotation file that cannot be read, or an annotation whose mask does not fit its image."""


class GeneratorArgumentError(SeganyError, ValueError):
    """Automatic mask generator settings that cannot work (grids, thresholds, output mode)."""


class ExportError(SeganyError, RuntimeError):
    """A model export (ONNX) or its onnxruntime quantisation that failed, or an exported folder that
    cannot be used (missing files, another model's export)."""


class BackendError(SeganyError, ValueError):
    """Inference options that cannot work together or on this machine (dtype, device, backend)."""


class ImageTooLargeError(ImageError):
    """An image whose header claims more pixels than the limit, or more than memory can decode."""


class OutputError(SeganyError, OSError):
    """An output file or folder that cannot be written: a file in the way, no permission, a full disk."""


class NonFiniteError(SeganyError, ValueError):
    """A NaN or infinite number where a result must be finite (a score, a JSON document): usually broken weights."""


class SettingsMismatchError(SeganyError, ValueError):
    """Results in an output folder made with other settings (model, weights, generator arguments)."""


class ServerBusyError(SeganyError, RuntimeError):
    """The annotation server has more work queued than it accepts, or is shutting down: retry later."""


class EmbeddingFileError(SeganyError, ValueError):
    """A stored image embedding that cannot be read: not a safetensors file, truncated, or written
    by another program or an unknown version of segany's embedding format."""


class VideoError(SeganyError, ValueError):
    """A video that cannot be read (missing, no frames, undecodable frame, frames of different sizes)
    or a frame index outside it."""


class NotConfiguredError(SeganyError, RuntimeError):
    """A feature the server was started without (e.g. text search without ``--detector``)."""


class ConflictError(SeganyError, RuntimeError):
    """A request that conflicts with what the server holds now (e.g. restoring an annotation id
    that is still live)."""


class InpaintError(SeganyError, ValueError):
    """An inpainting request that cannot be done: a mask of another size than the image, an empty
    mask, a mask covering the whole image, an unknown method."""
