"""Batch labelling as a library: find images, label them resumably, assemble COCO.

``segany everything`` is a thin client of this package; a cluster job or a server calls it the
same way::

    images, missing = find_images(["photos/"], out="labels/")
    settings = job_settings(model, checkpoint_sha256, {"points_per_side": 32})
    summary = label_images(images, MaskGenerator(model, output_mode="coco_rle"), "labels/", settings)

The images still to do run on an executor: :class:`LocalExecutor` (default) or
:class:`~segany.batch.ray_executor.RayExecutor` (``executor=RayExecutor(workers=4)``; the generator
is then given as a picklable factory that loads the model once per Ray actor).
"""
from .discover import IMAGE_SUFFIXES, ImageItem, find_images, result_path, unique_images
from .embed import embed_images
from .engine import COCO_FILE, Summary, job_settings, label_images, write_coco
from .executors import Executor, ImageJob, LocalExecutor, Outcome, Task

__all__ = [
    "COCO_FILE",
    "IMAGE_SUFFIXES",
    "Executor",
    "ImageItem",
    "ImageJob",
    "LocalExecutor",
    "Outcome",
    "Summary",
    "Task",
    "embed_images",
    "find_images",
    "job_settings",
    "label_images",
    "result_path",
    "unique_images",
    "write_coco",
]
