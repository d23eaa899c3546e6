"""The batch engine as a library (``segany.batch``), and its COCO output scored against real ground truth."""
from __future__ import annotations

import json
import sys
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED
from segany import load_model
from segany.batch import find_images, job_settings, label_images
from segany.cli import main
from segany.masks import encode_rle
from tiny_models import synthetic_image

COCO_TINY = SHARED / "data" / "coco_val2017_tiny"


class OneMaskGenerator:
    """A stand-in generator: one record per image with the given scores and mask."""

    def __init__(self, predicted_iou: float, stability: float, empty: bool = False) -> None:
        self.predicted_iou, self.stability, self.empty = predicted_iou, stability, empty

    def generate(self, image: np.ndarray) -> list[dict]:
        mask = np.zeros(image.shape[:2], bool)
        if not self.empty:
            mask[1:4, 2:6] = True
        return [{"segmentation": encode_rle(mask), "area": int(mask.sum()), "bbox": [2, 1, 4, 3],
                 "predicted_iou": self.predicted_iou, "point_coords": [[3.0, 2.0]], "stability_score": self.stability,
                 "crop_box": [0, 0, image.shape[1], image.shape[0]]}]


def write_images(folder: Path, names: list[str]) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 10, 3), 100, np.uint8)).save(folder / name)


def test_image_ids_are_stable_and_unique(tmp_path) -> None:
    write_images(tmp_path / "in", ["a/x.png", "b/x.png", "y.png"])
    images, missing = find_images([str(tmp_path / "in")], out=tmp_path / "out1")
    assert missing == [] and [item.name for item in images] == ["a/x.png", "b/x.png", "y.png"]
    settings = job_settings(load_model("classic"), None, {})
    ids = []
    for out in ("out1", "out2"):
        summary = label_images(images, OneMaskGenerator(0.9, 0.95), tmp_path / out, settings)
        assert (summary.done, summary.skipped, summary.failed) == (3, 0, 0)
        ids.append([json.loads((tmp_path / out / f"{item.name}.json").read_text())["image"]["image_id"] for item in images])
    assert ids[0] == ids[1] and len(set(ids[0])) == 3 and all(0 < i < 2**53 for i in ids[0])


def test_scores_are_never_null(tmp_path) -> None:
    write_images(tmp_path, ["a.png"])
    images, _ = find_images([str(tmp_path / "a.png")])
    settings = job_settings(load_model("classic"), None, {})
    # an empty mask's stability (0/0 in the official formula) is 0.0, not null
    assert label_images(images, OneMaskGenerator(0.9, math.nan, empty=True), tmp_path / "out", settings).done == 1
    annotation = json.loads((tmp_path / "out" / "a.png.json").read_text())["annotations"][0]
    assert annotation["stability_score"] == 0.0 and annotation["predicted_iou"] == 0.9
    # a NaN predicted IoU (broken weights) fails the image, in one line, and writes nothing
    lines: list[str] = []
    summary = label_images(images, OneMaskGenerator(math.nan, 0.9), tmp_path / "out2", settings, report=lines.append)
    assert (summary.done, summary.failed) == (0, 1)
    assert lines == ["failed: a.png: NonFiniteError: a.png: mask 1's predicted_iou is nan: are the model's weights broken?"]
    assert list((tmp_path / "out2").iterdir()) == []


