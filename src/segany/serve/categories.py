"""A project's category list for ``segany serve --categories FILE``.

The file is one of: a text file with one category name per line (blank lines and ``#`` comments
skipped); a JSON list of names or of ``{"name": ..., "color": [r, g, b] | "#rrggbb"}`` objects; or a
COCO file, whose ``categories`` are taken in the order written. The order gives the hotkeys 1-9.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import AnnotationError


def read_categories(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The categories in ``path`` as ``[{"name": str, "color": [r, g, b] | None}, ...]``, in order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise AnnotationError(f"cannot read the category file {path}: {exc}") from None
    if path.suffix.lower() != ".json":
        lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
        return [{"name": line, "color": None} for line in lines if line]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"category file {path} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("categories"), list):
        data = data["categories"]
    if not isinstance(data, list):
        raise AnnotationError(f"category file {path} must hold a list of names, of {{name, color}} objects, "
                              "or a COCO file's categories")
    entries = []
    for item in data:
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise AnnotationError(f"category file {path}: each category must be a name or an object with a "
                                  f"'name', got {item!r}")
        entries.append({"name": item["name"], "color": item.get("color")})
    return entries
