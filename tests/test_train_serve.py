"""The model-in-the-loop's last step: ``segany serve --model RUN/config.json --checkpoint RUN/best.pth``
serves the fine-tuned model (a tiny SAM trained two steps here) and /predict answers with its masks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
from fastapi.testclient import TestClient

from segany import Predictor
from segany.build import build_model, load_model
from segany.cli import build_parser
from segany.cli.common import load_model_from_args
from segany.data.images import load_image
from segany.masks import decode_rle
from segany.serve import create_app
from segany.train import TrainConfig, train
from segany.train.synthetic import write_shapes_dataset
from tiny_models import tiny_sam_config


def test_serve_checkpoint_of_a_training_run_predicts_with_the_trained_model(tmp_path):
    torch.set_num_threads(1)
    data = write_shapes_dataset(tmp_path / "data", 2, size=64, seed=3)
    config = tiny_sam_config(image_size=64, patch_size=8)
    run = tmp_path / "run"
    train(config, data, run, TrainConfig(mode="full", epochs=1, points=1, silent=0, lr=1e-3), val=data,
          progress=False)
    assert (run / "best.pth").is_file()

    images = data.parent.parent / "images"
    args = build_parser().parse_args(["serve", str(images), "--model", str(run / "config.json"),
                                      "--checkpoint", str(run / "best.pth")])
    app = create_app(args.images_dir, load_model_from_args(args), tmp_path / "coco.json", model_name=str(args.model))
    client = TestClient(app, base_url="http://localhost")
    image_id = next(i["id"] for i in client.get("/api/images").json() if i["file_name"] == "shapes_00000.png")
    box = [8, 8, 40, 44]
    answer = client.post(f"/api/images/{image_id}/predict", json={"box": box, "multimask": False})
    assert answer.status_code == 200
    candidate = answer.json()["candidates"][0]

    image = load_image(images / "shapes_00000.png")
    trained = Predictor(load_model(run / "config.json", checkpoint=run / "best.pth"))
    trained.set_image(image)
    masks, scores, _ = trained.predict(box=np.array(box), multimask_output=False)
    assert np.array_equal(decode_rle(candidate["rle"]), masks[0])
    np.testing.assert_allclose(candidate["score"], scores[0], rtol=1e-4, atol=1e-5)

    torch.manual_seed(0)  # the run's initial weights: train's seeded random init (seed 0)
    initial = Predictor(build_model(config))
    initial.set_image(image)
    _, initial_scores, _ = initial.predict(box=np.array(box), multimask_output=False)
    assert abs(float(initial_scores[0]) - candidate["score"]) > 1e-4  # the served model is the trained one
