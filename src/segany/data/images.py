"""Reading images into HWC RGB uint8 arrays within a pixel and memory budget, and checking image arrays.

Sizes are (height, width); :func:`preprocess_shape` is the size after the resize to a model's input frame
(:mod:`segany.predict.transforms` resizes images and prompts).
"""
from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError, ImageTooLargeError
from ..fileio import atomic_write_bytes

DEFAULT_MAX_PIXELS = 1 << 28
ORIENTATION_TAG = 0x0112  # EXIF Orientation
"""Largest image :func:`load_image` decodes unless told otherwise: 268 MP, e.g. 16384 x 16384.

That admits every camera photo (100-200 MP medium format), stitched panoramas and most aerial
tiles, while a hostile header (60000 x 60000 = 3.6 GP) is refused before any pixel is decoded.
Decoding the limit takes ~3 GB (see :func:`decode_bytes`); raise it with ``max_pixels=`` or
``--max-pixels``, or pass ``None`` for no limit (the memory check still applies)."""

_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "I;16": 2, "I;16B": 2, "I;16L": 2}
_STRETCHED = ("I;16", "I;16B", "I;16L", "I", "F")
_PILLOW_LIMIT = threading.Lock()


def decode_bytes(width: int, height: int, mode: str) -> int:
    """Peak bytes :func:`load_image` needs for an image of this size and Pillow mode.

    Pillow's decoded image (4 bytes a pixel for RGB/RGBA/CMYK/I/F, fewer for grey and palette),
    plus one 4-byte-a-pixel converted copy (RGB conversion, EXIF rotation) plus the 3-byte
    numpy result; 16-bit and float images are stretched in float64 (8 bytes a pixel) instead.
    """
    working = 8 + 1 if mode in _STRETCHED else 4
    return width * height * (_BYTES_PER_PIXEL.get(mode, 4) + working + 3)


def available_memory() -> int | None:
    """Bytes this process can still allocate: the smaller of the machine's ``MemAvailable`` and the
    cgroup (container) limit's headroom; None where neither can be read (not Linux)."""
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            limits.append(int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def _open(path: str | os.PathLike | io.BytesIO) -> Image.Image:
    """``Image.open`` (header only) without Pillow's own pixel limit: :func:`load_image` applies its own.

    Pillow's limit is a process-wide setting; it is lifted, under a lock, only for the rare header
    it refuses (over 179 MP), so other Pillow users in the process keep it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except Image.DecompressionBombError:
            pass
        with _PILLOW_LIMIT:
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                return Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved


def _check_size(path: str | os.PathLike, img: Image.Image, max_pixels: int | None) -> None:
    width, height = img.size
    pixels = width * height
    if max_pixels is not None and pixels > max_pixels:
        raise ImageTooLargeError(
            f"image {path} is {width}x{height} ({pixels:,} pixels), over the limit of {max_pixels:,} pixels: "
            f"raise it with --max-pixels N (max_pixels=N; 0 / None: no limit) if the file is genuine"
        )
    needed, available = decode_bytes(width, height, img.mode), available_memory()
    if available is not None and needed > available:
        raise ImageTooLargeError(
            f"image {path} is {width}x{height}: decoding it needs about {needed / 2**30:.1f} GiB, "
            f"only {available / 2**30:.1f} GiB of memory is available"
        )


def _to_uint8_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in _STRETCHED:
        array = np.asarray(img, dtype=np.float64)
        lo, hi = float(array.min()), float(array.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        gray = np.round((array - lo) * scale).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def load_image(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read any image Pillow can decode as HWC RGB uint8, EXIF orientation applied.

    Grayscale and palette images become RGB, transparency is composited on white, 16-bit and
    float images are stretched to 0..255. Raises :class:`ImageError` for missing/corrupt files
    and :class:`ImageTooLargeError`, from the header before any pixel is decoded, for images over
    ``max_pixels`` (None: no limit) or needing more memory than is available (:func:`decode_bytes`).
    Images are decoded at full size: masks are in the image's own pixels, so JPEG draft
    (reduced-size) decoding is not used.
    """
    return _decode(path, path, max_pixels)


def load_image_bytes(data: bytes, *, name: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """:func:`load_image` on an image file's bytes (read from a URI, an upload...); ``name`` (e.g. the
    URI) is what its errors call the image. The same decoding rules, pixel budget and errors."""
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source: str | os.PathLike | io.BytesIO, name: str | os.PathLike, max_pixels: int | None) -> np.ndarray:
    try:
        with _open(source) as img:
            _check_size(name, img, max_pixels)
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_uint8_rgb(img)
    except FileNotFoundError:
        raise ImageError(f"image {name} does not exist") from None
    except IsADirectoryError:
        raise ImageError(f"image {name} is a directory") from None
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # a frame (GIF, ICO) larger than the header said
        raise ImageTooLargeError(f"image {name} is too large to decode: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"image {name} cannot be read (corrupt or unsupported format: {exc})") from None


def check_image_array(image: object) -> np.ndarray:
    """Validate a public-boundary image: a numpy HxWx3 uint8 array with H, W > 0."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageError(f"image must have dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"image must have shape HxWx3 (RGB), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"image is empty: shape {image.shape}")
    return image


def check_image_list(image_list: object) -> list[np.ndarray]:
    """Validate a batch of images: a non-empty list (or tuple) of HxWx3 uint8 arrays (sizes may
    differ); the error names the first bad entry."""
    if isinstance(image_list, np.ndarray) or not isinstance(image_list, (list, tuple)) or not image_list:
        raise ImageError(f"image_list must be a non-empty list of HxWx3 uint8 arrays, got "
                         f"{'an empty list' if isinstance(image_list, (list, tuple)) else type(image_list).__name__}")
    for index, image in enumerate(image_list):
        try:
            check_image_array(image)
        except ImageError as exc:
            raise ImageError(f"image_list[{index}]: {exc}") from None
    return list(image_list)


def preprocess_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """Size after scaling so the longest side is ``long_side`` (the official rounding)."""
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def save_image(path: str | os.PathLike, image: np.ndarray, *, like: str | os.PathLike | None = None,
               quality: int = 95) -> Path:
    """Write ``image`` (HxWx3 RGB uint8) atomically, in the format of ``path``'s suffix.

    With ``like`` (the image it was made from), its EXIF block is kept, with the orientation tag set
    to 1: :func:`load_image` already turned the pixels upright, so a viewer shows the output as it
    showed the source. JPEG / WebP are written at ``quality``.
    """
    image = check_image_array(image)
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"cannot tell the image format of {path} from its suffix: use .png, .jpg, .webp, ...")
    options: dict = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    if like is not None:
        try:
            with Image.open(like) as source:
                exif = source.getexif()
        except (OSError, SyntaxError, ValueError):
            exif = None
        if exif:
            exif[ORIENTATION_TAG] = 1
            options["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **options)
    return atomic_write_bytes(path, buffer.getvalue())
