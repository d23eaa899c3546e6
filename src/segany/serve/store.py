"""Accepted annotations as one COCO instances JSON file (masks as RLE), saved after every change.

Each change is written with :func:`segany.fileio.atomic_write_json` before the call returns, so
the file on disk is always a complete, loadable dataset holding every acknowledged annotation: a
kill at any moment leaves either the previous or the new version, never half of one. The file
is read back on start; a file that cannot be read stops the server instead of being overwritten.
Temporary files a killed server left beside it are removed on start.

Annotations made elsewhere keep their segmentation as written (polygons, uncompressed or
compressed RLE) unless their mask is edited here; the API shows each as compressed RLE. Ids are
never given out twice, even across restarts and deletions: the highest id used so far is kept
in the file's ``info`` block (``segany_last_ids``).
"""
from __future__ import annotations

import copy
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AnnotationError, ConflictError, NotFoundError
from ..fileio import atomic_write_json
from ..masks import encode_rle, mask_bbox_xywh
from .rle import mask_from_rle, segmentation_rle

MAX_CATEGORY_LENGTH = 100
LAST_IDS = "segany_last_ids"  # in the dataset's info block: {"annotations": n, "images": n, "categories": n}


def _empty_dataset() -> dict[str, Any]:
    return {
        "info": {"description": "annotations made with segany serve",
                 "date_created": datetime.now(timezone.utc).isoformat(timespec="seconds")},
        "images": [],
        "annotations": [],
        "categories": [],
    }