def test_coco_output_scores_against_the_ground_truth(tmp_path, synthetic_small, capsys) -> None:
    """`--coco-images GT.json` gives the GT's image ids, so pycocotools' COCOeval runs (class-agnostic)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_file = COCO_TINY / "annotations" / "instances_val2017.json"
    if not gt_file.exists():
        pytest.skip(f"{COCO_TINY} not found (set SEGANY_SHARED)")
    gt = COCO(str(gt_file))
    smallest = sorted(gt.dataset["images"], key=lambda e: e["height"] * e["width"])[:2]
    paths = [str(COCO_TINY / "images" / e["file_name"]) for e in smallest]
    out = tmp_path / "out"
    options = ["-o", str(out), "--model", "classic", "--format", "coco", "--coco-images", str(gt_file)]
    assert main(["everything", *paths, *options]) == 0
    for entry in smallest:
        assert json.loads((out / f"{entry['file_name']}.json").read_text())["image"]["image_id"] == entry["id"]
    coco = json.loads((out / "annotations.json").read_text())
    assert sorted(img["id"] for img in coco["images"]) == sorted(e["id"] for e in smallest)

    evaluation = COCOeval(gt, gt.loadRes(coco["annotations"]), iouType="segm")
    evaluation.params.useCats = 0
    evaluation.params.imgIds = [e["id"] for e in smallest]
    evaluation.params.maxDets = [1, 10, 100]
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    recalls = evaluation.stats[6:9]  # AR@1, AR@10, AR@100
    assert all(0.0 <= r <= 1.0 for r in recalls) and recalls[0] <= recalls[1] <= recalls[2] and recalls[2] > 0

    # an image the ground truth does not have: refused before any work, naming it
    Image.fromarray(synthetic_small).save(tmp_path / "cat.png")
    capsys.readouterr()
    assert main(["everything", *paths, str(tmp_path / "cat.png"), *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"segany: error: 1 image(s) are not in {gt_file} (matched by file name): cat.png"]



def test_coco_images_gives_the_ground_truth_ids(tmp_path, synthetic_small, capsys) -> None:
    """`--coco-images GT.json` on a hand-made ground truth (no shared data): its ids, names and sizes."""
    (tmp_path / "in").mkdir()
    for seed, name in enumerate(("a.png", "b.png")):
        Image.fromarray(synthetic_image(24, 32, seed)).save(tmp_path / "in" / name)
    Image.fromarray(synthetic_small).save(tmp_path / "cat.png")
    entries = [{"id": 7, "file_name": "a.png", "height": 24, "width": 32},
               {"id": 12, "file_name": "b.png", "height": 24, "width": 32}]
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps({"images": entries, "annotations": [], "categories": [{"id": 1, "name": "thing"}]}))
    paths = [str(tmp_path / "in" / "a.png"), str(tmp_path / "in" / "b.png")]
    out = tmp_path / "out"
    options = ["-o", str(out), "--model", "classic", "--format", "coco", "--coco-images", str(gt_file)]
    assert main(["everything", *paths, *options]) == 0
    for entry in entries:
        assert json.loads((out / f"{entry['file_name']}.json").read_text())["image"]["image_id"] == entry["id"]
    coco = json.loads((out / "annotations.json").read_text())
    assert sorted((img["id"], img["height"], img["width"]) for img in coco["images"]) == [(7, 24, 32), (12, 24, 32)]
    assert {ann["image_id"] for ann in coco["annotations"]} == {7, 12}
    capsys.readouterr()
    assert main(["everything", *paths, str(tmp_path / "cat.png"), *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"segany: error: 1 image(s) are not in {gt_file} (matched by file name): cat.png"]


def test_attempt_markers_count_every_start(tmp_path) -> None:
    """Each start of an image claims the next marker (how the Ray executor counts a retried image)."""
    from segany.batch.executors import ATTEMPTS_FOLDER, Task, claim_attempt, clear_attempts

    first, second = (Task(item, item.image_id) for item in find_images([str(write_images_at(tmp_path, 2))])[0])
    assert [claim_attempt(tmp_path, first), claim_attempt(tmp_path, first), claim_attempt(tmp_path, second)] == [1, 2, 1]
    clear_attempts(tmp_path, [first])
    assert claim_attempt(tmp_path, first) == 1 and claim_attempt(tmp_path, second) == 2
    clear_attempts(tmp_path, [first, second])
    assert not (tmp_path / ATTEMPTS_FOLDER).exists()


def write_images_at(tmp_path: Path, count: int) -> Path:
    folder = tmp_path / "in"
    write_images(folder, [f"{i}.png" for i in range(count)])
    return folder


def test_the_summary_counts_retried_images(tmp_path) -> None:
    """An executor's outcome started more than once counts as retried (and done or failed)."""
    from segany.batch.executors import LocalExecutor, Outcome

    class Flaky(LocalExecutor):
        def run(self, job, tasks, out):
            for outcome, attempts in zip(super().run(job, tasks, out), (2, 1, 3)):
                yield Outcome(outcome.name, outcome.ok, outcome.reason, attempts)

    images, _ = find_images([str(write_images_at(tmp_path, 3))])
    (tmp_path / "in" / "2.png").write_bytes(b"not an image")
    summary = label_images(images, OneMaskGenerator(0.9, 0.95), tmp_path / "out", job_settings(load_model("classic"), None, {}),
                           executor=Flaky(), report=lambda line: None)
    assert (summary.done, summary.failed, summary.retried) == (2, 1, 2)
    assert summary.failures[0][0] == "2.png" and summary.failures[0][1].startswith("ImageError")


