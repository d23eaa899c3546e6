"""Atomic file writes: a reader never sees half a file, and a crash never loses the old one.

A write goes to a temporary file beside the target, is fsync'd, given the permissions a plain
``open()`` would have given it (``0o666`` less the process umask), renamed over the target, and
the folder is fsync'd so the rename itself survives a crash. Any failure (a full disk, no
permission, a file where a folder should be) removes the temporary file, leaves the old target
as it was and raises :class:`~segany.errors.OutputError` naming the path.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from .errors import NonFiniteError, OutputError

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where Linux tells it (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore (the only portable way to read it)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not fsync folders; the data file itself is already synced
    finally:
        os.close(fd)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def ensure_directory(path: str | os.PathLike, what: str = "output folder") -> Path:
    """``path`` as an existing, writable folder (created with its parents), else :class:`OutputError`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder: choose another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".segany-write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{what} {path} cannot be written: {_reason(exc)}") from None
    return path


class AtomicFile:
    """A temporary file beside ``path`` that a writer fills by name (``.tmp``) and that becomes
    ``path`` at :meth:`commit` (fsync'd, given the umask's permissions, renamed, folder fsync'd) or
    disappears at :meth:`discard`. As a context manager: commit on success, discard on any error.
    For files written piece by piece (a video encoder); whole bytes: :func:`atomic_write_bytes`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {_reason(exc)}") from None
        os.close(fd)
        self.tmp = Path(tmp)

    def commit(self) -> Path:
        try:
            fd = os.open(self.tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(self.tmp, 0o666 & ~current_umask())  # mkstemp makes 0600
            os.replace(self.tmp, self.path)
        except BaseException as exc:
            self.discard()
            if isinstance(exc, OSError):
                raise OutputError(f"cannot write {self.path}: {_reason(exc)}") from None
            raise
        _fsync_directory(self.path.parent)
        return self.path

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
            if isinstance(exc, OSError) and not isinstance(exc, OutputError):
                raise OutputError(f"cannot write {self.path}: {_reason(exc)}") from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    target = AtomicFile(path)
    with target as tmp, os.fdopen(os.open(tmp, os.O_WRONLY), "wb") as f:
        f.write(data)
    return target.path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _non_finite_at(data: Any, where: str = "") -> str | None:
    """Where in ``data`` the first NaN or infinite float is (``masks[0].score``), or None."""
    if isinstance(data, float) and not math.isfinite(data):
        return where or "the value"
    if isinstance(data, dict):
        items = ((f"{where}.{key}" if where else str(key), value) for key, value in data.items())
    elif isinstance(data, (list, tuple)):
        items = ((f"{where}[{index}]", value) for index, value in enumerate(data))
    else:
        return None
    for key, value in items:
        if (found := _non_finite_at(value, key)) is not None:
            return found
    return None


def json_text(data: Any, indent: int | None = None) -> str:
    """Strict JSON (no NaN/Infinity, which JSON does not have); :class:`NonFiniteError` names the value."""
    try:
        return json.dumps(data, indent=indent, allow_nan=False)
    except ValueError:
        where = _non_finite_at(data)
        if where is None:
            raise
        raise NonFiniteError(f"{where} is not a finite number and JSON has no NaN/Infinity "
                             f"(a NaN score usually means broken model weights)") from None


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = None) -> Path:
    """``data`` as strict JSON (see :func:`json_text`), written atomically."""
    return atomic_write_text(path, json_text(data, indent=indent))
