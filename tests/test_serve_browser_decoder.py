"""What the annotator's in-browser decoder (hover preview) gets from the server: the ONNX decoder and
the raw image embedding, which together give the server's best single-point mask; the classic engine
has neither (501, the page falls back); onnxruntime-web's files come from the npm tarball."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
from fastapi.testclient import TestClient

import segany
from segany.errors import ConfigError
from segany.masks import decode_rle
from segany.serve import create_app, web_runtime


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    picture = np.full((60, 90, 3), 220, np.uint8)
    picture[10:40, 15:50] = (200, 40, 40)
    Image.fromarray(picture).save(folder / "shapes.png")
    return folder


def client_for(images: Path, model, runtime: Path | None = None) -> TestClient:
    app = create_app(images, model, images.parent / "coco.json", web_runtime=runtime)
    return TestClient(app, base_url="http://localhost")


def fake_runtime(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in web_runtime.FILES:
        (folder / name).write_bytes(name.encode())
    return folder


def test_onnx_decoder_on_the_raw_embedding_gives_the_servers_best_mask(images: Path, tiny_random_sam) -> None:
    ort = pytest.importorskip("onnxruntime")
    client = client_for(images, tiny_random_sam)
    info = client.get("/api/browser-decoder").json()
    assert info["decoder"] == "/api/browser-decoder.onnx" and info["runtime"] is None
    assert "--web-runtime" in info["reason"]
    image_id = client.get("/api/images").json()[0]["id"]
    raw = client.get(f"/api/images/{image_id}/embedding.f32")
    assert raw.status_code == 200
    shape = [int(v) for v in raw.headers["X-Embedding-Shape"].split(",")]
    input_h, input_w = (int(v) for v in raw.headers["X-Input-Size"].split(","))
    assert raw.headers["X-Original-Size"] == "60,90"
    embedding = np.frombuffer(raw.content, "<f4").reshape(shape)
    predictor = segany.Predictor(tiny_random_sam)
    predictor.set_image(np.asarray(Image.open(images / "shapes.png").convert("RGB")))
    assert np.array_equal(embedding, predictor.get_image_embedding().numpy())

    session = ort.InferenceSession(client.get("/api/browser-decoder.onnx").content)
    point = (30.5, 25.0)
    masks, scores, _ = session.run(None, {  # what js/hover.js feeds
        "image_embeddings": embedding,
        "point_coords": np.array([[[point[0] * input_w / 90, point[1] * input_h / 60], [0, 0]]], np.float32),
        "point_labels": np.array([[1, -1]], np.float32),
        "mask_input": np.zeros((1, 1, 4 * shape[2], 4 * shape[3]), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array([60, 90], np.float32),
    })
    answer = client.post(f"/api/images/{image_id}/predict", json={"points": [point], "labels": [1]}).json()
    expected = decode_rle(answer["candidates"][0]["rle"])
    assert masks.shape == (1, 1, 60, 90), "one mask: the best multimask token (return_single_mask)"
    mine = masks[0, 0] > 0
    assert expected.any() and (mine & expected).sum() / (mine | expected).sum() >= 0.99
    assert scores[0, 0] == pytest.approx(answer["candidates"][0]["score"], abs=1e-4)


def test_classic_engine_has_no_browser_decoder(images: Path, tmp_path: Path) -> None:
    client = client_for(images, segany.load_model("classic"), fake_runtime(tmp_path / "runtime"))
    info = client.get("/api/browser-decoder").json()
    assert info["decoder"] is None and info["runtime"] == "/runtime/ort.wasm.min.mjs"
    assert "classic" in info["reason"]
    image_id = client.get("/api/images").json()[0]["id"]
    for url in ("/api/browser-decoder.onnx", f"/api/images/{image_id}/embedding.f32"):
        answer = client.get(url)
        assert answer.status_code == 501 and "classic" in answer.json()["detail"]
    assert client.get("/runtime/ort-wasm-simd-threaded.wasm").headers["content-type"] == "application/wasm"


def test_web_runtime_folder_must_hold_the_runtime(images: Path, tmp_path: Path) -> None:
    folder = fake_runtime(tmp_path / "runtime")
    (folder / "ort-wasm-simd-threaded.wasm").unlink()
    with pytest.raises(ConfigError, match="missing ort-wasm-simd-threaded.wasm"):
        create_app(images, segany.load_model("classic"), tmp_path / "coco.json", web_runtime=folder)


def test_web_runtime_is_extracted_from_the_npm_tarball(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import segany.weights
    from segany.cli.serve import ensure_web_runtime, web_runtime_dir
    from segany.registry import ONNXRUNTIME_WEB

    monkeypatch.setenv("SEGANY_HOME", str(tmp_path / "cache"))
    tarball = tmp_path / "cache" / ONNXRUNTIME_WEB.filename
    tarball.parent.mkdir()
    with tarfile.open(tarball, "w:gz") as archive:
        for name in (*web_runtime.FILES, "ort.all.min.mjs", "../escape"):
            data = f"file {name}".encode()
            member = tarfile.TarInfo(f"package/dist/{name}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    fetched = []
    monkeypatch.setattr(segany.weights, "ensure_file", lambda spec, progress: fetched.append(spec) or tarball)
    folder = ensure_web_runtime(progress=False)
    assert fetched == [ONNXRUNTIME_WEB] and folder == web_runtime_dir() == tmp_path / "cache" / "onnxruntime-web-1.30.0"
    assert sorted(p.name for p in folder.iterdir()) == sorted(web_runtime.FILES)  # only the files the page loads
    assert (folder / web_runtime.ENTRY).read_text() == f"file {web_runtime.ENTRY}"
    assert not tarball.exists(), "the tarball goes once extracted"
    assert ensure_web_runtime(progress=False) == folder and len(fetched) == 1


def test_a_tarball_without_the_runtime_is_refused(tmp_path: Path) -> None:
    tarball = tmp_path / "other.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.addfile(tarfile.TarInfo("package/index.js"), io.BytesIO(b""))
    with pytest.raises(ConfigError, match="no package/dist/ort.wasm.min.mjs"):
        web_runtime.extract_runtime(tarball, tmp_path / "runtime")
    assert not (tmp_path / "runtime").exists() and list(tmp_path.iterdir()) == [tarball]


def test_serve_web_runtime_option_picks_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from segany.cli.serve import web_runtime as chosen
    from segany.cli.serve import web_runtime_dir

    monkeypatch.setenv("SEGANY_HOME", str(tmp_path / "cache"))
    assert chosen(None) is None, "nothing cached: the page previews through the server"
    assert chosen(str(tmp_path / "mine")) == tmp_path / "mine"
    fake_runtime(web_runtime_dir())
    assert chosen(None) == chosen("download") == web_runtime_dir()  # cached: nothing to download
    assert chosen("none") is None
