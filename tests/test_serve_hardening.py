"""The annotation server against hostile pages, overload, odd COCO files and a changing disk
(issue 10, items 1, 3, 5-9): each test fails on the server before these fixes."""
from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
from fastapi.testclient import TestClient  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402

from segany.masks import decode_rle, encode_rle  # noqa: E402
from segany.predict.predictor import SamPredictor as Predictor  # noqa: E402
from segany.serve import create_app  # noqa: E402
from segany.serve.store import AnnotationStore  # noqa: E402


def local(app) -> TestClient:
    return TestClient(app, base_url="http://localhost")


def _rle(height: int, width: int, box: tuple[int, int, int, int]) -> dict:
    mask = np.zeros((height, width), bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return encode_rle(mask)


@pytest.fixture()
def folder(tmp_path: Path, synthetic_small: np.ndarray) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    Image.fromarray(synthetic_small).save(root / "cat.png")  # 53 x 37
    Image.fromarray(synthetic_small[::-1].copy()).save(root / "dog.png")
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def _ids(client: TestClient) -> dict[str, str]:
    return {i["file_name"]: i["id"] for i in client.get("/api/images").json()}


# -- item 5: Host header and cross-site requests ---------------------------------------------


def test_requests_for_another_host_are_refused(folder: Path, tiny_random_sam, tmp_path: Path) -> None:
    app = create_app(folder, tiny_random_sam, tmp_path / "coco.json")
    good = local(app)
    image = _ids(good)["cat.png"]
    body = {"category": "x", "rle": _rle(37, 53, (1, 1, 5, 5))}
    rebound = TestClient(app, base_url="http://attacker.example")
    assert rebound.get("/api/export/coco").status_code == 400
    assert rebound.post(f"/api/images/{image}/annotations", json=body).status_code == 400
    assert not (tmp_path / "coco.json").exists()  # nothing was created
    assert good.get("/api/export/coco").status_code == 200
    assert TestClient(app, base_url="http://127.0.0.1:8000").get("/api/info").status_code == 200
    named = local(create_app(folder, tiny_random_sam, tmp_path / "c2.json", allowed_hosts=["box.lan"]))
    assert named.get("/api/info").status_code == 400


@pytest.mark.parametrize("headers", [{"Origin": "http://attacker.example"}, {"Sec-Fetch-Site": "cross-site"},
                                     {"Origin": "null"}, {"Origin": "http://localhost:9999"}])
def test_cross_site_posts_are_refused_and_start_no_work(folder: Path, tiny_random_sam, tmp_path: Path, headers) -> None:
    app = create_app(folder, tiny_random_sam, tmp_path / "coco.json")
    client = local(app)
    image = _ids(client)["cat.png"]
    for path in ("embedding", "everything", "embedding?wait=true"):
        response = client.post(f"/api/images/{image}/{path}", headers=headers)
        assert response.status_code == 403 and "cross-site request refused" in response.json()["detail"]
    assert app.state.service.embeddings.computed == 0 and app.state.service.proposals.pending == 0
    same = client.post(f"/api/images/{image}/embedding", params={"wait": True},
                       headers={"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200  # the page's own requests pass


# -- item 6: overload ----------------------------------------------------------------------------


def _block(lane) -> threading.Event:
    """Occupy ``lane`` with a job that runs until the returned event is set (or it is cancelled)."""
    release = threading.Event()
    started = threading.Event()

    def hold(check) -> None:
        started.set()
        while not release.wait(0.01):
            check()

    lane.job(hold)
    assert started.wait(5)
    return release


def test_full_queues_answer_503_with_retry_after(folder: Path, tiny_random_sam, tmp_path: Path) -> None:
    app = create_app(folder, tiny_random_sam, tmp_path / "coco.json", max_queue=1, max_everything_queue=1)
    client, service = local(app), app.state.service
    image = _ids(client)["cat.png"]
    client.post(f"/api/images/{image}/embedding", params={"wait": True})
    release = [_block(service.proposals), _block(service.decoder), _block(service.encoder)]
    try:
        for path, body in [("everything", {"points_per_side": 4}), ("predict", {"points": [[5, 5]], "labels": [1]})]:
            response = client.post(f"/api/images/{image}/{path}", json=body)
            assert response.status_code == 503, path
            assert response.headers["retry-after"] == "1" and "busy" in response.json()["detail"]
        other = _ids(client)["dog.png"]
        assert client.post(f"/api/images/{other}/embedding", params={"wait": True}).status_code == 503
    finally:
        for event in release:
            event.set()
    assert client.post(f"/api/images/{image}/predict", json={"points": [[5, 5]], "labels": [1]}).status_code == 200


def test_expensive_options_are_capped(folder: Path, tiny_random_sam, tmp_path: Path) -> None:
    client = local(create_app(folder, tiny_random_sam, tmp_path / "coco.json", max_points_per_side=8))
    response = client.post(f"/api/images/{_ids(client)['cat.png']}/everything", json={"points_per_side": 16})
    assert response.status_code == 422 and "at most 8" in response.json()["detail"]


async def _asgi_post(app, path: str, body: bytes, gone: asyncio.Event) -> list[dict]:
    """POST through the ASGI interface; the client disconnects once ``gone`` is set."""
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        if messages:
            return messages.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    path, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": [(b"host", b"localhost"), (b"content-type", b"application/json")],
             "client": ("127.0.0.1", 1), "server": ("localhost", 80)}
    await app(scope, receive, send)
    return sent


def test_work_of_a_client_that_left_is_dropped(folder: Path, tiny_random_sam, tmp_path: Path, monkeypatch) -> None:
    app = create_app(folder, tiny_random_sam, tmp_path / "coco.json")
    service = app.state.service
    image = _ids(local(app))["cat.png"]
    loads = []
    original = service.catalogue.load
    monkeypatch.setattr(service.catalogue, "load", lambda id_: loads.append(id_) or original(id_))
    release = [_block(service.proposals), _block(service.encoder)]

    async def scenario() -> list[list[dict]]:
        gone = asyncio.Event()
        requests = [asyncio.ensure_future(_asgi_post(app, f"/api/images/{image}/{path}", body, gone)) for path, body in
                    [("everything", b'{"points_per_side": 4}'), ("predict", b'{"points": [[5, 5]], "labels": [1]}')]]
        while service.proposals.pending < 2 or service.encoder.pending < 2:
            await asyncio.sleep(0.01)
        gone.set()
        return await asyncio.wait_for(asyncio.gather(*requests), 10)

    answers = asyncio.run(scenario())
    assert [a[0]["status"] for a in answers] == [499, 499]
    assert service.proposals.pending == 1 and service.encoder.pending == 1  # only the blockers are left
    for event in release:
        event.set()
    time.sleep(0.2)
    assert loads == [] and service.embedding_status(image) == ("absent", None)


def test_everything_stops_between_batches_when_cancelled(folder: Path, tiny_random_sam, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("segany.amg.generator")
    from segany.serve.lanes import Cancelled

    service = create_app(folder, tiny_random_sam, tmp_path / "coco.json").state.service
    image = _ids(local(create_app(folder, tiny_random_sam, tmp_path / "c.json")))["cat.png"]
    batches, tickets = [], []
    original = Predictor.predict_low_res_torch

    def counted(self, *args, **kwargs):
        batches.append(1)
        tickets[0].cancel()  # the client leaves during the first batch
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict_low_res_torch", counted)
    tickets.append(service.start_everything(image, points_per_side=16))  # 256 points: 4 batches of 64
    with pytest.raises(Cancelled):
        tickets[0].future.result(30)
    assert len(batches) == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigterm_stops_within_seconds_cancelling_queued_work(folder: Path, tiny_random_sam, tmp_path: Path,
                                                             monkeypatch) -> None:
    pytest.importorskip("segany.amg.generator")
    import httpx

    from segany.serve.server import make_server

    original = Predictor.predict_low_res_torch

    def slow(self, *args, **kwargs):  # 64 decoder batches of 0.2 s: a 13 s "everything"
        time.sleep(0.2)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict_low_res_torch", slow)
    app = create_app(folder, tiny_random_sam, tmp_path / "coco.json")
    port = _free_port()
    server = make_server(app, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.02)
    base = f"http://127.0.0.1:{port}"
    image = _ids_http(base)["cat.png"]
    answers: list[int] = []

    def ask(path: str, body: dict) -> None:
        try:
            answers.append(httpx.post(f"{base}/api/images/{image}/{path}", json=body, timeout=60).status_code)
        except httpx.HTTPError:
            answers.append(0)

    askers = [threading.Thread(target=ask, args=("everything", {"points_per_side": 64}), daemon=True)
              for _ in range(3)]
    for asker in askers:
        asker.start()
    while app.state.service.proposals.pending < 3:
        time.sleep(0.02)
    time.sleep(0.3)
    start = time.monotonic()
    server.handle_exit(15, None)  # what SIGTERM calls
    thread.join(30)
    elapsed = time.monotonic() - start
    assert not thread.is_alive() and elapsed < 5, f"took {elapsed:.1f} s to stop"
    for asker in askers:
        asker.join(5)
    assert answers and 200 not in answers


def _ids_http(base: str) -> dict[str, str]:
    import httpx

    return {i["file_name"]: i["id"] for i in httpx.get(f"{base}/api/images").json()}


# -- item 7: polygons and RLE from other tools ----------------------------------------------------


def test_polygon_and_uncompressed_rle_annotations_are_read_and_kept(folder: Path, tiny_random_sam, tmp_path: Path) -> None:
    square = np.zeros((37, 53), np.uint8)
    square[10:20, 30:45] = 1
    uncompressed = {"size": [37, 53], "counts": _uncompressed_counts(square)}
    polygon = [[5.0, 5.0, 20.5, 5.0, 20.5, 25.0, 5.0, 25.0]]
    original = {
        "info": {"description": "from another tool"},
        "images": [{"id": 7, "file_name": "cat.png", "height": 37, "width": 53}],
        "categories": [{"id": 3, "name": "thing"}],
        "annotations": [
            {"id": 11, "image_id": 7, "category_id": 3, "segmentation": polygon, "area": 302.5,
             "bbox": [5.0, 5.0, 15.5, 20.0], "iscrowd": 0, "attributes": {"occluded": False}},
            {"id": 12, "image_id": 7, "category_id": 3, "segmentation": uncompressed, "area": 150,
             "bbox": [30, 10, 15, 10], "iscrowd": 1},
        ],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(original))
    client = local(create_app(folder, tiny_random_sam, path))
    image = _ids(client)["cat.png"]
    response = client.get(f"/api/images/{image}/annotations")
    assert response.status_code == 200
    listed = {a["id"]: a for a in response.json()}
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, 37, 53))).astype(bool)
    assert np.array_equal(decode_rle(listed[11]["segmentation"]), expected)
    assert np.array_equal(decode_rle(listed[12]["segmentation"]), square.astype(bool))
    assert listed[11]["area"] == 302.5 and listed[11]["category"] == "thing"

    assert client.patch("/api/annotations/12", json={"category": "other"}).status_code == 200
    assert client.post(f"/api/images/{image}/annotations",
                       json={"category": "new", "rle": _rle(37, 53, (1, 1, 4, 4))}).status_code == 201
    saved = {a["id"]: a for a in json.loads(path.read_text())["annotations"]}
    assert saved[11] == original["annotations"][0]  # untouched: exactly as in the file
    assert {k: v for k, v in saved[12].items() if k != "category_id"} == \
        {k: v for k, v in original["annotations"][1].items() if k != "category_id"}


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts: run lengths in column-major order, starting with zeros."""
    flat = mask.ravel(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    return ([0] if flat[0] else []) + np.diff(bounds).tolist()


# -- item 8: ids never repeat -------------------------------------------------------------------


def test_annotation_ids_never_repeat_after_a_restart(folder: Path, tiny_random_sam, tmp_path: Path) -> None:
    path = tmp_path / "coco.json"
    client = local(create_app(folder, tiny_random_sam, path))
    image = _ids(client)["cat.png"]
    body = {"category": "x", "rle": _rle(37, 53, (1, 1, 5, 5))}
    first, second = (client.post(f"/api/images/{image}/annotations", json=body).json()["id"] for _ in range(2))
    assert client.delete(f"/api/annotations/{second}").status_code == 204
    restarted = local(create_app(folder, tiny_random_sam, path))
    third = restarted.post(f"/api/images/{image}/annotations", json=body).json()["id"]
    assert third not in (first, second) and third > second


# -- item 9: temp files, paths, symlinks ----------------------------------------------------------


def test_temp_files_of_a_killed_server_are_removed_on_start(tmp_path: Path) -> None:
    path = tmp_path / "coco.json"
    AnnotationStore(path).create("a.png", 4, 4, "x", _rle(4, 4, (0, 0, 2, 2)))
    leftover = tmp_path / ".coco.json.k3j2h1.tmp"
    leftover.write_text('{"images": [')
    unrelated = tmp_path / ".other.json.abc.tmp"
    unrelated.write_text("keep")
    store = AnnotationStore(path)
    assert not leftover.exists() and unrelated.exists() and len(store.dataset()["annotations"]) == 1


def test_errors_do_not_reveal_absolute_server_paths(folder: Path, tiny_random_sam, tmp_path: Path) -> None:
    client = local(create_app(folder, tiny_random_sam, tmp_path / "coco.json"))
    broken = _ids(client)["broken.jpg"]
    texts = [client.post(f"/api/images/{broken}/embedding", params={"wait": True}).text,
             client.get(f"/api/images/{broken}/embedding").text, client.get(f"/api/images/{broken}").text,
             client.get(f"/api/images/{broken}/file").text, client.get("/api/info").text]
    assert "broken.jpg" in texts[0]
    for text in texts:
        assert str(tmp_path) not in text


def test_an_image_replaced_by_a_symlink_is_not_followed(folder: Path, tiny_random_sam, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(secret)
    client = local(create_app(folder, tiny_random_sam, tmp_path / "coco.json"))
    image = _ids(client)["dog.png"]
    (folder / "dog.png").unlink()
    (folder / "dog.png").symlink_to(secret)
    for response in (client.get(f"/api/images/{image}/file"), client.get(f"/api/images/{image}"),
                     client.post(f"/api/images/{image}/embedding", params={"wait": True})):
        assert response.status_code == 404 and "no longer a file inside" in response.json()["detail"]
        assert response.content != secret.read_bytes()


# -- item 1 (server): oversized images ------------------------------------------------------------


def _claiming_png(path: Path, width: int, height: int) -> None:
    """A valid small PNG whose IHDR claims ``width`` x ``height`` (CRC fixed)."""
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def test_oversized_images_are_a_4xx(folder: Path, tiny_random_sam, tmp_path: Path, monkeypatch) -> None:
    _claiming_png(folder / "bomb.png", 60000, 60000)
    client = local(create_app(folder, tiny_random_sam, tmp_path / "coco.json"))
    image = _ids(client)["bomb.png"]
    for response in (client.get(f"/api/images/{image}"), client.get(f"/api/images/{image}/file"),
                     client.post(f"/api/images/{image}/embedding", params={"wait": True}),
                     client.post(f"/api/images/{image}/predict", json={"points": [[1, 1]], "labels": [1]})):
        assert 400 <= response.status_code < 500 and "bomb.png" in response.json()["detail"]

    def no_memory(path, **options):
        raise MemoryError()

    monkeypatch.setattr("segany.serve.catalogue.load_image", no_memory)
    cat = _ids(client)["cat.png"]
    response = client.post(f"/api/images/{cat}/embedding", params={"wait": True})
    assert response.status_code == 422 and "too large to decode" in response.json()["detail"]


# -- item 3 (server): typed errors ------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [(["--cache-embeddings", "0"], "at least 1"),
                                           (["--port", "99999"], "65535"), (["--max-queue", "x"], "whole number")])
def test_bad_serve_options_are_one_line_errors(argv: list[str], message: str, capsys) -> None:
    from segany.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["serve", "folder", *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_allowed_hosts_follow_the_bound_address() -> None:
    from segany.cli import build_parser
    from segany.cli.serve import allowed_hosts

    assert allowed_hosts("127.0.0.1", []) == ["localhost", "127.0.0.1", "[::1]"]
    assert allowed_hosts("192.168.1.5", ["box.lan"]) == ["localhost", "127.0.0.1", "[::1]", "192.168.1.5", "box.lan"]
    assert allowed_hosts("0.0.0.0", []) == ["localhost", "127.0.0.1", "[::1]"]
    assert allowed_hosts("::1", []) == ["localhost", "127.0.0.1", "[::1]"]
    args = build_parser().parse_args(["serve", "f", "--allowed-host", "a.lan", "--allowed-host", "b.lan"])
    assert args.allowed_host == ["a.lan", "b.lan"]


def test_engine_index_and_value_errors_are_422_not_500(folder: Path, tmp_path: Path, monkeypatch) -> None:
    import segany
    from segany.classic import ClassicPredictor

    client = local(create_app(folder, segany.load_model("classic"), tmp_path / "coco.json"))
    image = _ids(client)["cat.png"]
    zero_area = client.post(f"/api/images/{image}/predict", json={"box": [10, 10, 10, 10]})
    assert zero_area.status_code in (200, 422) and zero_area.json()  # a result or a reason, never a 500

    def broken(self, *args, **kwargs):
        raise IndexError("index 0 is out of bounds for axis 0 with size 0")

    monkeypatch.setattr(ClassicPredictor, "predict", broken)
    response = client.post(f"/api/images/{image}/predict", json={"points": [[5, 5]], "labels": [1]})
    assert response.status_code == 422 and "IndexError" in response.json()["detail"]


def test_load_benchmark_runs_the_classic_engine_without_weights(tmp_path: Path) -> None:
    import argparse

    from benchmarks.serve_load import random_checkpoint, server_command

    assert random_checkpoint("classic", tmp_path) is None
    args = argparse.Namespace(model="classic")
    command = server_command(tmp_path / "images", args, None, 8123)
    assert "--checkpoint" not in command and command[command.index("--model") + 1] == "classic"
