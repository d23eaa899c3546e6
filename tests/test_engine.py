"""The engine interface (segany.engine): family dispatch, image features handed between predictors
and to the generator, cancellation, and the server's "everything" on the cached features."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segany
from segany.classic import ClassicMaskGenerator, ClassicModel, ClassicPredictor
from segany.engine import (
    AutomaticMaskGenerator,
    EngineFamily,
    ImageFeatures,
    PromptPredictor,
    family_of,
    register_family,
    supported_options,
)
from segany.errors import BackendError, ConfigError, GeneratorArgumentError, PromptError

SMALL_GRID = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


def _count_encoder_calls(model: segany.Sam, monkeypatch) -> list[int]:
    calls = [0]
    encoder = model.image_encoder
    real = encoder.forward

    def counted(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(encoder, "forward", counted)
    return calls


def test_each_family_gives_its_own_engines(tiny_random_sam) -> None:
    predictor = segany.Predictor(tiny_random_sam)
    assert isinstance(predictor, segany.SamPredictor) and isinstance(predictor, PromptPredictor)
    generator = segany.MaskGenerator(predictor)
    assert isinstance(generator, segany.SamMaskGenerator) and isinstance(generator, AutomaticMaskGenerator)
    classic = segany.load_model("classic")
    assert isinstance(segany.Predictor(classic), ClassicPredictor)
    assert isinstance(segany.MaskGenerator(classic), ClassicMaskGenerator)
    assert family_of(tiny_random_sam).name == "sam" and family_of(ClassicPredictor()).name == "classic"


def test_objects_no_engine_serves_are_typed_errors(tiny_random_sam) -> None:
    with pytest.raises(ConfigError, match="not a segany model"):
        segany.Predictor("vit_b")
    with pytest.raises(GeneratorArgumentError, match="not a segany model"):
        segany.MaskGenerator(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="Sam model"):
        segany.SamPredictor(ClassicModel())
    with pytest.raises(BackendError, match="dtype"):
        segany.Predictor(ClassicModel(), dtype=torch.bfloat16)
    with pytest.raises(BackendError, match="backend"):
        segany.Predictor(tiny_random_sam, backend_typo="onnxruntime")


def test_a_registered_family_claims_its_models() -> None:
    class ToyModel:
        pass

    made = []
    toy = EngineFamily("toy", lambda obj: isinstance(obj, ToyModel), lambda model, **o: made.append(("p", o)) or "P",
                       lambda model, *a, **o: made.append(("g", o)) or "G", frozenset({"box_nms_thresh"}))
    register_family(toy)
    try:
        assert segany.Predictor(ToyModel(), dtype="x") == "P" and segany.MaskGenerator(ToyModel()) == "G"
        assert made == [("p", {"dtype": "x"}), ("g", {})]
        assert supported_options(ToyModel(), {"box_nms_thresh": 0.5, "points_per_side": 8}) == {"box_nms_thresh": 0.5}
    finally:
        from segany import engine

        engine._families.remove(toy)


def test_engines_declare_the_generator_options_they_honour(tiny_random_sam) -> None:
    options = {"points_per_side": 8, "box_nms_thresh": 0.5, "crop_n_layers": 1}
    assert supported_options(tiny_random_sam, options) == options
    assert supported_options(ClassicModel(), options) == {"box_nms_thresh": 0.5}


def test_features_move_between_predictors(tiny_random_sam, synthetic_small, monkeypatch) -> None:
    first = segany.Predictor(tiny_random_sam)
    first.set_image(synthetic_small)
    features = first.image_features()
    assert isinstance(features, ImageFeatures) and features.original_size == synthetic_small.shape[:2]
    assert features.nbytes == first.get_image_embedding().numel() * 4
    calls = _count_encoder_calls(tiny_random_sam, monkeypatch)
    second = segany.Predictor(tiny_random_sam)
    second.set_image_features(features)
    assert calls[0] == 0
    prompt = {"point_coords": np.array([[20.0, 15.0]]), "point_labels": np.array([1])}
    for ours, theirs in zip(second.predict(**prompt), first.predict(**prompt)):
        np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(PromptError, match="embedding"):
        second.set_image_features(ImageFeatures((torch.zeros(1, 8, 4, 4),), (10, 10), (10, 10)))


def test_generator_on_given_features_runs_no_encoder_and_gives_the_same_masks(
    tiny_random_sam, synthetic_small, monkeypatch
) -> None:
    expected = segany.MaskGenerator(tiny_random_sam, output_mode="coco_rle", **SMALL_GRID).generate(synthetic_small)
    predictor = segany.Predictor(tiny_random_sam)
    predictor.set_image(synthetic_small)
    calls = _count_encoder_calls(tiny_random_sam, monkeypatch)
    generator = segany.MaskGenerator(tiny_random_sam, output_mode="coco_rle", **SMALL_GRID)
    records = generator.generate(synthetic_small, features=predictor.image_features())
    assert calls[0] == 0 and len(records) == len(expected) > 0
    assert [r["segmentation"] for r in records] == [r["segmentation"] for r in expected]
    other = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(GeneratorArgumentError, match="features"):
        generator.generate(other, features=predictor.image_features())


def test_generation_stops_when_check_raises(tiny_random_sam, synthetic_small) -> None:
    class Stop(Exception):
        pass

    checks = [0]

    def check() -> None:
        checks[0] += 1
        if checks[0] == 3:
            raise Stop

    generator = segany.MaskGenerator(tiny_random_sam, points_per_batch=4, **SMALL_GRID)
    with pytest.raises(Stop):
        generator.generate(synthetic_small, check=check)
    assert checks[0] == 3  # 16 points in batches of 4: stopped before the third batch


def test_server_everything_reuses_the_cached_embedding(tiny_random_sam, synthetic_small, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from fastapi.testclient import TestClient

    from segany.serve import create_app

    Image.fromarray(synthetic_small).save(tmp_path / "a.png")
    Image.fromarray(synthetic_small[::-1].copy()).save(tmp_path / "b.png")
    calls = _count_encoder_calls(tiny_random_sam, monkeypatch)
    client = TestClient(create_app(tmp_path, tiny_random_sam, tmp_path / "ann.json"), base_url="http://localhost")
    ids = [image["id"] for image in client.get("/api/images").json()]
    for image_id in ids:
        answer = client.post(f"/api/images/{image_id}/predict", json={"points": [[10, 10]], "labels": [1]})
        assert answer.status_code == 200
        proposals = client.post(f"/api/images/{image_id}/everything", json={"points_per_side": 4})
        assert proposals.status_code == 200, proposals.text
    assert calls[0] == len(ids) == 2


def test_every_registry_entry_names_a_registered_family() -> None:
    from segany.engine import families
    from segany.registry import MODELS

    names = {family.name for family in families()}
    with torch.device("meta"):
        for spec in MODELS.values():
            assert spec.family in names and spec.source
            assert family_of(segany.build_model(spec.name)).name == spec.family
