"""Shared fixtures. ``SEGANY_SHARED`` names the shared data folder (golden outputs, datasets);
it defaults to ``../shared`` beside the repository. Tests needing it skip where the folder is
absent, and fail where it exists without the golden files. Tests that need no golden numbers use
the tiny random models (``tiny_random_sam``, ``tiny_random_mobilesam``; see ``tiny_models.py``)."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEGANY_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"

pytest_plugins = ["browser"]  # the annotator-in-Chromium fixtures: server, page

torch.set_num_threads(min(2, os.cpu_count() or 1))


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` inside the block, the previous number restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def require_golden(shared: Path | None = None) -> Path:
    """The golden folder; skips when the shared folder is absent, fails when it lacks the golden files."""
    shared = SHARED if shared is None else shared
    golden = shared / "golden"
    if not shared.exists():
        pytest.skip(f"shared folder not found at {shared} (set SEGANY_SHARED to the shared folder)")
    if not (golden / "tiny_sam.pth").exists():
        pytest.fail(f"the shared folder {shared} exists but has no golden data ({golden / 'tiny_sam.pth'} is missing)")
    return golden


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
def tiny_random_sam():
    """A seeded tiny SAM (ViT encoder, 128 px input, 32 channels): no shared folder needed."""
    from tiny_models import tiny_random_model

    return tiny_random_model("sam")


@pytest.fixture(scope="session")
def tiny_random_mobilesam():
    """A seeded tiny MobileSAM (TinyViT encoder, 128 px input, 32 channels)."""
    from tiny_models import tiny_random_model

    return tiny_random_model("mobilesam")


@pytest.fixture(scope="session")
def tiny_model_files(tiny_random_sam, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``tiny_random_sam`` saved as (``config.json``, ``model.pth``): for ``--model`` / ``--checkpoint``."""
    from tiny_models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny_model"), tiny_random_sam)


@pytest.fixture(scope="session")
def random_sam_1024():
    """SAM's real geometry and decoder (1024 px, 64x64x256 embedding, 8-head decoder) behind a
    tiny random encoder: for tests of the decoder at its true size."""
    from segany.models.config import SamConfig, ViTConfig
    from tiny_models import tiny_random_model

    return tiny_random_model(config=SamConfig(name="random_sam_1024", encoder=ViTConfig(32, 2, 2, (1,))))


@pytest.fixture(scope="session")
def synthetic_small() -> np.ndarray:
    """A 37x53 RGB image with structure, made here (no shared folder needed)."""
    from tiny_models import synthetic_image

    return synthetic_image(37, 53)


@pytest.fixture(scope="session")
def photo(golden: Path) -> np.ndarray:
    return np.load(golden / "sam_photo_point_multimask.npz")["image"]


@pytest.fixture(scope="session")
def small_image(golden: Path) -> np.ndarray:
    return np.load(golden / "sam_small_point_multimask.npz")["image"]


# -- SAM 2.1: the golden tiny checkpoint (official YAML + xz-compressed official .pt) and a random tiny one


@pytest.fixture(scope="session")
def sam2_dir(golden: Path) -> Path:
    return golden / "sam2"


@pytest.fixture(scope="session")
def tiny_sam2_pt(sam2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The golden tiny SAM 2.1 checkpoint, decompressed once for the session."""
    import lzma
    import shutil

    path = tmp_path_factory.mktemp("sam2pred") / "tiny_sam2.1.pt"
    with lzma.open(sam2_dir / "tiny_sam2.1.pt.xz") as src, path.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


@pytest.fixture(scope="session")
def golden_sam2(sam2_dir: Path, tiny_sam2_pt: Path):
    from segany import load_model

    return load_model(sam2_dir / "sam2.1_hiera_golden_tiny.yaml", checkpoint=tiny_sam2_pt)


@pytest.fixture(scope="session")
def sam2_images(sam2_dir: Path) -> dict[str, np.ndarray]:
    with np.load(sam2_dir / "images.npz") as data:
        return {name: data[name] for name in ("photo", "small", "wide")}


@pytest.fixture(scope="session")
def tiny_sam2_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A seeded random tiny SAM 2.1 as (official YAML, ``{"model": state_dict}`` .pt): no shared folder needed."""
    from tiny_models import save_tiny_sam2

    return save_tiny_sam2(tmp_path_factory.mktemp("tiny_sam2"))


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
