"""Which images a batch job labels, and where each one's result goes.

Inputs are image files, folders (searched recursively, by suffix) and glob patterns, local or
under a filesystem URI (``s3://bucket/photos``, ``memory://``...: :mod:`segany.batch.sources`).
Each image gets a name relative to the output folder (its path below the folder it was found in,
or its own file name) that is also its result's name. The output folder is never read as input: when it
lies inside an input folder it is left out whole, and where it is the input folder itself (or
contains it) the files segany writes there (``*_overlay.png``, ``*_masks/``) are.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.formats.sa1b import stable_image_id
from ..data.images import DEFAULT_MAX_PIXELS, load_image, load_image_bytes
from ..errors import ImageError
from .sources import is_uri, list_uri, read_uri

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"})
OVERLAY_SUFFIX = "_overlay.png"
MASKS_SUFFIX = "_masks"


@dataclass(frozen=True)
class ImageItem:
    """One input image: where it is (a local file, or a filesystem URI kept as a string), and its
    name relative to the output folder."""

    path: Path | str
    relative: Path

    def __post_init__(self) -> None:
        if not isinstance(self.path, Path) and not is_uri(str(self.path)):
            object.__setattr__(self, "path", Path(self.path))

    @property
    def is_uri(self) -> bool:
        """Whether the image is read through fsspec (its path is a URI)."""
        return isinstance(self.path, str)

    def read_bytes(self) -> bytes:
        """The image file's bytes; :class:`ImageError` when it cannot be read."""
        if isinstance(self.path, str):
            return read_uri(self.path)
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise ImageError(f"image {self.path} cannot be read ({exc.strerror or exc})") from None

    def load(self, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """The image as :func:`~segany.data.images.load_image` reads it (a URI's bytes the same way)."""
        if isinstance(self.path, str):
            return load_image_bytes(read_uri(self.path), name=self.path, max_pixels=max_pixels)
        return load_image(self.path, max_pixels=max_pixels)

    def same_file(self, other: ImageItem) -> bool:
        """Whether ``other`` is this image (the same URI, or the same local file)."""
        if self.is_uri or other.is_uri:
            return self.path == other.path
        return Path(self.path).resolve() == Path(other.path).resolve()

    @property
    def name(self) -> str:
        """The relative name with ``/`` separators (the SA-1B ``file_name``)."""
        return self.relative.as_posix()

    @property
    def image_id(self) -> int:
        """A stable id from the relative name (:func:`~segany.data.formats.sa1b.stable_image_id`)."""
        return stable_image_id(self.name)


def result_path(out: Path, relative: Path) -> Path:
    """The SA-1B JSON of the image named ``relative``: ``OUT/<relative>.json``."""
    return out / relative.parent / f"{relative.name}.json"


def written_by_segany(relative: Path) -> bool:
    """Whether a path below an output folder is one of segany's own outputs (overlay, mask PNG)."""
    return relative.name.endswith(OVERLAY_SUFFIX) or any(part.endswith(MASKS_SUFFIX) for part in relative.parts[:-1])


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _keeps(path: Path, root: Path, out: Path | None) -> bool:
    """Whether ``path``, found under ``root``, is an input (not the output folder's content)."""
    if out is None:
        return True
    resolved = path.resolve()
    if not resolved.is_relative_to(out):
        return True
    if out != root and out.is_relative_to(root):
        return False  # the output folder lies inside the input folder: none of it is input
    return not written_by_segany(resolved.relative_to(out))


def _literal_prefix(pattern: str) -> Path:
    """The folder a glob pattern searches under: its parts before the first wildcard."""
    parts = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def find_images(inputs: list[str], out: str | os.PathLike | None = None) -> tuple[list[ImageItem], list[str]]:
    """Every image the inputs name, and the inputs that matched nothing.

    A folder contributes its image files (by suffix), keeping their sub-folders; a file or a
    glob match contributes itself under its own name; the same under a URI
    (:func:`~segany.batch.sources.list_uri`). With ``out`` (the output folder), its contents are
    not inputs (see the module's docstring); a file named explicitly always is.
    """
    out_resolved = Path(out).resolve() if out is not None else None
    found: list[ImageItem] = []
    missing: list[str] = []
    for text in inputs:
        path = Path(text)
        if is_uri(text):
            listed = list_uri(text, IMAGE_SUFFIXES)
            if listed is None:
                missing.append(text)
            else:
                found.extend(ImageItem(uri, Path(name)) for uri, name in listed)
        elif path.is_dir():
            root = path.resolve()
            files = sorted(p for p in path.rglob("*") if _is_image(p) and _keeps(p, root, out_resolved))
            found.extend(ImageItem(p, p.relative_to(path)) for p in files)
        elif path.is_file():
            found.append(ImageItem(path, Path(path.name)))
        elif glob.has_magic(text) and (matches := sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())):
            root = _literal_prefix(text).resolve()
            found.extend(ImageItem(p, Path(p.name)) for p in matches if _keeps(p, root, out_resolved))
        else:
            missing.append(text)
    return found, missing


def unique_images(images: list[ImageItem], out: Path) -> list[ImageItem]:
    """Drop repeated inputs; refuse two different images that would write the same result or id."""
    seen: dict[Path, ImageItem] = {}
    ids: dict[int, str] = {}
    unique = []
    for item in images:
        target = result_path(out, item.relative)
        if target in seen:
            if not seen[target].same_file(item):
                raise ImageError(f"{seen[target].path} and {item.path} would both write {target}: run them separately or from one folder")
            continue
        if ids.setdefault(item.image_id, item.name) != item.name:  # a 53-bit sha256 collision: never seen
            raise ImageError(f"{ids[item.image_id]} and {item.name} have the same image id: rename one")
        seen[target] = item
        unique.append(item)
    return unique
