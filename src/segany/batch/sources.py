"""Images under filesystem URIs (``memory://``, ``file://``, ``s3://``, ``gs://``, ...) through ``fsspec``.

Any protocol fsspec knows works where its package is installed (``s3fs`` for ``s3://``, ``gcsfs``
for ``gs://``, ...; credentials as that package reads them). Only the inputs are URIs: a batch
job's output folder is local (or a shared mount).
"""
from __future__ import annotations

import glob
import re
from typing import Any

from ..errors import BackendError, ImageError

_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_uri(text: str) -> bool:
    """Whether ``text`` is a ``protocol://...`` URI (not a local path)."""
    return _URI.match(text) is not None


def process_local(uri: str) -> bool:
    """Whether ``uri`` is on a filesystem only this process sees (``memory://``): other workers cannot read it."""
    return uri.lower().startswith("memory://")


def filesystem(uri: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``uri`` and the path in it; :class:`BackendError` in one line for
    an unknown protocol, or one whose package is missing (naming the package to install)."""
    match = _URI.match(uri)
    protocol = match.group(1).lower() if match else ""
    try:
        from fsspec.core import url_to_fs
        from fsspec.registry import known_implementations
    except ImportError:
        raise BackendError(f"reading {uri} needs fsspec: pip install 'segany[ray]' (or pip install fsspec)") from None
    try:
        return url_to_fs(uri)
    except ImportError:
        package = known_implementations.get(protocol, {}).get("class", "").split(".")[0] or protocol
        raise BackendError(f"reading {protocol}:// URIs needs the {package} package: pip install {package}") from None
    except ValueError as exc:
        raise BackendError(f"cannot read {uri}: unknown filesystem protocol {protocol!r} ({exc})") from None


def list_uri(uri: str, suffixes: frozenset[str]) -> list[tuple[str, str]] | None:
    """The files an input URI names, as ``(file URI, relative name)`` pairs, sorted; None when it
    names nothing. A folder gives its files with one of ``suffixes`` (recursively, named by their
    path below it), a glob its matches and a file itself (each named by its file name)."""
    fs, path = filesystem(uri)
    root = path.rstrip("/") or "/"
    try:
        if glob.has_magic(path):
            files = [(p, p.rsplit("/", 1)[-1]) for p in fs.glob(path) if fs.isfile(p)]
        elif fs.isdir(root):
            files = [(p, p[len(root):].lstrip("/")) for p in fs.find(root)
                     if "." in p.rsplit("/", 1)[-1] and "." + p.rsplit(".", 1)[-1].lower() in suffixes]
        elif fs.isfile(root):
            files = [(root, root.rsplit("/", 1)[-1])]
        else:
            return None
    except OSError as exc:
        raise ImageError(f"cannot list {uri}: {' '.join(str(exc).split())}") from None
    return sorted((fs.unstrip_protocol(p), name) for p, name in files) or None


def read_uri(uri: str) -> bytes:
    """The bytes of the file at ``uri``; :class:`ImageError` when it is missing or unreadable."""
    fs, path = filesystem(uri)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise ImageError(f"image {uri} does not exist") from None
    except OSError as exc:
        raise ImageError(f"image {uri} cannot be read ({' '.join(str(exc).split())})") from None
