"""onnxruntime-web for the annotator's in-browser decoder (the hover preview): the three files of the
npm package's ``dist/`` the page loads, checked in a ``--web-runtime`` folder and extracted from the
package's tarball (``segany serve --web-runtime download`` fetches it once, sha256-checked, as weights
are: :data:`segany.registry.ONNXRUNTIME_WEB`). ``segany serve`` serves the folder at ``/runtime/``;
without one the page previews through the server."""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from ..errors import ConfigError

VERSION = "1.30.0"
ENTRY = "ort.wasm.min.mjs"  # what the page imports; it loads the other two
FILES = (ENTRY, "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")


def is_runtime(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FILES)


def check_runtime(folder: str | os.PathLike) -> Path:
    """``folder`` if it holds onnxruntime-web's files; :class:`ConfigError` naming what is missing."""
    path = Path(folder)
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        raise ConfigError(f"--web-runtime {path}: missing {', '.join(missing)} (the dist/ files of the npm package "
                          f"onnxruntime-web {VERSION}; or pass --web-runtime download)")
    return path


def extract_runtime(tarball: Path, target: Path) -> Path:
    """Extract :data:`FILES` from the npm tarball into ``target`` (which appears whole or not at all)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for name in FILES:  # only these members, written by name: no path from the archive is used
                try:
                    member = archive.extractfile(f"package/dist/{name}")
                except KeyError:
                    member = None
                if member is None:
                    raise ConfigError(f"{tarball} has no package/dist/{name}: not the onnxruntime-web package")
                with member, open(staging / name, "wb") as out:
                    shutil.copyfileobj(member, out)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
