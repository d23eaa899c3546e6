"""Evaluation datasets: images with one ground-truth object each, in the benchmarks' own encodings.

Every sample yields an HWC RGB uint8 image and a :class:`Target` (object mask plus an optional
ignore mask excluded from IoU). The built-in names resolve inside the data folder
(``$SEGANY_DATA``, else ``$SEGANY_SHARED/data``, else ``../shared/data``):

==============  ======================  ==============================================================
name            folder                  mask encoding
==============  ======================  ==============================================================
``grabcut``     ``grabcut/``            gray PNG: 0 background, 255 object, 128 boundary band = ignore
``berkeley``    ``berkeley/``           RGB PNG, R=G=B: value > 128 = object (anti-aliased in-betweens)
``davis``       ``davis345/``           palette PNG: every non-zero index (ids 1-4 and void 255) = object
``coco_mval``   ``coco_mval_subset/``   gray PNG: value > 128 = object
``coco``        ``coco_val2017_tiny/``  COCO instances JSON: one sample per non-crowd annotation
==============  ======================  ==============================================================

Any folder with ``images/`` and ``masks/`` (paired by file stem; non-zero = object), a COCO
instances JSON file, or a folder holding ``annotations/*.json`` and ``images/`` works as well.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from ..errors import DatasetError
from .images import load_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Target:
    """One ground-truth object: ``mask`` (HxW bool) and ``ignore`` (HxW bool or None) left out of IoU."""

    mask: np.ndarray
    ignore: np.ndarray | None = None


# --- mask encodings: raw PNG array -> Target ---------------------------------------------------

def _first_channel(array: np.ndarray) -> np.ndarray:
    return array[..., 0] if array.ndim == 3 else array


def decode_trimap(array: np.ndarray) -> Target:
    """GrabCut trimap: > 128 object, exactly 128 the unlabeled boundary band (ignored)."""
    gray = _first_channel(array)
    return Target(gray > 128, gray == 128)


def decode_binary(array: np.ndarray) -> Target:
    """0/255 masks, possibly anti-aliased or stored as RGB: > 128 object (the f-BRS/RITM rule)."""
    return Target(_first_channel(array) > 128)


def decode_nonzero(array: np.ndarray) -> Target:
    """Palette ids or 0/1 or 0/255 masks: every non-zero pixel (any channel) is the object."""
    return Target(array.any(axis=2) if array.ndim == 3 else array != 0)


ENCODINGS: dict[str, Callable[[np.ndarray], Target]] = {
    "trimap": decode_trimap,
    "binary": decode_binary,
    "nonzero": decode_nonzero,
}


# --- samples and datasets ----------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    """One image/object pair; pixels are read only when asked for."""

    name: str
    image_path: Path
    read_target: Callable[[tuple[int, int]], Target]

    def load(self) -> tuple[np.ndarray, Target]:
        """(HWC RGB uint8 image, Target), checked to have the same size."""
        image = load_image(self.image_path)
        return image, self.target_on(image)

    def target_on(self, image: np.ndarray) -> Target:
        """This object's Target on its already loaded ``image``, checked to have its size and to be non-empty."""
        target = self.read_target(image.shape[:2])
        if target.mask.shape != image.shape[:2]:
            raise DatasetError(f"{self.name}: mask is {target.mask.shape[::-1]} (WxH) but the image is {image.shape[1::-1]}")
        if not target.mask.any():
            raise DatasetError(f"{self.name}: the ground-truth mask is empty")
        return target


@dataclass(frozen=True)
class Dataset(Sequence[Sample]):
    """A named, ordered list of samples."""

    name: str
    samples: tuple[Sample, ...]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):  # type: ignore[override]
        return self.samples[index]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def head(self, limit: int | None) -> Dataset:
        """The first ``limit`` samples (all when None)."""
        return self if limit is None else Dataset(self.name, self.samples[:limit])


def _read_mask_file(path: Path, encoding: str) -> Callable[[tuple[int, int]], Target]:
    decode = ENCODINGS[encoding]

    def read(_size: tuple[int, int]) -> Target:
        try:
            with Image.open(path) as img:
                return decode(np.asarray(img))
        except (OSError, UnidentifiedImageError) as exc:
            raise DatasetError(f"cannot read mask {path}: {exc}") from None

    return read