def _check_dataset(data: Any, path: Path) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise AnnotationError(f"annotation file {path} is not a COCO dataset (expected a JSON object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.setdefault(key, []), list):
            raise AnnotationError(f"annotation file {path}: {key!r} must be a list")
    if not isinstance(data.setdefault("info", {}), dict) or not isinstance(data["info"].get(LAST_IDS, {}), dict):
        raise AnnotationError(f"annotation file {path}: 'info' must be an object (with {LAST_IDS!r} an object)")
    try:
        {key: int(value) for key, value in data["info"].get(LAST_IDS, {}).items()}
        for item in data["images"]:
            int(item["id"]), str(item["file_name"]), int(item["width"]), int(item["height"])
        for item in data["categories"]:
            int(item["id"]), str(item["name"])
        for item in data["annotations"]:
            int(item["id"]), int(item["image_id"]), int(item["category_id"]), item["segmentation"]
    except (KeyError, TypeError, ValueError) as exc:
        raise AnnotationError(f"annotation file {path} has a malformed entry ({type(exc).__name__}: {exc})") from None
    return data


def category_name(name: str) -> str:
    """A category name as stored: stripped, non-empty, at most 100 characters."""
    name = name.strip()
    if not name:
        raise AnnotationError("category must be a non-empty name")
    if len(name) > MAX_CATEGORY_LENGTH:
        raise AnnotationError(f"category must be at most {MAX_CATEGORY_LENGTH} characters, got {len(name)}")
    return name


class AnnotationStore:
    """The COCO dataset in ``path``: images keyed by relative file name, categories by name."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):  # atomic_write's, from a killed run
            leftover.unlink(missing_ok=True)
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, UnicodeError, json.JSONDecodeError) as exc:
                raise AnnotationError(
                    f"annotation file {self.path} cannot be read ({exc}); move it away or pass another --annotations file"
                ) from None
            self._data = _check_dataset(data, self.path)
        else:
            self._data = _empty_dataset()

    # -- reading -------------------------------------------------------------------------------

    def dataset(self) -> dict[str, Any]:
        """A deep copy of the whole COCO dataset."""
        with self._lock:
            return copy.deepcopy(self._data)

    def categories(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._data["categories"])

    def annotations_for(self, file_name: str) -> list[dict[str, Any]]:
        """The annotations of one image (by relative file name), each with its ``category`` name."""
        with self._lock:
            image = self._image(file_name)
            if image is None:
                return []
            return [self._public(a) for a in self._data["annotations"] if a["image_id"] == image["id"]]

    def get(self, ann_id: int) -> tuple[str, dict[str, Any]]:
        """One annotation (the API's view) and the file name of its image; :class:`NotFoundError`."""
        with self._lock:
            ann = self._annotation(ann_id)
            image = next((i for i in self._data["images"] if i["id"] == ann["image_id"]), None)
            return (image["file_name"] if image else ""), self._public(ann)

    def counts(self) -> dict[str, int]:
        """Number of annotations per image file name."""
        with self._lock:
            names = {image["id"]: image["file_name"] for image in self._data["images"]}
            counts: dict[str, int] = {}
            for ann in self._data["annotations"]:
                name = names.get(ann["image_id"])
                if name is not None:
                    counts[name] = counts.get(name, 0) + 1
            return counts

    # -- changing (each change is saved before returning) ----------------------------------------

    def create(self, file_name: str, height: int, width: int, category: str, rle: dict,
               score: float | None = None) -> dict[str, Any]:
        """Add an annotation to an image; the category is created when new."""
        return self._insert(None, file_name, height, width, category, rle, score)

    def restore(self, ann_id: int, file_name: str, height: int, width: int, category: str, rle: dict,
                score: float | None = None) -> dict[str, Any]:
        """Bring back a deleted annotation under its own id (undo of a delete or redo of an accept).

        Ids are never given out twice, so the id can only be the one that was deleted:
        :class:`NotFoundError` for an id never given out, :class:`ConflictError` for a live one."""
        return self._insert(ann_id, file_name, height, width, category, rle, score)

    def update(self, ann_id: int, category: str | None = None, rle: dict | None = None) -> dict[str, Any]:
        """Relabel an annotation and/or replace its mask."""
        name = category_name(category) if category is not None else None
        with self._lock, self._transaction():
            ann = self._annotation(ann_id)
            if rle is not None:
                image = next(i for i in self._data["images"] if i["id"] == ann["image_id"])
                ann.update(self._geometry(mask_from_rle(rle, image["height"], image["width"])))
            if name is not None:
                ann["category_id"] = self._category_id(name)
            return self._public(ann)

    def delete(self, ann_id: int) -> None:
        with self._lock, self._transaction():
            self._data["annotations"].remove(self._annotation(ann_id))

    # -- internals (called with the lock held) -----------------------------------------------

    def _insert(self, ann_id: int | None, file_name: str, height: int, width: int, category: str, rle: dict,
                score: float | None) -> dict[str, Any]:
        """Add an annotation under a new id (``ann_id`` None) or a deleted one, kept in id order."""
        mask = mask_from_rle(rle, height, width)
        name = category_name(category)
        with self._lock, self._transaction():
            annotations = self._data["annotations"]
            if ann_id is not None:
                if any(a["id"] == ann_id for a in annotations):
                    raise ConflictError(f"annotation {ann_id} exists: change it with PATCH instead of restoring it")
                if not 0 < ann_id <= self._last_id("annotations"):
                    raise NotFoundError(f"annotation id {ann_id} was never given out: only a deleted one can be restored")
            image = self._image(file_name) or self._add_image(file_name, height, width)
            ann: dict[str, Any] = {
                "id": self._next_id("annotations") if ann_id is None else ann_id,
                "image_id": image["id"],
                "category_id": self._category_id(name),
                **self._geometry(mask),
                "iscrowd": 0,
            }
            if score is not None:
                ann["score"] = float(score)
            later = next((i for i, a in enumerate(annotations) if int(a["id"]) > ann["id"]), len(annotations))
            annotations.insert(later, ann)
            return self._public(ann)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """Apply a change in memory and save it; if anything fails, memory goes back to the file's state."""
        before = copy.deepcopy(self._data)
        try:
            yield
            atomic_write_json(self.path, self._data)
        except BaseException:
            self._data = before
            raise

    def _next_id(self, key: str) -> int:
        """A new id for ``images``, ``annotations`` or ``categories``: never one given out before
        (the high-water mark is saved with the change), so a client holding a deleted
        annotation's id cannot hit another one, even after a restart."""
        last = self._data["info"].setdefault(LAST_IDS, {})
        last[key] = self._last_id(key) + 1
        return last[key]

    def _last_id(self, key: str) -> int:
        """The highest id given out so far for ``key`` (0 when none)."""
        last = self._data["info"].get(LAST_IDS, {})
        return max(int(last.get(key, 0)), *(int(item["id"]) for item in self._data[key]), 0)

    @staticmethod
    def _geometry(mask: np.ndarray) -> dict[str, Any]:
        return {"segmentation": encode_rle(mask), "area": int(mask.sum()), "bbox": mask_bbox_xywh(mask)}

    def _image(self, file_name: str) -> dict[str, Any] | None:
        return next((i for i in self._data["images"] if i["file_name"] == file_name), None)

    def _add_image(self, file_name: str, height: int, width: int) -> dict[str, Any]:
        image = {"id": self._next_id("images"), "file_name": file_name, "height": height, "width": width}
        self._data["images"].append(image)
        return image

    def _category_id(self, name: str) -> int:
        for category in self._data["categories"]:
            if category["name"] == name:
                return int(category["id"])
        category = {"id": self._next_id("categories"), "name": name, "supercategory": ""}
        self._data["categories"].append(category)
        return category["id"]

    def _annotation(self, ann_id: int) -> dict[str, Any]:
        ann = next((a for a in self._data["annotations"] if a["id"] == ann_id), None)
        if ann is None:
            raise NotFoundError(f"no annotation with id {ann_id}")
        return ann

    def _public(self, ann: dict[str, Any]) -> dict[str, Any]:
        """The API's view of a stored annotation: segmentation as compressed RLE, category name."""
        names = {c["id"]: c["name"] for c in self._data["categories"]}
        image = next((i for i in self._data["images"] if i["id"] == ann["image_id"]), None)
        if image is None:
            raise AnnotationError(f"annotation {ann['id']} refers to image {ann['image_id']}, which the file lacks")
        try:
            rle = segmentation_rle(ann["segmentation"], int(image["height"]), int(image["width"]))
        except AnnotationError as exc:
            raise AnnotationError(f"annotation {ann['id']} in {self.path.name}: {exc}") from None
        return {**copy.deepcopy(ann), "segmentation": rle, "iscrowd": int(ann.get("iscrowd", 0)),
                "category": names.get(ann["category_id"], "")}
