"""The images a server offers: found once under a folder, by extension, and named by opaque ids.

Clients only ever see ids (a hash of the path relative to the folder, stable across restarts),
never paths, so no request can make the server read a file outside the folder: every read
resolves the file again and refuses it if it now leads outside (a file replaced by a symlink
after start-up). Messages name files relative to the folder, never by their absolute path.
Images over ``max_pixels`` (read from the header) are refused before they are decoded.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data.images import DEFAULT_MAX_PIXELS, load_image
from ..errors import ImageError, NotFoundError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# Files a browser shows as they are; the others are sent re-encoded as PNG.
BROWSER_EXTENSIONS = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
                      ".bmp": "image/bmp", ".gif": "image/gif"}
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}  # 90° rotations: width and height swap


@dataclass(frozen=True)
class ImageEntry:
    """One image file: ``id`` for clients, ``file_name`` (relative POSIX path) for COCO, ``path`` on disk."""

    id: str
    file_name: str
    path: Path

    @property
    def media_type(self) -> str | None:
        """The MIME type to send the file as-is, or None when it must be converted for a browser."""
        return BROWSER_EXTENSIONS.get(self.path.suffix.lower())


def image_id(file_name: str) -> str:
    """The stable public id of a relative path."""
    return hashlib.sha1(file_name.encode("utf-8")).hexdigest()[:16]


def read_size(path: Path, name: str | None = None) -> tuple[int, int]:
    """(height, width) of an image as :func:`segany.load_image` returns it (EXIF rotation applied),
    read from the header only; errors name the file ``name`` (default: its base name)."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSING_ORIENTATIONS:
                width, height = height, width
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        message = str(exc).replace(str(path), name or path.name)
        raise ImageError(f"image {name or path.name} cannot be read (corrupt, unsupported or too large: {message})") from None
    return height, width


class ImageCatalogue:
    """Images under ``root`` (recursively, symlinks that leave ``root`` ignored), sorted by path."""

    def __init__(self, root: str | os.PathLike, extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ImageError(f"images folder {root} does not exist or is not a folder")
        if max_pixels is not None and max_pixels < 1:
            raise ImageError(f"max_pixels must be positive (None: no limit), got {max_pixels}")
        self.max_pixels = max_pixels
        self.extensions = tuple(e.lower() for e in extensions)
        self._entries = self._scan()
        self._sizes: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def _scan(self) -> dict[str, ImageEntry]:
        entries: dict[str, ImageEntry] = {}
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                path = Path(folder) / name
                if name.startswith(".") or path.suffix.lower() not in self.extensions:
                    continue
                if not path.resolve().is_relative_to(self.root):
                    continue
                file_name = path.relative_to(self.root).as_posix()
                entry = ImageEntry(image_id(file_name), file_name, path)
                entries[entry.id] = entry
        return entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(self._entries.values())

    def get(self, id_: str) -> ImageEntry:
        """The entry for a public id; :class:`NotFoundError` if there is none."""
        entry = self._entries.get(id_)
        if entry is None:
            raise NotFoundError(f"no image with id {id_!r}: list the images with GET /api/images")
        return entry

    def path(self, id_: str) -> Path:
        """The file of this image, resolved now: :class:`NotFoundError` when it is gone or now
        leads outside the folder (replaced by a symlink)."""
        entry = self.get(id_)
        real = entry.path.resolve()
        if not real.is_relative_to(self.root) or not real.is_file():
            raise NotFoundError(f"image {entry.file_name} is no longer a file inside the images folder")
        return real

    def size(self, id_: str) -> tuple[int, int]:
        """(height, width) of the image with this id (read once, then remembered); an
        :class:`ImageError` when it has more than ``max_pixels`` pixels."""
        entry = self.get(id_)
        with self._lock:
            known = self._sizes.get(id_)
        if known is None:
            known = read_size(self.path(id_), entry.file_name)
            with self._lock:
                self._sizes[id_] = known
        height, width = known
        if self.max_pixels is not None and height * width > self.max_pixels:
            raise ImageError(f"image {entry.file_name} has {width}x{height} = {height * width} pixels, more than "
                             f"this server's limit of {self.max_pixels} (segany serve --max-pixels)")
        return known

    def load(self, id_: str) -> np.ndarray:
        """The image as HWC RGB uint8 (:func:`segany.load_image`), after the pixel limit check;
        too large to decode in the memory available is an :class:`ImageError` too."""
        entry = self.get(id_)
        height, width = self.size(id_)
        path = self.path(id_)
        try:
            return load_image(path, max_pixels=self.max_pixels)
        except ImageError as exc:
            raise type(exc)(str(exc).replace(str(path), entry.file_name)) from None
        except (MemoryError, Image.DecompressionBombError):
            raise ImageError(f"image {entry.file_name} ({width}x{height}) is too large to decode "
                             "in the memory this server has") from None
