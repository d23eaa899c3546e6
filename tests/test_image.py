"""Image reading: every input form becomes HWC RGB uint8; bad files give one clear ImageError."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segany.data.images import load_image
from segany.errors import ImageError
from segany.predict.transforms import ResizeLongestSide, preprocess_shape


def test_exif_orientation_is_applied(tmp_path) -> None:
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :10] = 255  # white band on the left
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    img.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    loaded = load_image(tmp_path / "rotated.jpg")
    assert loaded.shape == (40, 20, 3)
    assert loaded[:10].mean() > 200 and loaded[-10:].mean() < 50  # the band is now on top


@pytest.mark.parametrize(
    "mode, array",
    [
        ("L", np.arange(100, dtype=np.uint8).reshape(10, 10)),
        ("RGBA", np.full((10, 10, 4), 200, dtype=np.uint8)),
        ("I;16", (np.arange(100, dtype=np.uint16) * 600).reshape(10, 10)),
    ],
)
def test_modes_become_rgb_uint8(tmp_path, mode: str, array: np.ndarray) -> None:
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    img = Image.fromarray(array)
    assert img.mode == mode
    img.save(path)
    loaded = load_image(path)
    assert loaded.shape == (10, 10, 3) and loaded.dtype == np.uint8
    if mode == "I;16":
        assert loaded.min() == 0 and loaded.max() == 255  # stretched, not clipped
    if mode == "L":
        assert np.array_equal(loaded[..., 0], array) and np.array_equal(loaded[..., 2], array)


def test_transparent_pixels_composite_on_white(tmp_path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "clear.png")
    assert (load_image(tmp_path / "clear.png") == 255).all()


def test_missing_and_corrupt_files(tmp_path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ImageError, match="cannot be read"):
        load_image(tmp_path / "bad.jpg")
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(tmp_path / "cut.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "cut.png").read_bytes()[:60])
    with pytest.raises(ImageError):
        load_image(tmp_path / "cut.png")


def test_resize_geometry_matches_official_rounding() -> None:
    assert preprocess_shape(37, 53, 1024) == (715, 1024)
    assert preprocess_shape(480, 640, 1024) == (768, 1024)
    transform = ResizeLongestSide(1024)
    coords = transform.apply_coords(np.array([[53.0, 37.0]]), (37, 53))
    assert np.allclose(coords, [[1024.0, 37 * 715 / 37]])
    boxes = transform.apply_boxes(np.array([0.0, 0.0, 53.0, 37.0]), (37, 53))
    assert np.allclose(boxes, [[0, 0, 1024, 715]])


def test_oversized_header_is_refused_before_decoding(tmp_path, monkeypatch, claimed_size_png) -> None:
    import warnings

    from segany.data import images as image_module
    from segany.errors import ImageTooLargeError

    bomb = claimed_size_png(tmp_path / "bomb.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        with pytest.raises(ImageTooLargeError, match=r"bomb.png is 60000x60000 \(3,600,000,000 pixels\), over the limit "
                                                     r"of 268,435,456 pixels: raise it with --max-pixels"):
            load_image(bomb)
        monkeypatch.setattr(image_module, "available_memory", lambda: 8 << 30)
        with pytest.raises(ImageTooLargeError, match=r"needs about 36.9 GiB, only 8.0 GiB of memory is available"):
            load_image(bomb, max_pixels=None)
    assert image_module.DEFAULT_MAX_PIXELS == 1 << 28


def test_pixel_limit_is_per_call_not_pillows(tmp_path, monkeypatch) -> None:
    from segany.errors import ImageTooLargeError

    Image.fromarray(np.full((100, 100, 3), 7, np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ImageTooLargeError, match="100x100"):
        load_image(tmp_path / "a.png", max_pixels=9999)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a process with a strict Pillow limit of its own
    assert load_image(tmp_path / "a.png").shape == (100, 100, 3)  # over 2x Pillow's limit, under segany's
    assert load_image(tmp_path / "a.png", max_pixels=None)[0, 0, 0] == 7
    assert Image.MAX_IMAGE_PIXELS == 1000  # left as it was
