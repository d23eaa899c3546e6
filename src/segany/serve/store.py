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

Progress: each image the labeller touched is listed in ``images`` with its state in
``segany_state`` (:data:`IMAGE_STATES`; absent reads as "in_progress" when the image has
annotations, else "not_started"); the first annotation of an image not started (or marked empty)
makes it "in_progress". Categories may carry a ``color`` ([r, g, b], as COCO panoptic's); they are
listed in the project's order (``segany serve --categories``, then the file's) and the first nine get
the hotkeys 1-9. Renaming keeps a category's id; merging moves its annotations to the target's id.
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
STATE = "segany_state"  # in an image entry: one of IMAGE_STATES
IMAGE_STATES = ("not_started", "in_progress", "done", "empty")
HOTKEYS = 9  # categories 1-9 in list order


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
            if item.get(STATE, IMAGE_STATES[0]) not in IMAGE_STATES:
                raise ValueError(f"image {item['id']} has {STATE} {item[STATE]!r}, not one of {', '.join(IMAGE_STATES)}")
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


def image_state(state: str) -> str:
    """An image state as stored: one of :data:`IMAGE_STATES`, else an :class:`AnnotationError`."""
    if state not in IMAGE_STATES:
        raise AnnotationError(f"state must be one of {', '.join(IMAGE_STATES)}, got {state!r}")
    return state


