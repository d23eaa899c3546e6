"""The annotator's video API (serve/videos.py) with the weight-free classic tracker on a synthetic
clip whose true masks are known: click, track, correct on a later frame, add an object, re-track,
accept, export (DAVIS PNGs, COCO video JSON); a session read back after a restart; a track
stopped part-way; typed errors."""
from __future__ import annotations

import io
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
from fastapi.testclient import TestClient

import segany
from conftest import torch_threads
from segany.errors import NotFoundError, PromptError, UnsupportedOperationError, VideoError
from segany.masks import decode_rle
from segany.serve import create_app
from segany.serve.videos import VideoLibrary, VideoPromptRequest

H, W, N = 60, 80, 10
SIDE, SPEED = 16, 3  # the red square: 16 px, 3 px a frame to the right
DISC = (58, 42, 8)  # the blue disc: centre x, y and radius; it does not move


def square_mask(t: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    x0 = 8 + SPEED * t
    mask[14:14 + SIDE, x0:x0 + SIDE] = True
    return mask


def disc_mask() -> np.ndarray:
    y, x = np.mgrid[:H, :W]
    return (x - DISC[0]) ** 2 + (y - DISC[1]) ** 2 <= DISC[2] ** 2


def write_clip(folder: Path, n: int = N) -> list[np.ndarray]:
    """``n`` PNG frames of a textured background with a red square moving right and a still blue
    disc (both textured, for the optical flow to follow); the frames."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    background = np.repeat(np.repeat(rng.integers(70, 150, (H // 4, W // 4, 3)), 4, 0), 4, 1)
    spots = rng.integers(-25, 25, (H, W, 3))
    frames = []
    for t in range(n):
        frame = background.copy()
        frame[square_mask(t)] = (np.array([210, 40, 40]) + spots)[square_mask(t)]
        frame[disc_mask()] = (np.array([40, 60, 210]) + spots)[disc_mask()]
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
        Image.fromarray(frames[-1]).save(folder / f"{t:05d}.png")
    return frames


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def masks_of(answer: dict) -> dict[int, np.ndarray]:
    return {o["obj_id"]: decode_rle(o["rle"]) for o in answer["objects"]}


@pytest.fixture(scope="module")
def classic():
    return segany.load_model("classic")


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    images, videos = tmp_path / "images", tmp_path / "videos"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "a.png")
    write_clip(videos / "clip")
    (videos / "notes").mkdir()  # a folder without frames: not a video
    (videos / "notes" / "readme.txt").write_text("no frames here")
    return images, videos


def client_for(folders: tuple[Path, Path], model) -> TestClient:
    return TestClient(create_app(folders[0], model, folders[0] / "coco.json", videos=folders[1]),
                      base_url="http://localhost")


@pytest.fixture()
def client(folders, classic) -> TestClient:
    return client_for(folders, classic)


def clip_id(client: TestClient) -> str:
    return next(v["id"] for v in client.get("/api/videos").json() if v["name"] == "clip")


def track(client: TestClient, vid: str) -> dict:
    started = client.post(f"/api/videos/{vid}/track")
    assert started.status_code == 202, started.text
    deadline = time.monotonic() + 30
    while (job := client.get(f"/api/videos/{vid}/track").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.02)
    return job


def frame_masks(client: TestClient, vid: str, t: int) -> dict[int, np.ndarray]:
    return masks_of(client.get(f"/api/videos/{vid}/frames/{t}/masks").json())


def test_videos_are_listed_with_their_frames(client, folders) -> None:
    videos = client.get("/api/videos").json()
    assert [v["name"] for v in videos] == ["clip"]  # neither notes/ nor the tracks folder
    vid = videos[0]["id"]
    detail = client.get(f"/api/videos/{vid}").json()
    assert (detail["frames"], detail["width"], detail["height"], detail["kind"]) == (N, W, H, "frames")
    assert detail["prompts"] == [] and detail["track"]["status"] == "idle" and not detail["tracked"]
    frame = client.get(f"/api/videos/{vid}/frames/3")
    assert frame.headers["content-type"] == "image/png"
    assert frame.content == (folders[1] / "clip" / "00003.png").read_bytes()
    assert client.get(f"/api/videos/{vid}/frames/3/masks").json() == {"frame": 3, "objects": []}


def test_a_video_file_is_served_frame_by_frame(folders, classic) -> None:
    av = pytest.importorskip("av", reason="PyAV (segany[video]) is not installed")
    frames = write_clip(folders[1].parent / "frames", n=4)
    with av.open(str(folders[1] / "moving.mp4"), mode="w") as container:
        stream = container.add_stream("libx264", rate=4)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    client = client_for(folders, classic)
    video = next(v for v in client.get("/api/videos").json() if v["name"] == "moving.mp4")
    assert video["kind"] == "file" and client.get(f"/api/videos/{video['id']}").json()["frames"] == 4
    answer = client.get(f"/api/videos/{video['id']}/frames/2")
    assert answer.headers["content-type"] == "image/jpeg"
    decoded = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"), dtype=np.int16)
    assert np.abs(decoded - frames[2]).mean() < 12  # the frame, through H.264 and JPEG


def test_click_track_correct_add_retrack_accept_export(client, folders) -> None:
    vid = clip_id(client)
    clicked = client.post(f"/api/videos/{vid}/prompts", json={"frame": 0, "obj_id": 1, "points": [[16, 22]], "labels": [1]})
    assert clicked.status_code == 200, clicked.text
    assert iou(masks_of(clicked.json())[1], square_mask(0)) > 0.8

    assert track(client, vid) == {"status": "done", "done": N, "total": N, "error": None}
    tracked = {t: frame_masks(client, vid, t) for t in range(N)}
    assert all(iou(tracked[t][1], square_mask(t)) > 0.6 for t in range(N)), \
        [round(iou(tracked[t][1], square_mask(t)), 2) for t in range(N)]
    assert client.get(f"/api/videos/{vid}").json()["tracked"] is True

    # a correction on a later frame: a box around the square there; the tracked mask is replaced
    x0 = 8 + SPEED * 7
    box = [x0, 14, x0 + SIDE - 1, 14 + SIDE - 1]
    corrected = client.post(f"/api/videos/{vid}/prompts", json={"frame": 7, "obj_id": 1, "box": box})
    assert corrected.status_code == 200, corrected.text
    correction = masks_of(corrected.json())[1]
    assert iou(correction, square_mask(7)) > 0.8
    # a second object, started after tracking: the tracker's state is rebuilt from every prompt
    added = client.post(f"/api/videos/{vid}/prompts", json={"frame": 4, "obj_id": 2, "points": [[58, 42]], "labels": [1]})
    assert set(masks_of(added.json())) == {1, 2} and iou(masks_of(added.json())[2], disc_mask()) > 0.7
    detail = client.get(f"/api/videos/{vid}").json()
    assert not detail["tracked"] and detail["object_ids"] == [1, 2]
    assert [(p["obj_id"], p["frame"]) for p in detail["prompts"]] == [(1, 0), (2, 4), (1, 7)]
    refused = client.post(f"/api/videos/{vid}/accept")
    assert refused.status_code == 422 and "Track first" in refused.json()["detail"]

    assert track(client, vid)["status"] == "done"
    retracked = {t: frame_masks(client, vid, t) for t in range(N)}
    assert np.array_equal(retracked[7][1], correction)  # the prompted frame keeps its correction
    assert all(iou(retracked[t][2], disc_mask()) > 0.7 for t in range(N))  # tracked backward from frame 4 too
    assert all(iou(retracked[t][1], square_mask(t)) > 0.6 for t in range(N))

    accepted = client.post(f"/api/videos/{vid}/accept")
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["accepted_objects"] == [1, 2] and accepted.json()["accepted"] is True
    document = client.get(f"/api/videos/{vid}/export/coco").json()
    assert document["videos"][0]["length"] == N and document["videos"][0]["file_names"][3] == "00003.png"
    by_obj = {a["obj_id"]: a for a in document["annotations"]}
    for t in range(N):
        for obj_id in (1, 2):
            assert np.array_equal(decode_rle(by_obj[obj_id]["segmentations"][t]), retracked[t][obj_id])
            assert by_obj[obj_id]["areas"][t] == retracked[t][obj_id].sum()
    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/api/videos/{vid}/export/davis").content))
    assert sorted(archive.namelist()) == [f"clip/{t:05d}.png" for t in range(N)]
    with Image.open(archive.open("clip/00007.png")) as png:
        assert png.mode == "P"
        labels = np.asarray(png)
    expected = np.where(retracked[7][1], 1, np.where(retracked[7][2], 2, 0))
    assert np.array_equal(labels, expected)
    assert (folders[1] / ".segany-tracks" / "clip" / "davis" / "00007.png").is_file()
    only = client.post(f"/api/videos/{vid}/accept", json={"obj_ids": [2]})
    assert only.status_code == 200 and only.json()["accepted_objects"] == [2]
    assert [a["obj_id"] for a in client.get(f"/api/videos/{vid}/export/coco").json()["annotations"]] == [2]


def test_removing_a_correction_brings_back_the_tracked_mask(client) -> None:
    vid = clip_id(client)
    client.post(f"/api/videos/{vid}/prompts", json={"frame": 0, "obj_id": 1, "points": [[16, 22]], "labels": [1]})
    track(client, vid)
    before = frame_masks(client, vid, 6)[1]
    # a click on the tracked square: a correction starting from the tracked mask
    corrected = client.post(f"/api/videos/{vid}/prompts", json={"frame": 6, "obj_id": 1, "points": [[31, 21]], "labels": [1]})
    assert corrected.status_code == 200, corrected.text
    assert client.get(f"/api/videos/{vid}").json()["prompts"][1]["seeded"] is True
    assert iou(masks_of(corrected.json())[1], square_mask(6)) > 0.8
    undone = client.delete(f"/api/videos/{vid}/prompts", params={"obj_id": 1, "frame": 6})
    assert undone.status_code == 200, undone.text
    assert np.array_equal(masks_of(undone.json())[1], before)
    assert [p["frame"] for p in client.get(f"/api/videos/{vid}").json()["prompts"]] == [0]
    removed = client.delete(f"/api/videos/{vid}/objects/1")
    assert removed.status_code == 200 and removed.json()["objects"] == []
    assert all(not frame_masks(client, vid, t) for t in range(N))


def test_a_restarted_server_continues_the_session(folders, classic) -> None:
    first = client_for(folders, classic)
    vid = clip_id(first)
    first.post(f"/api/videos/{vid}/prompts", json={"frame": 2, "obj_id": 3, "points": [[23, 22]], "labels": [1]})
    track(first, vid)
    masks = {t: frame_masks(first, vid, t) for t in range(N)}
    again = client_for(folders, classic)
    detail = again.get(f"/api/videos/{vid}").json()
    assert detail["tracked"] and [(p["obj_id"], p["frame"], p["points"]) for p in detail["prompts"]] == [(3, 2, [[23.0, 22.0]])]
    assert all(np.array_equal(frame_masks(again, vid, t)[3], masks[t][3]) for t in range(N))
    assert track(again, vid)["status"] == "done"  # the prompts replayed into a new tracker
    assert all(np.array_equal(frame_masks(again, vid, t)[3], masks[t][3]) for t in range(N))


def test_a_running_track_refuses_clicks_and_can_be_stopped(client) -> None:
    vid = clip_id(client)
    client.post(f"/api/videos/{vid}/prompts", json={"frame": 0, "obj_id": 1, "points": [[16, 22]], "labels": [1]})
    library = client.app.state.videos
    release, reached = threading.Event(), threading.Event()
    propagate = library.tracker.propagate_in_video

    def held(*args, **kwargs):  # the tracker waits after its second frame until released
        for k, out in enumerate(propagate(*args, **kwargs)):
            if k == 2:
                reached.set()
                release.wait(10)
            yield out

    library.tracker.propagate_in_video = held
    assert client.post(f"/api/videos/{vid}/track").status_code == 202
    assert reached.wait(10)
    job = client.get(f"/api/videos/{vid}/track").json()
    assert job["status"] == "running" and job["done"] == 2
    busy = client.post(f"/api/videos/{vid}/prompts", json={"frame": 3, "obj_id": 1, "points": [[20, 20]], "labels": [1]})
    assert busy.status_code == 503 and "being tracked" in busy.json()["detail"]
    assert client.post(f"/api/videos/{vid}/track").status_code == 503
    assert client.delete(f"/api/videos/{vid}/track").status_code == 200
    release.set()
    deadline = time.monotonic() + 10
    while client.get(f"/api/videos/{vid}/track").json()["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert client.get(f"/api/videos/{vid}/track").json()["status"] == "cancelled"
    assert client.get(f"/api/videos/{vid}").json()["tracked"] is False
    assert client.post(f"/api/videos/{vid}/accept").status_code == 422


def test_errors_are_typed(client, folders, tiny_random_sam) -> None:
    vid = clip_id(client)
    click = {"frame": 0, "obj_id": 1, "points": [[16, 22]], "labels": [1]}
    cases = [
        (client.get("/api/videos/0123456789abcdef"), 404, "unknown video"),
        (client.get(f"/api/videos/{vid}/frames/{N}"), 422, f"frame {N} is out of range: video clip has frames 0..{N - 1}"),
        (client.get(f"/api/videos/{vid}/frames/-1/masks"), 422, "out of range"),
        (client.post(f"/api/videos/{vid}/prompts", json={**click, "frame": 99}), 422, "frame 99 is out of range"),
        (client.post(f"/api/videos/{vid}/prompts", json={**click, "points": [[81, 5]]}), 422, "frame 0"),
        (client.post(f"/api/videos/{vid}/prompts", json={**click, "obj_id": 256}), 422, "obj_id"),
        (client.post(f"/api/videos/{vid}/prompts", json={"frame": 0, "obj_id": 1}), 422, "at least one point"),
        (client.post(f"/api/videos/{vid}/track"), 422, "no prompts"),
        (client.delete(f"/api/videos/{vid}/objects/4"), 404, "no object 4"),
        (client.get(f"/api/videos/{vid}/export/coco"), 404, "no accepted tracks"),
    ]
    for answer, status, words in cases:
        assert answer.status_code == status and words in answer.json()["detail"], answer.text
    assert str(folders[1]) not in cases[1][0].json()["detail"]  # no server path in messages
    client.post(f"/api/videos/{vid}/prompts", json=click)
    missing = client.delete(f"/api/videos/{vid}/prompts", params={"obj_id": 1, "frame": 5})
    assert missing.status_code == 404 and "no prompt on frame 5" in missing.json()["detail"]
    unknown = client.post(f"/api/videos/{vid}/accept", json={"obj_ids": [9]})
    assert unknown.status_code == 422  # not tracked yet comes first
    track(client, vid)
    unknown = client.post(f"/api/videos/{vid}/accept", json={"obj_ids": [9]})
    assert unknown.status_code == 404 and "no object 9" in unknown.json()["detail"]

    (folders[1] / "broken.mp4").write_bytes(b"not a video")
    (folders[1] / ".segany-tracks" / "clip" / "session.json").write_text("{not json")
    reopened = client_for(folders, segany.load_model("classic"))
    broken = next(v["id"] for v in reopened.get("/api/videos").json() if v["name"] == "broken.mp4")
    answer = reopened.get(f"/api/videos/{broken}")
    assert answer.status_code == 422 and "broken.mp4" in answer.json()["detail"]
    assert str(folders[1]) not in answer.json()["detail"]
    answer = reopened.get(f"/api/videos/{vid}")
    assert answer.status_code == 422 and "session of video clip (session.json) cannot be read" in answer.json()["detail"]

    plain = TestClient(create_app(folders[0], tiny_random_sam, folders[0] / "coco.json"), base_url="http://localhost")
    answer = plain.get("/api/videos")
    assert answer.status_code == 409 and "--videos" in answer.json()["detail"]
    with pytest.raises(UnsupportedOperationError, match="does not track"):
        create_app(folders[0], tiny_random_sam, folders[0] / "coco.json", videos=folders[1])
    with pytest.raises(VideoError, match="does not exist"):
        create_app(folders[0], segany.load_model("classic"), folders[0] / "coco.json", videos=folders[1] / "none")


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """One torch thread: tracking runs many small ops, and on a loaded 2-core machine two OpenMP
    threads wait for each other (as tests/test_sam2_video.py found: 10x slower under load)."""
    with torch_threads(1):
        yield


def test_sam2_tracks_through_the_same_api(tmp_path: Path, one_thread) -> None:
    """A tiny random SAM 2.1 (its masks mean nothing): a click, a track, a correction that starts
    from the tracked mask (a mask, then clicks), a new object after tracking, a track again; a
    track depends on the prompts only, so tracking again gives the same masks."""
    from test_sam2_predictor import tiny_random_sam2

    images, videos = tmp_path / "images", tmp_path / "videos"
    images.mkdir()
    write_clip(videos / "clip", n=4)
    client = client_for((images, videos), tiny_random_sam2())
    vid = clip_id(client)
    assert client.post(f"/api/videos/{vid}/prompts", json={"frame": 0, "obj_id": 1, "points": [[16, 22]],
                                                             "labels": [1]}).status_code == 200
    assert track(client, vid)["status"] == "done"
    if not frame_masks(client, vid, 2):
        pytest.skip("the random SAM 2 tracked nothing to correct")
    corrected = client.post(f"/api/videos/{vid}/prompts", json={"frame": 2, "obj_id": 1, "points": [[20, 20]], "labels": [0]})
    assert corrected.status_code == 200, corrected.text
    added = client.post(f"/api/videos/{vid}/prompts", json={"frame": 1, "obj_id": 2, "box": [50, 34, 66, 50]})
    assert added.status_code == 200, added.text
    assert [(p["obj_id"], p["frame"], p["seeded"]) for p in client.get(f"/api/videos/{vid}").json()["prompts"]] == \
        [(1, 0, False), (2, 1, False), (1, 2, True)]
    assert track(client, vid) == {"status": "done", "done": 4 + 2, "total": 4 + 2, "error": None}
    first = {t: frame_masks(client, vid, t) for t in range(4)}
    assert track(client, vid)["status"] == "done"
    for t in range(4):
        again = frame_masks(client, vid, t)
        assert set(again) == set(first[t]) and all(np.array_equal(again[o], first[t][o]) for o in again)
    assert client.post(f"/api/videos/{vid}/accept").status_code == 200


def test_segany_serve_takes_videos_and_tracks(folders, tmp_path: Path, monkeypatch, capsys) -> None:
    from segany.cli import main

    served = []

    class Server:
        def __init__(self, app, host, port):
            served.append(app)

        def run(self) -> None:
            pass

    monkeypatch.setattr("segany.serve.server.make_server", Server)
    images, videos = folders
    assert main(["serve", str(images), "--model", "classic", "--videos", str(videos), "--tracks", str(tmp_path / "t")]) == 0
    library = served[0].state.videos
    assert library.tracks == (tmp_path / "t").resolve() and [e.name for e in library.entries.values()] == ["clip"]
    assert "1 video(s) under" in capsys.readouterr().err
    assert main(["serve", str(images), "--model", "classic", "--videos", str(tmp_path / "none")]) == 2
    assert "videos folder" in capsys.readouterr().err


def test_only_the_last_sessions_stay_open(folders, classic) -> None:

    write_clip(folders[1] / "other", n=3)
    library = VideoLibrary(folders[1], classic, max_sessions=1)
    ids = {e.name: e.id for e in library.entries.values()}
    click = VideoPromptRequest(frame=0, obj_id=1, points=[[16, 22]], labels=[1])
    first = library.prompt(ids["clip"], click).future.result()
    library.session(ids["other"])
    assert list(library.sessions) == [ids["other"]]  # clip's session (and its tracker state) was let go
    assert library.detail(ids["clip"])["object_ids"] == [1]  # read back from its folder
    again = library.prompt(ids["clip"], click).future.result()  # a new tracker state, the prompts replayed
    assert again == first
    gate = threading.Event()
    library.lane.job(lambda check: gate.wait(10))  # the lane is busy: clip's next click waits
    queued = library.prompt(ids["clip"], click)
    library.session(ids["other"])
    assert list(library.sessions) == [ids["clip"], ids["other"]]  # not let go with work queued
    gate.set()
    assert queued.future.result() == first
    library.close()


def test_a_track_takes_the_prompts_queued_before_it(client) -> None:
    vid = clip_id(client)
    library = client.app.state.videos
    client.post(f"/api/videos/{vid}/prompts", json={"frame": 0, "obj_id": 1, "points": [[16, 22]], "labels": [1]})
    gate = threading.Event()
    library.lane.job(lambda check: gate.wait(10))  # the lane is busy: what follows waits in order
    session = library.session(vid)
    queued = library.prompt(vid, VideoPromptRequest(frame=3, obj_id=2, points=[[58, 42]], labels=[1]))
    assert client.post(f"/api/videos/{vid}/track").status_code == 202
    gate.set()
    queued.future.result(10)
    session.job.ticket.future.result(30)
    assert client.get(f"/api/videos/{vid}/track").json()["total"] == N + 4  # backward from frame 3 too
    assert all(iou(frame_masks(client, vid, t)[2], disc_mask()) > 0.7 for t in range(N))
    # and an accept queued after a prompt finds the tracks out of date
    gate = threading.Event()
    library.lane.job(lambda check: gate.wait(10))
    library.prompt(vid, VideoPromptRequest(frame=5, obj_id=2, points=[[58, 42]], labels=[1]))
    accepting = library.accept(vid, None)
    gate.set()
    with pytest.raises(PromptError, match="Track first"):
        accepting.future.result(10)


def test_a_second_removal_queued_behind_the_first_is_a_404(client) -> None:
    vid = clip_id(client)
    library = client.app.state.videos
    client.post(f"/api/videos/{vid}/prompts", json={"frame": 2, "obj_id": 1, "points": [[16, 22]], "labels": [1]})
    gate = threading.Event()
    library.lane.job(lambda check: gate.wait(10))
    first, second = library.clear(vid, 1, 2), library.clear(vid, 1, 2)
    gate.set()
    assert first.future.result(10)["objects"] == []
    with pytest.raises(NotFoundError, match="no object 1"):
        second.future.result(10)
