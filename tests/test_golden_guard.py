"""A golden test that finds nothing to compare must fail, not pass; without the shared folder it skips."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import require_golden
from test_parity import _cases, _check


def _marks(param) -> list[str]:
    return [mark.name for mark in getattr(param, "marks", ())]


def test_missing_shared_folder_skips(tmp_path: Path) -> None:
    (param,) = _cases("sam", shared=tmp_path / "absent")
    assert "skip" in _marks(param)
    with pytest.raises(pytest.skip.Exception):
        require_golden(tmp_path / "absent")


@pytest.mark.parametrize("index", [None, {"sam": []}, {"mobilesam": [{"file": "x.npz"}]}])
def test_shared_folder_without_cases_fails(tmp_path: Path, index: dict | None) -> None:
    golden = tmp_path / "golden"
    golden.mkdir()
    if index is not None:
        (golden / "cases.json").write_text(json.dumps(index))
    (param,) = _cases("sam", shared=tmp_path)
    assert _marks(param) == [] and param.values == (None,)
    with pytest.raises(pytest.fail.Exception, match="no golden predictor cases"):
        _check(None, golden, param.values[0])


def test_shared_folder_without_golden_files_fails(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="no golden data"):
        require_golden(tmp_path)


def test_cases_are_listed_when_present(tmp_path: Path) -> None:
    (tmp_path / "golden").mkdir()
    (tmp_path / "golden" / "cases.json").write_text(json.dumps({"sam": [{"file": "a.npz"}, {"file": "b.npz"}]}))
    assert _cases("sam", shared=tmp_path) == ["a.npz", "b.npz"]
