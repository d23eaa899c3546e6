"""Atomic writes: the process umask, a durable rename, strict JSON, typed errors for unwritable outputs."""
from __future__ import annotations

import errno
import json
import os
import stat

import pytest

from segany.errors import NonFiniteError, OutputError
from segany.fileio import atomic_write_bytes, atomic_write_json, ensure_directory


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it afterwards."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_get_the_umask_permissions(tmp_path, umask, mask: int, mode: int) -> None:
    umask(mask)
    path = atomic_write_bytes(tmp_path / "result.json", b"{}")
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert os.listdir(tmp_path) == ["result.json"]


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch) -> None:
    synced: list[bool] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    atomic_write_bytes(tmp_path / "a.bin", b"data")
    assert synced == [False, True]  # the file's data, then the folder holding the new name


def test_json_never_holds_nan(tmp_path) -> None:
    target = tmp_path / "doc.json"
    with pytest.raises(NonFiniteError, match=r"masks\[1\]\.score is not a finite number"):
        atomic_write_json(target, {"masks": [{"score": 0.5}, {"score": float("nan")}]})
    with pytest.raises(NonFiniteError, match="not a finite number"):
        atomic_write_json(target, [float("inf")])
    assert list(tmp_path.iterdir()) == []
    atomic_write_json(target, {"score": 0.25})
    assert json.loads(target.read_text()) == {"score": 0.25}


def test_full_disk_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch) -> None:
    target = atomic_write_bytes(tmp_path / "a.json", b"old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match=f"cannot write {target}: No space left on device"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.json"]


def test_output_folder_that_is_a_file_or_unwritable(tmp_path, monkeypatch) -> None:
    (tmp_path / "taken").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        ensure_directory(tmp_path / "taken")
    with pytest.raises(OutputError, match="cannot write"):
        atomic_write_bytes(tmp_path / "taken" / "a.json", b"{}")

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr("tempfile.mkstemp", denied)  # as root, chmod cannot make a folder unwritable
    with pytest.raises(OutputError, match="cannot be written: Permission denied"):
        ensure_directory(tmp_path / "new")
