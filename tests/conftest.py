"""Shared fixtures. ``SEGANY_SHARED`` names the shared data folder (golden outputs, datasets);
it defaults to ``../shared`` beside the repository, and tests needing it skip where it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEGANY_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"

torch.set_num_threads(min(2, os.cpu_count() or 1))


def require_golden() -> Path:
    if not (GOLDEN / "tiny_sam.pth").exists():
        pytest.skip(f"golden data not found at {GOLDEN} (set SEGANY_SHARED to the shared folder)")
    return GOLDEN


@pytest.fixture(scope="session")
def golden() -> Path:
    return require_golden()


@pytest.fixture(scope="session")
def tiny_sam(golden: Path):
    from segany import load_model

    return load_model(golden / "tiny_sam.json", checkpoint=golden / "tiny_sam.pth")


@pytest.fixture(scope="session")
def tiny_mobilesam_checkpoint(golden: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full MobileSAM state dict: TinyViT encoder file + tiny SAM's prompt encoder/decoder."""
    state = torch.load(golden / "tiny_mobilesam_image_encoder.pth", weights_only=True)
    shared = torch.load(golden / "tiny_sam.pth", weights_only=True)
    state.update({k: v for k, v in shared.items() if not k.startswith("image_encoder.")})
    path = tmp_path_factory.mktemp("ckpt") / "tiny_mobilesam.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def tiny_mobilesam(golden: Path, tiny_mobilesam_checkpoint: Path):
    from segany import load_model

    return load_model(golden / "tiny_mobilesam.json", checkpoint=tiny_mobilesam_checkpoint)


@pytest.fixture(scope="session")
def photo(golden: Path) -> np.ndarray:
    return np.load(golden / "sam_photo_point_multimask.npz")["image"]


@pytest.fixture(scope="session")
def small_image(golden: Path) -> np.ndarray:
    return np.load(golden / "sam_small_point_multimask.npz")["image"]


@pytest.fixture
def claimed_size_png():
    """Write a tiny valid PNG whose header claims ``width`` x ``height`` (IHDR patched, CRC fixed)."""
    import io
    import struct
    import zlib

    from PIL import Image

    def write(path: Path, width: int = 60000, height: int = 60000) -> Path:
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, format="PNG")
        data = bytearray(buffer.getvalue())
        assert data[12:16] == b"IHDR"
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
        path.write_bytes(bytes(data))
        return path

    return write
