"""onnxruntime-web for the annotator's in-browser decoder (the hover preview): the npm package's
tarball, fetched once with a pinned sha256 by :func:`segany.weights.ensure_file` (as weights are),
and the three files the page imports extracted into the segany cache. ``segany serve`` serves such
a folder at ``/runtime/`` (``--web-runtime DIR``, or ``download`` to fetch it); without one the page
previews through the server."""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from ..errors import ConfigError
from ..registry import WeightFile
from ..weights import cache_dir, cached_path, ensure_file

VERSION = "1.30.0"
ENTRY = "ort.wasm.min.mjs"  # what the page imports; it loads the other two
FILES = (ENTRY, "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
WEB_RUNTIME = WeightFile(
    name=f"onnxruntime-web {VERSION}",
    url=f"https://registry.npmjs.org/onnxruntime-web/-/onnxruntime-web-{VERSION}.tgz",
    num_bytes=33_106_585,
    sha256="d2228df7e4616bc3348bf504ee888f3bec43789a273f0a63f3e68d203ce3bf71",
    description="onnxruntime-web, the browser's ONNX runtime (WebAssembly): the annotator's hover preview",
    source="https://www.npmjs.com/package/onnxruntime-web",
    local_option=f"--web-runtime DIR (a folder holding its dist/ files {', '.join(FILES)})",
)


def default_dir() -> Path:
    """Where :func:`ensure_web_runtime` puts the files: ``<segany cache>/onnxruntime-web-<version>``."""
    return cache_dir() / f"onnxruntime-web-{VERSION}"


def check_runtime(folder: str | os.PathLike) -> Path:
    """``folder`` if it holds onnxruntime-web's files; :class:`ConfigError` naming what is missing."""
    path = Path(folder)
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        raise ConfigError(f"--web-runtime {path}: missing {', '.join(missing)} (the dist/ files of the npm package "
                          f"onnxruntime-web {VERSION}; or pass --web-runtime download)")
    return path


def cached_runtime() -> Path | None:
    """The cached runtime folder, or ``None`` when it was not fetched."""
    folder = default_dir()
    return folder if all((folder / name).is_file() for name in FILES) else None


def ensure_web_runtime(progress: bool = True) -> Path:
    """The cached runtime folder, downloading and extracting the npm tarball on first use (the
    folder appears whole or not at all; the tarball is removed once extracted)."""
    folder = cached_runtime()
    if folder is not None:
        return folder
    tarball = ensure_file(WEB_RUNTIME, progress=progress)
    target = default_dir()
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for name in FILES:  # only these members, written by name: no path from the archive is used
                member = archive.extractfile(f"package/dist/{name}")
                if member is None:
                    raise ConfigError(f"{tarball} has no package/dist/{name}")
                with member, open(staging / name, "wb") as out:
                    shutil.copyfileobj(member, out)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    cached_path(WEB_RUNTIME).unlink(missing_ok=True)
    return target
