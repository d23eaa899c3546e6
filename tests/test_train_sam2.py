"""segany.train on SAM 2 image models (a tiny random SAM 2.1 in the official YAML / checkpoint format):
each mode trains exactly its parameters (the video memory modules never), a few steps reduce the loss,
the object-score loss takes part, and the run's checkpoint is the official ``{"model": state_dict}``
that ``load_model`` loads strictly."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import SHARED
from segany.build import load_model
from segany.cli import main
from segany.models.sam2 import Sam2
from segany.train import TrainConfig, train
from segany.train import loop as train_loop
from segany.train.data import NO_AUGMENT, FeatureCache
from segany.train.synthetic import write_shapes_dataset
from test_train import BENCH_PYTHON, REPO, assert_a_batched_step_equals_its_images_one_by_one, one_thread  # noqa: F401  (one_thread: autouse, tiny models on one thread)
from tiny_models import TINY_DIM, TINY_IMAGE_SIZE, save_tiny_sam2

FAST = {"epochs": 1, "points": 1, "silent": 1, "max_objects": 2, "lr": 1e-3}
VIDEO_PREFIXES = ("memory_attention.", "memory_encoder.", "maskmem_tpos_enc", "obj_ptr", "no_obj", "mask_downsample.")


@pytest.fixture(scope="module")
def tiny_sam2(tmp_path_factory) -> tuple[Path, Path]:
    return save_tiny_sam2(tmp_path_factory.mktemp("sam2"))


@pytest.fixture(scope="module")
def one_image(tmp_path_factory) -> Path:
    return write_shapes_dataset(tmp_path_factory.mktemp("one"), 1, size=TINY_IMAGE_SIZE, seed=3)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    saved = torch.load(path, weights_only=True)
    assert set(saved) == {"model"}  # the official SAM 2 checkpoint layout
    return saved["model"]


@pytest.mark.parametrize("mode", ["decoder", "lora", "full"])
def test_sam2_one_step_changes_exactly_the_mode_parameters(tiny_sam2, one_image, tmp_path, mode):
    yaml_path, checkpoint = tiny_sam2
    before = _weights(checkpoint)
    train(yaml_path, one_image, tmp_path, TrainConfig(mode=mode, box_probability=0.0, **FAST),
          checkpoint=checkpoint, progress=False)
    after = _weights(tmp_path / "last.pth")
    assert set(after) == set(before)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    encoder = {k for k in changed if k.startswith("image_encoder.")}
    attention = {k for k in before if k.startswith("image_encoder.trunk.") and ".attn." in k
                 and k.endswith(("qkv.weight", "proj.weight"))}
    assert {k for k in before if k.startswith("sam_mask_decoder.transformer.")} <= changed
    assert "sam_mask_decoder.pred_obj_score_head.layers.0.weight" in changed  # the object-score loss trains it
    assert not {k for k in changed if k.startswith(VIDEO_PREFIXES)}
    if mode == "decoder":
        assert not encoder and "no_mem_embed" not in changed
    elif mode == "lora":
        assert encoder == attention  # merged adapters: Hiera's attention projections, nothing else of the encoder
    else:
        assert {k for k in before if k.startswith("image_encoder.trunk.blocks.")} <= encoder
        assert "no_mem_embed" in changed


def test_sam2_a_few_steps_reduce_the_loss_and_the_checkpoint_loads_strictly(tiny_sam2, one_image, tmp_path):
    yaml_path, checkpoint = tiny_sam2
    config = TrainConfig(mode="full", epochs=6, lr=1e-3, points=0, silent=0, box_probability=1.0,
                         warmup_steps=0, decay_at=(), augment=NO_AUGMENT)
    before = train_loop.evaluate_model(load_model(yaml_path, checkpoint=checkpoint), one_image, config)
    result = train(yaml_path, one_image, tmp_path, config, val=one_image, checkpoint=checkpoint, progress=False)
    losses = [row["train_loss"] for row in result.metrics]  # the same image and box prompts every step
    assert losses[-1] < 0.75 * losses[0] and result.metrics[-1]["val_loss"] < before["val_loss"]
    model = load_model(tmp_path / "config.json", checkpoint=tmp_path / "best.pth")  # strict: official keys only
    assert isinstance(model, Sam2)
    best = _weights(tmp_path / "best.pth")
    assert all(torch.equal(value, best[key]) for key, value in model.state_dict().items())
    assert json.loads((tmp_path / "trained_on.json").read_text())["architecture"] == "config.json"


def test_sam2_losses_include_the_object_score_loss(tiny_sam2, one_image):
    yaml_path, checkpoint = tiny_sam2
    model = load_model(yaml_path, checkpoint=checkpoint)
    frames = train_loop._Frames(model, train_loop.load_train_images(one_image), None, torch.device("cpu"))
    features, masks = frames.frozen(0)
    assert len(features) == 3  # the stride-16 embedding and the two high-resolution maps
    losses = train_loop.interactive_losses(model, features, masks, np.random.default_rng(0),
                                           TrainConfig(points=1, silent=0))
    assert float(losses["loss_class"].detach()) > 0
    assert model.sam_mask_decoder.training is False  # decoder back in eval mode after the training passes


def test_sam2_train_cli_decoder_mode(tiny_sam2, one_image, tmp_path, capsys):
    yaml_path, checkpoint = tiny_sam2
    code = main(["train", "--model", str(yaml_path), "--checkpoint", str(checkpoint), "--data", str(one_image),
                 "--mode", "decoder", "-o", str(tmp_path / "run"), "--epochs", "1", "--points", "1", "--silent", "0",
                 "--quiet"])
    assert code == 0
    printed = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed.parent == tmp_path / "run" and printed.name in ("best.pth", "last.pth")
    assert isinstance(load_model(yaml_path, checkpoint=printed), Sam2)
    assert sorted(p.name for p in (tmp_path / "run" / "features").rglob("*.pt")) == ["000000_0.pt"]


def test_sam2_run_checkpoint_loads_strictly_in_the_official_sam2(tiny_sam2, one_image, tmp_path):
    if not BENCH_PYTHON.is_file() or not (SHARED / "reference" / "tv_shim.py").is_file():
        pytest.skip("the benchmark environment with the sam2 package (and its torchvision shim) is not here")
    yaml_path, checkpoint = tiny_sam2
    train(yaml_path, one_image, tmp_path, TrainConfig(mode="lora", **FAST), checkpoint=checkpoint, progress=False)
    document = yaml.safe_load(yaml_path.read_text())
    # the official MaskDownSampler's width defaults to 256; segany's tiny config implies its in_dim
    document["model"]["memory_encoder"]["mask_downsampler"]["embed_dim"] = TINY_DIM
    official_yaml = tmp_path / "official.yaml"
    official_yaml.write_text(yaml.safe_dump(document, sort_keys=False))
    code = ("import sys; sys.path.insert(0, sys.argv[3]); from benchmarks.common import import_official; import_official(); "
            "import torch, yaml; from hydra.utils import instantiate; from omegaconf import OmegaConf; "
            "model = instantiate(OmegaConf.create(yaml.safe_load(open(sys.argv[1]))).model, _recursive_=True); "
            "model.load_state_dict(torch.load(sys.argv[2], map_location='cpu', weights_only=True)['model']); print('ok')")
    proc = subprocess.run([str(BENCH_PYTHON), "-c", code, str(official_yaml), str(tmp_path / "last.pth"), str(REPO)],
                          capture_output=True, text=True, check=False, timeout=120,
                          env={**os.environ, "SEGANY_SHARED": str(SHARED)})
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_feature_cache_recomputes_a_file_of_the_earlier_layout(tmp_path):
    cache = FeatureCache(tmp_path, "abc")
    path = tmp_path / "abc" / "000000_0.pt"
    path.parent.mkdir(parents=True)
    masks = np.zeros((1, 4, 4), bool)
    torch.save({"embedding": torch.zeros(1, 2, 1, 1), "masks": torch.from_numpy(masks)}, path)
    fresh = (torch.ones(1, 2, 1, 1), torch.ones(1, 1, 2, 2))
    features, _ = cache.get(0, False, lambda: (fresh, masks))
    assert cache.computed == 1 and all(torch.equal(a, b) for a, b in zip(features, fresh))
    assert cache.get(0, False, lambda: pytest.fail("must come from disk"))[0][1].shape == (1, 1, 2, 2)


def test_sam2_a_batched_step_equals_its_images_one_by_one(tiny_sam2, tmp_path):
    yaml_path, checkpoint = tiny_sam2
    data = write_shapes_dataset(tmp_path, 2, size=TINY_IMAGE_SIZE, seed=3)
    assert_a_batched_step_equals_its_images_one_by_one(load_model(yaml_path, checkpoint=checkpoint), data)