def category_color(color: Any) -> list[int]:
    """A category colour as stored: [r, g, b], each an integer 0-255 (or "#rrggbb", converted)."""
    if isinstance(color, str) and len(color) == 7 and color.startswith("#"):
        try:
            return [int(color[i:i + 2], 16) for i in (1, 3, 5)]
        except ValueError:
            pass
    elif (isinstance(color, (list, tuple)) and len(color) == 3
          and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in color)):
        return [int(v) for v in color]
    raise AnnotationError(f"a category colour must be [r, g, b] (0-255) or \"#rrggbb\", got {color!r}")


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
        self._order: list[str] = []  # the project's category names, listed first

    # -- reading -------------------------------------------------------------------------------

    def dataset(self) -> dict[str, Any]:
        """A deep copy of the whole COCO dataset."""
        with self._lock:
            return copy.deepcopy(self._data)

    def categories(self) -> list[dict[str, Any]]:
        """The categories in the project's order, each with its ``hotkey`` (1-9, else null) and
        its number of ``annotations``."""
        with self._lock:
            first = {name: i for i, name in enumerate(self._order)}
            ordered = sorted(self._data["categories"], key=lambda c: first.get(c["name"], len(first)))
            counts: dict[int, int] = {}
            for ann in self._data["annotations"]:
                counts[ann["category_id"]] = counts.get(ann["category_id"], 0) + 1
            return [{**copy.deepcopy(c), "hotkey": i + 1 if i < HOTKEYS else None,
                     "annotations": counts.get(c["id"], 0)} for i, c in enumerate(ordered)]

    def export(self, images: list[tuple[str, int, int]]) -> dict[str, Any]:
        """The dataset with every image of ``images`` ((file name, height, width), e.g. the whole
        folder) listed, each with its state; the ones never touched are "not_started"."""
        data = self.dataset()
        listed = {image["file_name"] for image in data["images"]}
        states = self.states()
        for image in data["images"]:
            image[STATE] = states.get(image["file_name"], IMAGE_STATES[0])
        next_id = max([int(image["id"]) for image in data["images"]]
                      + [int(data["info"].get(LAST_IDS, {}).get("images", 0))], default=0)
        for file_name, height, width in images:
            if file_name not in listed:
                next_id += 1
                data["images"].append({"id": next_id, "file_name": file_name, "height": height, "width": width,
                                       STATE: IMAGE_STATES[0]})
        return data

    def states(self) -> dict[str, str]:
        """The state of every image the file lists, by file name (see the module docstring)."""
        counts = self.counts()
        with self._lock:
            return {image["file_name"]: image.get(STATE) or ("in_progress" if counts.get(image["file_name"]) else "not_started")
                    for image in self._data["images"]}

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

    def set_state(self, file_name: str, height: int, width: int, state: str) -> str:
        """Set an image's state (the image is listed from now on); returns the state."""
        state = image_state(state)
        with self._lock, self._transaction():
            image = self._image(file_name) or self._add_image(file_name, height, width)
            held = sum(1 for a in self._data["annotations"] if a["image_id"] == image["id"])
            if state == "empty" and held:
                raise AnnotationError(f"{file_name} has {held} annotations: delete them before marking it empty")
            image[STATE] = state
            return state

    def add_categories(self, entries: list[dict[str, Any]]) -> None:
        """Merge a project category list ({"name", optional "color"}, in hotkey order) into the
        file's: new names are added, colours fill in where the file has none; saved when it changed."""
        names = [category_name(str(entry["name"])) for entry in entries]
        colors = [category_color(entry["color"]) if entry.get("color") is not None else None for entry in entries]
        with self._lock:
            self._order = list(dict.fromkeys(names))
            known = {c["name"]: c for c in self._data["categories"]}
            if all(n in known and (c is None or "color" in known[n]) for n, c in zip(names, colors)):
                return
            with self._transaction():
                for name, color in zip(names, colors):
                    category = self._category(self._category_id(name))
                    if color is not None and "color" not in category:
                        category["color"] = color

    def add_category(self, name: str, color: Any = None) -> dict[str, Any]:
        """A new category (an :class:`AnnotationError` if the name is taken); returns it as listed."""
        name = category_name(name)
        with self._lock, self._transaction():
            if any(c["name"] == name for c in self._data["categories"]):
                raise AnnotationError(f"there is already a category {name!r}")
            category = self._category(self._category_id(name))
            if color is not None:
                category["color"] = category_color(color)
            category_id = category["id"]
        return self._listed(category_id)

    def update_category(self, category_id: int, name: str | None = None, color: Any = None) -> dict[str, Any]:
        """Rename and/or recolour a category; its id (and so its annotations) stay. A name another
        category has is an :class:`AnnotationError` (merge them instead)."""
        name = category_name(name) if name is not None else None
        with self._lock:
            order = self._order
            with self._transaction():
                category = self._category(category_id)
                if name is not None and name != category["name"]:
                    if any(c["name"] == name for c in self._data["categories"]):
                        raise AnnotationError(f"there is already a category {name!r}: merge into it instead")
                    order = [name if n == category["name"] else n for n in order]
                    category["name"] = name
                if color is not None:
                    category["color"] = category_color(color)
            self._order = order  # only once saved
        return self._listed(category_id)

    def merge_category(self, source_id: int, target_id: int) -> dict[str, Any]:
        """Move every annotation of category ``source_id`` to ``target_id`` and remove the source;
        returns the target as listed."""
        with self._lock:
            with self._transaction():
                source, target = self._category(source_id), self._category(target_id)
                if source is target:
                    raise AnnotationError(f"cannot merge category {source_id} into itself")
                for ann in self._data["annotations"]:
                    if ann["category_id"] == source_id:
                        ann["category_id"] = target["id"]
                self._data["categories"].remove(source)
            self._order = [n for n in self._order if n != source["name"]]  # only once saved
        return self._listed(target_id)

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
            if image.get(STATE, IMAGE_STATES[0]) in ("not_started", "empty"):
                image[STATE] = "in_progress"
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

    def _category(self, category_id: int) -> dict[str, Any]:
        category = next((c for c in self._data["categories"] if c["id"] == category_id), None)
        if category is None:
            raise NotFoundError(f"no category with id {category_id}")
        return category

    def _listed(self, category_id: int) -> dict[str, Any]:
        return next(c for c in self.categories() if c["id"] == category_id)

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