def load_folder(root: str | os.PathLike, encoding: str = "nonzero", name: str | None = None,
                images: str = "images", masks: str = "masks") -> Dataset:
    """``root/images/<stem>.<ext>`` paired with ``root/masks/<stem>.png`` (sorted by stem)."""
    root = Path(root)
    if encoding not in ENCODINGS:
        raise DatasetError(f"unknown mask encoding {encoding!r}; choose from {sorted(ENCODINGS)}")
    image_dir, mask_dir = root / images, root / masks
    if not image_dir.is_dir() or not mask_dir.is_dir():
        raise DatasetError(f"{root} must hold an {images}/ and a {masks}/ folder (pairs matched by file stem)")
    image_files = {p.stem: p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    mask_files = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    missing = sorted(set(mask_files) - set(image_files))
    if missing:
        raise DatasetError(f"{len(missing)} mask(s) in {mask_dir} have no image in {image_dir}, e.g. {missing[0]!r}")
    if not mask_files:
        raise DatasetError(f"no masks found in {mask_dir}")
    samples = tuple(
        Sample(stem, image_files[stem], _read_mask_file(mask_files[stem], encoding)) for stem in sorted(mask_files)
    )
    return Dataset(name or root.name, samples)


def _annotation_reader(annotation: dict, height: int, width: int) -> Callable[[tuple[int, int]], Target]:
    segmentation = annotation["segmentation"]

    def read(_size: tuple[int, int]) -> Target:
        if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str):  # compressed RLE
            rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode()}
        else:
            rles = mask_utils.frPyObjects(segmentation, height, width)
            rle = mask_utils.merge(rles) if isinstance(rles, list) else rles
        return Target(mask_utils.decode(rle).astype(bool))

    return read


def load_coco(json_path: str | os.PathLike, image_dir: str | os.PathLike | None = None, name: str | None = None) -> Dataset:
    """One sample per non-crowd instance of a COCO instances JSON, ordered by image then annotation id.

    ``image_dir`` defaults to ``images/`` beside the JSON's folder (the usual ``annotations/``
    layout), else the JSON's own folder.
    """
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text())
        images = {int(img["id"]): img for img in data["images"]}
        annotations = data["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{json_path} is not a readable COCO instances file: {exc}") from None
    if image_dir is None:
        beside = json_path.parent.parent / "images"
        image_dir = beside if beside.is_dir() else json_path.parent
    image_dir = Path(image_dir)
    samples = []
    for ann in sorted(annotations, key=lambda a: (int(a["image_id"]), int(a["id"]))):
        if ann.get("iscrowd", 0) or not ann.get("segmentation"):
            continue
        img = images.get(int(ann["image_id"]))
        if img is None:
            raise DatasetError(f"annotation {ann['id']} refers to image {ann['image_id']}, absent from {json_path}")
        path = image_dir / img["file_name"]
        stem = Path(img["file_name"]).stem
        samples.append(Sample(f"{stem}#{ann['id']}", path, _annotation_reader(ann, int(img["height"]), int(img["width"]))))
    if not samples:
        raise DatasetError(f"{json_path} has no non-crowd instance annotations")
    return Dataset(name or json_path.stem, tuple(samples))


# --- names ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Builtin:
    folder: str
    encoding: str = "binary"
    coco_json: str | None = None


BUILTIN: dict[str, _Builtin] = {
    "grabcut": _Builtin("grabcut", "trimap"),
    "berkeley": _Builtin("berkeley", "binary"),
    "davis": _Builtin("davis345", "nonzero"),
    "coco_mval": _Builtin("coco_mval_subset", "binary"),
    "coco": _Builtin("coco_val2017_tiny", coco_json="annotations/instances_val2017.json"),
}


def data_root() -> Path:
    """Where built-in dataset names resolve: ``$SEGANY_DATA``, ``$SEGANY_SHARED/data`` or ``../shared/data``."""
    if os.environ.get("SEGANY_DATA"):
        return Path(os.environ["SEGANY_DATA"])
    return Path(os.environ.get("SEGANY_SHARED", "../shared")) / "data"


def _open_path(path: Path) -> Dataset:
    if path.is_file() and path.suffix.lower() == ".json":
        return load_coco(path)
    if (path / "images").is_dir() and (path / "masks").is_dir():
        return load_folder(path)
    jsons = sorted((path / "annotations").glob("*.json")) if (path / "annotations").is_dir() else []
    if len(jsons) == 1:
        return load_coco(jsons[0], name=path.name)
    raise DatasetError(
        f"{path} is neither a COCO instances .json, a folder with images/ and masks/, nor a folder with one annotations/*.json"
    )


def open_dataset(name_or_path: str | os.PathLike) -> Dataset:
    """A built-in dataset by name (see the module docstring) or any dataset folder / COCO JSON by path."""
    key = str(name_or_path)
    if key in BUILTIN:
        spec = BUILTIN[key]
        folder = data_root() / spec.folder
        if not folder.is_dir():
            raise DatasetError(f"dataset {key!r} not found at {folder}: set SEGANY_DATA to the folder holding {spec.folder}/")
        if spec.coco_json:
            return load_coco(folder / spec.coco_json, folder / "images", name=key)
        return load_folder(folder, spec.encoding, name=key)
    path = Path(name_or_path)
    if path.exists():
        return _open_path(path)
    raise DatasetError(f"unknown dataset {key!r}: use one of {', '.join(BUILTIN)} or a path to a dataset folder or COCO .json")


