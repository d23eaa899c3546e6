"""The Ray executor of the batch jobs: one local Ray (2 CPUs) for the whole module, small images.

Results equal the local executor's, finished images are never scheduled again, a worker killed
(SIGKILL) in the middle of its image is retried by Ray and nothing is lost or written twice, a
corrupt image is reported and the job goes on; ``segany embed`` gives the same files either way.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, SHARED, torch_threads
from segany.batch import find_images, job_settings, label_images
from segany.batch.executors import ATTEMPTS_FOLDER
from segany.cli import main
from segany.cli.jobs import GeneratorFactory, ModelFactory
from tiny_models import model_args, synthetic_image

ray = pytest.importorskip("ray")
from segany.batch.ray_executor import RayExecutor  # noqa: E402 - after the skip

COCO_IMAGES = SHARED / "data" / "coco_val2017_tiny" / "images"
OPTIONS = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """One local Ray for the module; its workers import segany and this test module (the killer)."""
    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", "RAY_worker_niceness")}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), *filter(None, [saved["PYTHONPATH"]])])
    os.environ["RAY_worker_niceness"] = "0"  # Ray's default (15) starves the workers on a busy machine
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


class KillOnce:
    """A generator factory whose generator SIGKILLs its own worker process on the first image any
    worker starts (a marker file makes it fire once in the whole job)."""

    def __init__(self, factory: GeneratorFactory, marker: Path) -> None:
        self.factory, self.marker = factory, marker

    def __call__(self) -> Killer:
        return Killer(self.factory(), self.marker)


class Killer:
    def __init__(self, generator, marker: Path) -> None:
        self.generator, self.marker = generator, marker

    def generate(self, image: np.ndarray) -> list[dict]:
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return self.generator.generate(image)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


def write_images(folder: Path, count: int, size: int = 64) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for seed in range(count):
        Image.fromarray(synthetic_image(size, size, seed)).save(folder / f"im{seed}.png")
    return folder


def documents(out: Path) -> dict[str, dict]:
    """Every per-image SA-1B document under ``out`` by file name (no temporary files left)."""
    assert not list(out.rglob("*.tmp")) and not (out / ATTEMPTS_FOLDER).exists(), "temporary files left"
    return {p.relative_to(out).as_posix(): json.loads(p.read_text()) for p in sorted(out.rglob("*.png.json"))}


@pytest.fixture(scope="module")
def tiny_sam_job(tiny_model_files):
    config, checkpoint = map(str, tiny_model_files)
    model = ModelFactory(config, checkpoint, "cpu")
    settings = job_settings(model.load(), "test", OPTIONS)
    return GeneratorFactory(ModelFactory(config, checkpoint, "cpu"), {"output_mode": "coco_rle", **OPTIONS}), settings


def test_everything_cli_ray_equals_local_and_reports_a_corrupt_image(tmp_path, capsys) -> None:
    """The issue's check on a few COCO images: `--executor ray --workers 2` writes the same
    annotations.json as the local run; a corrupt image fails alone, named in the summary."""
    if not COCO_IMAGES.is_dir():
        pytest.skip(f"{COCO_IMAGES} not found (set SEGANY_SHARED)")
    folder = tmp_path / "in"
    folder.mkdir()
    images = [path.name for path in sorted(COCO_IMAGES.iterdir())[:2]]
    for name in images:
        Image.open(COCO_IMAGES / name).resize((96, 64)).save(folder / name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    common = ["--model", "classic", "--format", "coco"]
    assert main(["everything", str(folder), "-o", str(tmp_path / "local"), *common]) == 1
    capsys.readouterr()
    uri = folder.resolve().as_uri()  # the workers read a file:// URI through fsspec
    assert main(["everything", uri, "-o", str(tmp_path / "ray"), *common, "--executor", "ray", "--workers", "2"]) == 1
    err = capsys.readouterr().err
    assert "failed: broken.png: ImageError" in err and "done 2, skipped 0, failed 1, retried 0" in err
    local, distributed = (json.loads((tmp_path / name / "annotations.json").read_text()) for name in ("local", "ray"))
    assert len(distributed["images"]) == 2 and distributed["annotations"] and distributed == local
    results = {name: [json.loads((tmp_path / name / f"{image}.json").read_text()) for image in images]
               for name in ("local", "ray")}
    for image, document in zip(images, results["ray"]):
        assert document["segany"].pop("source") == f"{uri}/{image}"
    for document in results["local"]:
        document["segany"].pop("source")
    assert results["ray"] == results["local"]
    assert documents(tmp_path / "ray") == documents(tmp_path / "local")


class Recording(RayExecutor):
    """The Ray executor, noting which images it was given."""

    scheduled: list[str]

    def run(self, job, tasks, out):
        self.scheduled = [task.item.name for task in tasks]
        return super().run(job, tasks, out)


def test_resume_and_a_killed_worker_lose_nothing(tmp_path, tiny_sam_job) -> None:
    """Images done before are skipped before scheduling (their files untouched); the worker is
    SIGKILLed on its first image: Ray restarts it, the image is done again, every result equals the
    local executor's, and the summary counts the image as retried."""
    factory, settings = tiny_sam_job
    images, _ = find_images([str(write_images(tmp_path / "in", 4))])
    local = label_images(images, factory, tmp_path / "local", settings)
    assert (local.done, local.failed, local.retried) == (4, 0, 0)
    assert label_images(images[:2], factory, tmp_path / "ray", settings).done == 2
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("*.json")}

    executor = Recording(workers=1)
    summary = label_images(images, KillOnce(factory, tmp_path / "killed"), tmp_path / "ray", settings, executor=executor)
    assert executor.scheduled == ["im2.png", "im3.png"]
    assert (tmp_path / "killed").exists(), "the worker was never killed"
    assert (summary.done, summary.failed, summary.skipped, summary.retried) == (2, 0, 2, 1)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert documents(tmp_path / "ray") == documents(tmp_path / "local")


