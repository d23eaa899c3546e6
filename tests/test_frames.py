"""Frame sources: folders, video files (PyAV) and arrays, decoded on demand, typed errors."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segany.data.frames import ArrayFrames, FolderFrames, VideoFileFrames, open_frames
from segany.errors import VideoError


def _frames(n: int = 12, h: int = 48, w: int = 64) -> list[np.ndarray]:
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h)], axis=-1).astype(np.uint8)
    return [np.roll(base, 3 * i, axis=1) for i in range(n)]


def test_folder_is_read_in_integer_order_and_decoded_on_demand(tmp_path):
    frames = _frames(11)
    for i, f in enumerate(frames):  # 0.png, 1.png ... 10.png: name order would put 10 before 2
        Image.fromarray(f).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    source = open_frames(tmp_path, cache=2)
    assert isinstance(source, FolderFrames) and len(source) == 11 and source.size == (48, 64)
    assert all(np.array_equal(source[i], frames[i]) for i in (10, 2, 0, 10))
    assert len(source._cache) == 2
    with pytest.raises(ValueError):
        source[3][0, 0, 0] = 1  # frames are read-only views of the cache


def test_video_file_random_access_equals_sequential(tmp_path):
    av = pytest.importorskip("av")
    frames = _frames(20)
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt, stream.options = 64, 48, "yuv420p", {"g": "5"}
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    forward = open_frames(path)
    assert isinstance(forward, VideoFileFrames) and len(forward) == 20 and forward.size == (48, 64)
    sequential = [forward[i].copy() for i in range(20)]
    backward = open_frames(path, cache=1)
    assert all(np.array_equal(backward[i], sequential[i]) for i in (19, 3, 4, 12, 0, 19))
    assert np.abs(sequential[7].astype(int) - frames[7]).mean() < 12  # lossy, but the same picture


def test_arrays_and_errors(tmp_path):
    frames = _frames(3)
    assert np.array_equal(open_frames(np.stack(frames))[2], frames[2])
    assert isinstance(open_frames(frames), ArrayFrames)
    source = open_frames(frames)
    for bad in (3, -1, 1.5, True):
        with pytest.raises(VideoError, match="frame index"):
            source[bad]
    with pytest.raises(VideoError, match="same|video is"):
        open_frames([frames[0], frames[1][:10]])[1]
    with pytest.raises(VideoError, match="uint8"):
        open_frames([f.astype(np.float32) for f in frames])
    with pytest.raises(VideoError, match="does not exist"):
        open_frames(tmp_path / "missing.mp4")
    with pytest.raises(VideoError, match="no frames"):
        open_frames(tmp_path)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(VideoError, match="cannot be read"):
        open_frames(tmp_path / "broken.mp4")
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "00000.jpg").write_bytes(b"garbage")
    with pytest.raises(VideoError, match="cannot be read"):
        open_frames(tmp_path / "frames")
    with pytest.raises(VideoError, match="a video is"):
        open_frames(42)
    (tmp_path / "big").mkdir()
    Image.fromarray(frames[0]).save(tmp_path / "big" / "00000.png")
    with pytest.raises(VideoError, match="limit of 100 pixels"):
        open_frames(tmp_path / "big", max_pixels=100)