# --- video object segmentation (VOS) sequences ---------------------------------------------------

VOS_BUILTIN: dict[str, str] = {"davis2016_clips": "davis2016_clips"}


@dataclass(frozen=True)
class VideoSequence:
    """One annotated video in the DAVIS layout: its frames (in the order the trackers read them) and
    its annotation PNGs (palette or gray: 0 background, each other value one object). Frames without
    an annotation file are tracked but not scored."""

    name: str
    frames_dir: Path
    frame_files: tuple[Path, ...]
    annotations: dict[int, Path]

    def annotation(self, frame_idx: int) -> np.ndarray | None:
        """The HxW label array of a frame (None when the frame has no annotation)."""
        path = self.annotations.get(frame_idx)
        if path is None:
            return None
        try:
            with Image.open(path) as img:
                return _first_channel(np.asarray(img))
        except (OSError, UnidentifiedImageError) as exc:
            raise DatasetError(f"cannot read annotation {path}: {exc}") from None

    def object_ids(self) -> list[int]:
        """The label values on the first frame's annotation: the objects to track."""
        first = self.annotation(0)
        if first is None:
            raise DatasetError(f"{self.name}: the first frame ({self.frame_files[0].name}) has no annotation to prompt from")
        ids = [int(v) for v in np.unique(first) if v != 0]
        if not ids:
            raise DatasetError(f"{self.name}: the first frame's annotation is empty")
        return ids


@dataclass(frozen=True)
class VideoDataset(Sequence[VideoSequence]):
    """A named, ordered list of annotated videos."""

    name: str
    sequences: tuple[VideoSequence, ...]

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index):  # type: ignore[override]
        return self.sequences[index]

    def __iter__(self) -> Iterator[VideoSequence]:
        return iter(self.sequences)

    def head(self, limit: int | None) -> VideoDataset:
        """The first ``limit`` sequences (all when None)."""
        return self if limit is None else VideoDataset(self.name, self.sequences[:limit])


def _resolution_folder(folder: Path) -> Path:
    """``JPEGImages/480p`` when the layout has a resolution level (one sub-folder holding folders)."""
    subfolders = [p for p in folder.iterdir() if p.is_dir()]
    if len(subfolders) == 1 and any(q.is_dir() for q in subfolders[0].iterdir()):
        return subfolders[0]
    return folder


def load_davis_videos(root: str | os.PathLike, name: str | None = None) -> VideoDataset:
    """Sequences of a DAVIS-layout folder: ``JPEGImages[/<res>]/<seq>/<k>.jpg`` with
    ``Annotations[/<res>]/<seq>/<k>.png`` (frames and masks paired by file stem)."""
    from .frames import FRAME_SUFFIXES, _frame_order

    root = Path(root)
    if not (root / "JPEGImages").is_dir() or not (root / "Annotations").is_dir():
        raise DatasetError(f"{root} must hold JPEGImages/ and Annotations/ folders (the DAVIS layout)")
    images, masks = _resolution_folder(root / "JPEGImages"), _resolution_folder(root / "Annotations")
    sequences = []
    for mask_dir in sorted(p for p in masks.iterdir() if p.is_dir()):
        frames_dir = images / mask_dir.name
        if not frames_dir.is_dir():
            raise DatasetError(f"{mask_dir} has no frames folder {frames_dir}")
        files = tuple(sorted((p for p in frames_dir.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()),
                             key=_frame_order))
        if not files:
            raise DatasetError(f"{frames_dir} has no frames")
        index = {p.stem: i for i, p in enumerate(files)}
        annotations = {}
        for png in mask_dir.glob("*.png"):
            if png.stem not in index:
                raise DatasetError(f"annotation {png} has no frame in {frames_dir}")
            annotations[index[png.stem]] = png
        sequences.append(VideoSequence(mask_dir.name, frames_dir, files, annotations))
    if not sequences:
        raise DatasetError(f"no annotated sequences in {masks}")
    return VideoDataset(name or root.name, tuple(sequences))


def open_video_dataset(name_or_path: str | os.PathLike) -> VideoDataset:
    """A built-in VOS dataset by name (``davis2016_clips``, under the data folder) or a DAVIS-layout folder."""
    key = str(name_or_path)
    if key in VOS_BUILTIN:
        folder = data_root() / VOS_BUILTIN[key]
        if not folder.is_dir():
            raise DatasetError(f"dataset {key!r} not found at {folder}: set SEGANY_DATA to the folder holding "
                               f"{VOS_BUILTIN[key]}/")
        return load_davis_videos(folder, name=key)
    path = Path(name_or_path)
    if path.is_dir():
        return load_davis_videos(path)
    raise DatasetError(f"unknown video dataset {key!r}: use {', '.join(VOS_BUILTIN)} or a DAVIS-layout folder "
                       "(JPEGImages/ and Annotations/)")
