"""COCO instances JSON assembled from per-image SA-1B documents (pycocotools ``COCO()`` loads it).

Every mask becomes an annotation of the single category ``object`` with its COCO RLE, area and
XYWH box; the generator's scores ride along (``score`` = predicted IoU, ``stability_score``,
``point_coords``, ``crop_box``) so the file's ``annotations`` also work as a detection-results
list (``COCO.loadRes``). Masks that carry a ``category`` name (text-prompted labelling,
:mod:`segany.text`) get real categories instead, numbered from 1 in the order given (or of first
appearance), with ``score`` = the detector's score and its grounded ``label``. Images keep their documents' ``image_id``; with a reference COCO file
(:class:`CocoImageIndex`, e.g. the dataset's ground truth) those ids are the reference's, found
by file name, so ``COCOeval`` scores the results against it.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ...errors import AnnotationError

CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


class CocoImageIndex:
    """The ``images`` of a COCO file, looked up by file name (its whole ``file_name``, else its base name)."""

    def __init__(self, images: list[dict[str, Any]], source: str = "the COCO file") -> None:
        self.source = source
        self._by_id: dict[int, dict[str, Any]] = {}
        self._by_name: dict[str, dict[str, Any]] = {}
        base_names: dict[str, list[dict[str, Any]]] = {}
        for entry in images:
            if not (isinstance(entry, dict) and isinstance(entry.get("id"), int) and isinstance(entry.get("file_name"), str)
                    and isinstance(entry.get("height"), int) and isinstance(entry.get("width"), int)):
                raise AnnotationError(f"{source}: every image needs an integer id, height and width and a file_name; got {entry!r:.200}")
            self._by_id[entry["id"]] = entry
            self._by_name[entry["file_name"]] = entry
            base_names.setdefault(PurePosixPath(entry["file_name"]).name, []).append(entry)
        self._by_base = {name: entries[0] for name, entries in base_names.items() if len(entries) == 1}

    @classmethod
    def load(cls, path: str | os.PathLike) -> CocoImageIndex:
        """The image index of the COCO JSON at ``path``; :class:`AnnotationError` if it cannot be read."""
        try:
            data = json.loads(Path(path).read_bytes())
        except OSError as exc:
            raise AnnotationError(f"COCO file {path} cannot be read: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise AnnotationError(f"COCO file {path} is not valid JSON: {exc}") from None
        if not (isinstance(data, dict) and isinstance(data.get("images"), list)):
            raise AnnotationError(f"COCO file {path} has no 'images' list")
        return cls(data["images"], source=str(path))

    def find(self, name: str) -> dict[str, Any] | None:
        """The image entry whose ``file_name`` is ``name`` (a ``/``-separated path), else the one
        with the same base name if only one has it; None if none does."""
        return self._by_name.get(name) or self._by_base.get(PurePosixPath(name).name)

    def by_id(self, image_id: int) -> dict[str, Any]:
        try:
            return self._by_id[image_id]
        except KeyError:
            raise AnnotationError(f"image id {image_id} is not in {self.source}") from None


def coco_instances(
    documents: Iterable[dict[str, Any]],
    description: str = "segany everything",
    reference: CocoImageIndex | None = None,
    categories: Sequence[str] | None = None,
) -> dict[str, Any]:
    """One COCO instances dict from SA-1B documents; annotations are numbered from 1.

    Image ids are the documents' ``image_id``; with ``reference``, file names and sizes are the
    reference's entries for those ids. ``categories``: the category names, in id order, of
    annotations that carry a ``category`` (default: in order of first appearance); an annotation
    whose category is not among them is an :class:`AnnotationError`.
    """
    documents = list(documents)
    names = list(dict.fromkeys(categories if categories is not None else
                               (a["category"] for d in documents for a in d["annotations"] if "category" in a)))
    category_ids = {name: number for number, name in enumerate(names, start=1)}
    images, annotations = [], []
    seen: dict[int, str] = {}
    for document in documents:
        info = document["image"]
        image_id = info["image_id"]
        if image_id in seen:
            raise AnnotationError(f"{seen[image_id]} and {info['file_name']} have the same image_id {image_id}")
        seen[image_id] = info["file_name"]
        entry = reference.by_id(image_id) if reference is not None else info
        images.append({"id": image_id, "file_name": entry["file_name"], "height": entry["height"], "width": entry["width"]})
        for ann in document["annotations"]:
            if "category" in ann and ann["category"] not in category_ids:
                raise AnnotationError(f"{info['file_name']}: mask {ann.get('id')} has category {ann['category']!r}, "
                                      f"not one of {names}")
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category_ids[ann["category"]] if "category" in ann else CATEGORY["id"],
                "segmentation": ann["segmentation"],
                "area": ann["area"],
                "bbox": ann["bbox"],
                "iscrowd": 0,
                "score": ann["predicted_iou"],
                "stability_score": ann["stability_score"],
                "point_coords": ann["point_coords"],
                "crop_box": ann["crop_box"],
                **({"score": ann["detector_score"], "label": ann.get("label", "")} if "detector_score" in ann else {}),
            })
    return {
        "info": {"description": description},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n, "supercategory": "object"} for n, i in category_ids.items()] or [CATEGORY],
    }
