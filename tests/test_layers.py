"""The package's layer rules (``[tool.importlinter]`` in pyproject.toml) hold: clients above engines
above models, engines and clients independent of each other, no import circles."""
from __future__ import annotations

from pathlib import Path

import pytest

lint = pytest.importorskip("importlinter.cli", reason="import-linter (the dev extra) is not installed")

REPO = Path(__file__).resolve().parents[1]


def test_layer_contracts_are_kept(monkeypatch, capsys) -> None:
    monkeypatch.chdir(REPO)
    code = lint.lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True, no_logo=True)
    assert code == 0, capsys.readouterr().out


def test_a_broken_rule_is_reported(tmp_path: Path, monkeypatch, capsys) -> None:
    """The checker sees real imports: the predictor does import the models, so forbidding it fails."""
    config = tmp_path / "contracts.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "segany"\n\n[[tool.importlinter.contracts]]\n'
        'name = "predict without models"\ntype = "forbidden"\n'
        'source_modules = ["segany.predict"]\nforbidden_modules = ["segany.models"]\n'
    )
    monkeypatch.chdir(REPO)
    assert lint.lint_imports(config_filename=str(config), no_cache=True, no_logo=True) == 1
    assert "BROKEN" in capsys.readouterr().out