def test_embed_ray_equals_local(tmp_path, tiny_model_files) -> None:
    from segany.data.formats.embeddings import read_embedding

    pytest.importorskip("safetensors")
    folder = write_images(tmp_path / "in", 3)
    for name, extra in (("local", []), ("ray", ["--executor", "ray", "--workers", "2"])):
        assert main(["embed", str(folder), "-o", str(tmp_path / name), *model_args(tiny_model_files), *extra]) == 0
    for seed in range(3):
        (local, local_info), (distributed, ray_info) = (
            read_embedding(tmp_path / name / f"im{seed}.png.safetensors") for name in ("local", "ray"))
        assert ray_info == local_info and ray_info["image_name"] == f"im{seed}.png"
        assert len(distributed.maps) == len(local.maps) >= 1
        assert all(torch.equal(a, b) for a, b in zip(distributed.maps, local.maps))


def test_label_ray_equals_local(tmp_path, tiny_model_files, capsys) -> None:
    """`segany label --executor ray`: the text labeler travels as a factory (each actor builds the
    detector and SAM predictor once) and the COCO file equals the local run's."""
    pytest.importorskip("transformers")
    from tiny_text_models import tiny_text_model_folders

    folder = write_images(tmp_path / "in", 2)
    command = ["label", str(folder), "--classes", "cat, dog", "--engine", "owlv2", "--detector",
               str(tiny_text_model_folders()["owlv2"]), "--box-threshold", "0.0", *model_args(tiny_model_files)]
    with torch_threads(1):  # as a Ray actor of one CPU runs
        assert main([*command, "-o", str(tmp_path / "local")]) == 0
    assert main([*command, "-o", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    assert "label: done 2, skipped 0, failed 0, retried 0" in capsys.readouterr().err
    local, distributed = (json.loads((tmp_path / name / "annotations.json").read_text()) for name in ("local", "ray"))
    assert [c["name"] for c in distributed["categories"]] == ["cat", "dog"]
    assert len(distributed["images"]) == 2 and distributed["annotations"]
    # the local run above has the actor's one thread: with two, the detector's float32 sums round otherwise on
    # some CPUs, its box prompts move by ~1e-6 and a random tiny SAM's mask flips a pixel (seen on a Zen 3);
    # the scores and prompt points are still compared within float tolerance, everything else exactly
    floats = ("score", "point_coords")
    assert {k: v for k, v in distributed.items() if k != "annotations"} == \
        {k: v for k, v in local.items() if k != "annotations"}
    assert [{k: v for k, v in a.items() if k not in floats} for a in distributed["annotations"]] == \
        [{k: v for k, v in a.items() if k not in floats} for a in local["annotations"]]
    for a, b in zip(distributed["annotations"], local["annotations"]):
        for k in floats:
            assert (k in a) == (k in b) and np.allclose(a.get(k, 0), b.get(k, 0), rtol=1e-5, atol=1e-5), (k, a, b)