def test_model_factories_travel_without_the_loaded_model(tiny_model_files) -> None:
    """What the Ray actors get: the model's files, never the driver's loaded weights."""
    import pickle

    from segany.cli.jobs import GeneratorFactory, ModelFactory

    config, checkpoint = map(str, tiny_model_files)
    model = ModelFactory(config, checkpoint, "cpu")
    loaded = model.load()
    options = {"output_mode": "coco_rle", "points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    factory = pickle.loads(pickle.dumps(GeneratorFactory(model, options)))
    assert factory.model.loaded is None and model.loaded is loaded
    assert len(pickle.dumps(factory)) < 1000
    image = synthetic_image(32, 32)
    assert factory().generate(image) == GeneratorFactory(model, options)().generate(image) != []


def test_executor_options(tmp_path, monkeypatch, capsys) -> None:
    """Ray options without --executor ray, and the ray executor without Ray installed: one line each."""
    write_images(tmp_path, ["a.png"])
    base = ["everything", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", "classic"]
    assert main([*base, "--workers", "2", "--batch-size", "4"]) == 2
    assert capsys.readouterr().err.strip() == "segany: error: --workers, --batch-size only apply with --executor ray"
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as where it is not installed
    assert main([*base, "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "segany: error: the ray executor needs Ray Data: pip install 'segany[ray]'"
    assert main([*base[:1], *base[1:4], "--executor", "ray", "--workers", "0"]) == 2
    assert "workers >= 1" in capsys.readouterr().err


def _no_tensor_read(*args: object) -> None:
    raise AssertionError("a stored embedding's tensors were read")


def test_embed_resumes_by_image_and_model(tmp_path, tiny_random_sam, tiny_model_files, capsys) -> None:
    """`segany embed`: one safetensors file per image; a re-run skips those stored for the same image
    bytes and model; a changed image is encoded again."""
    from segany.data.formats.embeddings import read_embedding
    from tiny_models import model_args

    folder = write_images_at(tmp_path, 2)
    command = ["embed", str(folder), "-o", str(tmp_path / "out"), *model_args(tiny_model_files)]
    assert main(command) == 0
    features, info = read_embedding(tmp_path / "out" / "0.png.safetensors")
    assert info["image_name"] == "0.png" and info["model_name"] == tiny_random_sam.config.name
    assert features.maps[0].shape[0] == 1 and features.original_size == (8, 10)
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:  # resume reads the headers only, never the tensors
        patch.setattr("segany.data.formats.embeddings._read_maps", _no_tensor_read)
        assert main(command) == 0
    assert "embed: done 0, skipped 2, failed 0" in capsys.readouterr().err
    Image.fromarray(synthetic_image(8, 10, 3)).save(folder / "1.png")
    assert main(command) == 0
    assert "embed: done 1, skipped 1, failed 0" in capsys.readouterr().err


def test_a_ray_worker_returns_a_status_row_per_image(tmp_path) -> None:
    """The actor's batch call (no Ray needed): one row per image, a failed image's reason, and an
    unwritable output as a fatal row (the driver stops the job with OutputError)."""
    from segany.batch.executors import Task
    from segany.batch.ray_executor import JobWorker
    from segany.errors import ImageError, OutputError

    class Job:
        def setup(self) -> str:
            return "state"

        def run(self, state: str, task: Task) -> None:
            assert state == "state"
            if task.item.name == "1.png":
                raise ImageError("unreadable")
            if task.item.name == "2.png":
                raise OutputError("disk full")

    tasks = [Task(item, item.image_id) for item in find_images([str(write_images_at(tmp_path, 3))])[0]]
    rows = [task.to_row() for task in tasks]
    batch = {key: np.array([row[key] for row in rows]) for key in rows[0]}
    worker = JobWorker(Job(), str(tmp_path / "out"))
    (tmp_path / "out").mkdir()
    result = worker(batch)
    assert result == {"name": ["0.png", "1.png", "2.png"], "ok": [True, False, False],
                      "reason": ["", "ImageError: unreadable", "disk full"], "attempts": [1, 1, 1],
                      "fatal": [False, False, True]}
    assert worker(batch)["attempts"] == [2, 2, 2]


def test_a_ray_driver_loads_the_model_on_the_cpu(tiny_model_files) -> None:
    """With `--executor ray --device cuda`, the driver (maybe without a GPU) loads its copy on the CPU;
    the workers get --device."""
    import argparse

    from segany.cli.jobs import ModelFactory
    from segany.errors import BackendError

    config, checkpoint = map(str, tiny_model_files)
    args = argparse.Namespace(model=config, checkpoint=checkpoint, device="cuda:7")
    factory = ModelFactory.from_args(args, driver_device="cpu")
    assert factory.device == "cuda:7" and next(factory.load().parameters()).device.type == "cpu"
    with pytest.raises(BackendError, match="cuda:7"):
        ModelFactory.from_args(args)


@pytest.fixture()
def memory_root(tmp_path):
    """A fresh folder of fsspec's in-process ``memory://`` filesystem (removed afterwards)."""
    fsspec = pytest.importorskip("fsspec")
    fs, root = fsspec.filesystem("memory"), f"/segany-{tmp_path.name}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_uri_inputs_label_as_local_paths(tmp_path, memory_root, capsys) -> None:
    """A memory:// folder, glob and file give the names, ids and results the same local images give."""
    fs, root = memory_root
    names = ["a/x.png", "b/x.png", "y.png"]
    for seed, name in enumerate(names):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(synthetic_image(32, 40, seed)).save(tmp_path / "in" / name)
        fs.pipe(f"{root}/in/{name}", (tmp_path / "in" / name).read_bytes())
    fs.pipe(f"{root}/in/notes.txt", b"not an image")
    uri = f"memory://{root}/in"
    images, missing = find_images([uri, f"{uri}/*.png", f"{uri}/a/x.png", f"{uri}/absent"])
    assert missing == [f"{uri}/absent"]
    assert [item.name for item in images] == [*names, "y.png", "x.png"]
    assert images[0].path == f"memory://{root}/in/a/x.png" and images[0].is_uri
    command = ["everything", "--model", "classic", "--format", "coco"]
    assert main([*command, "-o", str(tmp_path / "local"), str(tmp_path / "in")]) == 0
    assert main([*command, "-o", str(tmp_path / "uri"), uri]) == 0
    assert "done 3, skipped 0, failed 0" in capsys.readouterr().err
    local, remote = (json.loads((tmp_path / out / "annotations.json").read_text()) for out in ("local", "uri"))
    assert remote == local and len(remote["images"]) == 3 and remote["annotations"]
    document = json.loads((tmp_path / "uri" / "a" / "x.png.json").read_text())
    assert document["segany"]["source"] == f"memory://{root}/in/a/x.png"


def test_uri_images_decode_as_files_do(tmp_path, memory_root) -> None:
    """A URI's bytes decode by load_image's rules: EXIF orientation applied, the pixel budget kept,
    corrupt and missing files typed."""
    from segany.batch import ImageItem
    from segany.data.images import load_image
    from segany.errors import ImageError, ImageTooLargeError

    fs, root = memory_root
    image = Image.fromarray(synthetic_image(12, 20, 1))
    exif = image.getexif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    fs.pipe(f"{root}/rotated.jpg", (tmp_path / "rotated.jpg").read_bytes())
    fs.pipe(f"{root}/broken.png", b"\x89PNG\r\n\x1a\nnot really")
    item = ImageItem(f"memory://{root}/rotated.jpg", Path("rotated.jpg"))
    decoded = item.load()
    assert decoded.shape == (20, 12, 3) and np.array_equal(decoded, load_image(tmp_path / "rotated.jpg"))
    with pytest.raises(ImageTooLargeError, match="over the limit of 100 pixels"):
        item.load(max_pixels=100)
    with pytest.raises(ImageError, match="corrupt"):
        ImageItem(f"memory://{root}/broken.png", Path("broken.png")).load()
    with pytest.raises(ImageError, match="does not exist"):
        ImageItem(f"memory://{root}/absent.png", Path("absent.png")).load()


def test_ray_refuses_memory_uris(tmp_path, memory_root) -> None:
    """memory:// is one process's own filesystem: the Ray executor says so before starting Ray."""
    from segany.batch import ImageItem, Task
    from segany.batch.ray_executor import RayExecutor
    from segany.errors import BackendError

    item = ImageItem(f"memory://{memory_root[1]}/a.png", Path("a.png"))
    with pytest.raises(BackendError, match="Ray workers cannot read"):
        next(RayExecutor().run(None, [Task(item, item.image_id)], tmp_path))


def test_unknown_or_uninstalled_filesystems_are_named(monkeypatch) -> None:
    """One typed line: an unknown protocol, or the package a known one needs."""
    from segany.errors import BackendError

    known = pytest.importorskip("fsspec.registry").known_implementations
    with pytest.raises(BackendError, match="unknown filesystem protocol 'nosuchfs'"):
        find_images(["nosuchfs://bucket/images"])
    monkeypatch.setitem(known, "segany-test",
                        {"class": "segany_missing_fs.FileSystem", "err": "Install segany_missing_fs"})
    with pytest.raises(BackendError, match=r"segany-test:// URIs needs the segany_missing_fs package: "
                                           r"pip install segany_missing_fs$"):
        find_images(["segany-test://bucket/images"])
    monkeypatch.setitem(sys.modules, "fsspec.core", None)  # fsspec itself missing
    with pytest.raises(BackendError, match="needs fsspec: pip install"):
        find_images(["memory://images"])


def test_embed_reads_uris(tmp_path, memory_root, tiny_model_files) -> None:
    """`segany embed memory://...` stores what the local folder's run stores (the image's sha256 too)."""
    from segany.data.formats.embeddings import read_embedding_info
    from tiny_models import model_args

    fs, root = memory_root
    folder = write_images_at(tmp_path, 2)
    for path in folder.iterdir():
        fs.pipe(f"{root}/{path.name}", path.read_bytes())
    for out, source in (("local", str(folder)), ("uri", f"memory://{root}")):
        assert main(["embed", source, "-o", str(tmp_path / out), *model_args(tiny_model_files)]) == 0
    for name in ("0.png", "1.png"):
        local, remote = (read_embedding_info(tmp_path / out / f"{name}.safetensors") for out in ("local", "uri"))
        assert remote == local
