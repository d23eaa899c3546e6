"""glibc malloc tuning: applied once on Linux, left alone when the user chose."""
import os
import sys

import pytest

from segany.predict import allocator


@pytest.fixture
def fresh_state(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(allocator, "_state", {})
    for name in [k for k in os.environ if k.startswith("MALLOC_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def test_user_choice_is_respected(fresh_state: pytest.MonkeyPatch) -> None:
    fresh_state.setenv("SEGANY_MALLOC", "default")
    assert allocator.tune_malloc() is False
    fresh_state.delenv("SEGANY_MALLOC")
    assert allocator.tune_malloc() is False  # decided once per process


def test_own_malloc_settings_are_respected(fresh_state: pytest.MonkeyPatch) -> None:
    fresh_state.setenv("MALLOC_ARENA_MAX", "2")
    assert allocator.tune_malloc() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_glibc_thresholds_are_set(fresh_state: pytest.MonkeyPatch) -> None:
    fresh_state.delenv("SEGANY_MALLOC", raising=False)
    assert allocator.tune_malloc() is True
    assert allocator.tune_malloc() is True
