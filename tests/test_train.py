"""segany.train end to end on tiny models and a seeded synthetic dataset: which parameters each mode
trains, resume == uninterrupted, the exported checkpoint loads strictly (segany, the official builder),
LoRA merge == adapted model, the CLI."""
from __future__ import annotations

import json
import math
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED, torch_threads
from segany.build import load_model
from segany.cli import main
from segany.errors import ConfigError, SettingsMismatchError
from segany.models.sam import Sam
from segany.registry import config_from_dict, config_to_dict
from segany.train import TrainConfig, train
from segany.train import loop as train_loop
from segany.train.data import NO_AUGMENT
from segany.train.modes import LoRALinear, add_lora, official_state_dict, prepare_mode
from segany.train.synthetic import write_shapes_dataset
from tiny_models import tiny_mobilesam_config, tiny_sam_config

REPO = Path(__file__).resolve().parent.parent
BENCH_PYTHON = Path(os.environ.get("SEGANY_BENCH_PYTHON", "/work/main/.venv-bench/bin/python"))
FAST = {"epochs": 1, "points": 1, "silent": 1, "max_objects": 2, "lr": 1e-3}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread (and do not fight the other tests' workers)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), 2, size=64, seed=3)


@pytest.fixture(scope="module")
def one_image(tmp_path_factory) -> Path:
    return write_shapes_dataset(tmp_path_factory.mktemp("one"), 1, size=64, seed=3)


def _config():
    return tiny_sam_config(image_size=64, patch_size=8)


def _initial(config) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return Sam(config).state_dict()


@pytest.mark.parametrize("mode", ["decoder", "lora", "full"])
def test_one_step_changes_exactly_the_mode_parameters(one_image, tmp_path, mode):
    config = _config()
    before = _initial(config)
    train(config, one_image, tmp_path, TrainConfig(mode=mode, box_probability=0.0, **FAST), progress=False)
    after = torch.load(tmp_path / "last.pth", weights_only=True)
    assert set(after) == set(before)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    encoder = {k for k in changed if k.startswith("image_encoder.")}
    attention = {k for k in before if k.startswith("image_encoder.") and ".attn." in k and k.endswith(("qkv.weight", "proj.weight"))}
    assert {k for k in before if k.startswith("mask_decoder.transformer.")} <= changed
    if mode == "decoder":
        assert not encoder
    elif mode == "lora":
        assert encoder == attention  # merged adapters: the attention weights, nothing else of the encoder
    else:
        assert {k for k in before if k.startswith("image_encoder.blocks.")} <= encoder


@pytest.mark.parametrize("images_per_step", [1, 2])
def test_resume_after_an_interruption_equals_the_uninterrupted_run(shapes, tmp_path, monkeypatch, images_per_step):
    config = TrainConfig(mode="full", images_per_step=images_per_step, **{**FAST, "epochs": 2})
    train(_config(), shapes, tmp_path / "whole", config, val=shapes, progress=False)
    real_validate = train_loop.validate
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(train_loop, "validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(_config(), shapes, tmp_path / "cut", config, val=shapes, progress=False)
    monkeypatch.setattr(train_loop, "validate", real_validate)
    resumed = train(_config(), shapes, tmp_path / "cut", config, val=shapes, progress=False)
    whole = torch.load(tmp_path / "whole" / "last.pth", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "last.pth", weights_only=True)
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    assert [m["epoch"] for m in resumed.metrics] == [1, 2]
    steps = torch.load(tmp_path / "cut" / train_loop.STATE_FILE, weights_only=False)["scheduler"]["last_epoch"]
    assert steps == 2 * math.ceil(2 / images_per_step)  # an epoch: ceil(images / images_per_step) steps
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert lines == (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
    with pytest.raises(SettingsMismatchError, match="lr"):
        train(_config(), shapes, tmp_path / "cut", TrainConfig(mode="full", **{**FAST, "epochs": 2, "lr": 1e-2}),
              progress=False)


def test_a_run_from_before_a_new_setting_resumes_with_its_default(one_image, tmp_path):
    config = TrainConfig(mode="decoder", **FAST)
    train(_config(), one_image, tmp_path, config, progress=False)
    state_path = tmp_path / train_loop.STATE_FILE
    state = torch.load(state_path, weights_only=False)
    del state["config"]["images_per_step"]  # as written before the setting existed
    torch.save(state, state_path)
    assert len(train(_config(), one_image, tmp_path, config, progress=False).metrics) == 1
    with pytest.raises(SettingsMismatchError, match="images_per_step"):
        train(_config(), one_image, tmp_path, TrainConfig(mode="decoder", images_per_step=2, **FAST), progress=False)


def test_a_training_image_is_read_once_for_all_its_objects(shapes, monkeypatch):
    from segany.data import datasets, images
    from segany.train import data as train_data

    image = train_data.load_train_images(shapes)[0]
    expected_image, expected_masks = image.samples[0].load()[0], np.stack([s.load()[1].mask for s in image.samples])
    reads = []
    for module in (datasets, train_data):  # wherever the image is read from
        monkeypatch.setattr(module, "load_image", lambda path: reads.append(path) or images.load_image(path), raising=False)
    loaded, masks = image.load()
    assert len(image.samples) > 1 and reads == [image.path]
    assert np.array_equal(loaded, expected_image) and np.array_equal(masks, expected_masks)


def test_the_optimizer_is_the_fused_adamw_on_cpu(one_image, tmp_path):
    train(_config(), one_image, tmp_path, TrainConfig(mode="decoder", **FAST), progress=False)
    state = torch.load(tmp_path / train_loop.STATE_FILE, weights_only=False)
    assert state["optimizer"]["param_groups"][0]["fused"] is True


def test_encoder_lr_scale_scales_only_the_encoder_step(one_image, tmp_path):
    """AdamW's first step is ~lr * (sign of the gradient + weight decay * weight): with the encoder's lr a
    quarter of the rest, its weights move a quarter as far and every other weight exactly as far."""
    config = _config()
    before = _initial(config)
    deltas = []
    for scale in (1.0, 0.25):
        out = tmp_path / str(scale)
        settings = TrainConfig(mode="full", box_probability=1.0, encoder_lr_scale=scale, augment=NO_AUGMENT,
                               warmup_steps=0, **{**FAST, "points": 0, "silent": 0})
        train(config, one_image, out, settings, progress=False)
        after = torch.load(out / "last.pth", weights_only=True)
        deltas.append({k: after[k] - before[k] for k in before if before[k].is_floating_point()})
    full, scaled = deltas
    encoder = [k for k in full if k.startswith("image_encoder.blocks.") and full[k].abs().max() > 0]
    assert encoder
    for k in encoder:
        torch.testing.assert_close(scaled[k], 0.25 * full[k], rtol=1e-3, atol=1e-7)
    for k in full:
        if not k.startswith("image_encoder."):
            torch.testing.assert_close(scaled[k], full[k], rtol=0, atol=0)
    with pytest.raises(ConfigError, match="encoder_lr_scale"):
        TrainConfig(encoder_lr_scale=0)


def test_run_folder_outputs_and_strict_reload(shapes, tmp_path):
    result = train(_config(), shapes, tmp_path, TrainConfig(mode="lora", **FAST), val=shapes, progress=False)
    for name in ("last.pth", "best.pth", "config.json", "metrics.jsonl", "curves.png", "trained_on.json"):
        assert (tmp_path / name).is_file(), name
    record = json.loads((tmp_path / "trained_on.json").read_text())
    assert record["settings"]["mode"] == "lora" and record["images"] == ["shapes_00000.png", "shapes_00001.png"]
    row = result.metrics[0]
    assert 0 <= row["val_box_miou"] <= 1 and 0 <= row["val_point_miou"] <= 1 and np.isfinite(row["val_loss"])
    model = load_model(tmp_path / "config.json", checkpoint=tmp_path / "best.pth")  # strict: official keys only
    assert isinstance(model, Sam) and not any(isinstance(m, LoRALinear) for m in model.modules())


def test_decoder_mode_caches_features_once(shapes, tmp_path):
    train(_config(), shapes, tmp_path, TrainConfig(mode="decoder", augment=NO_AUGMENT, **FAST), progress=False)
    cached = sorted(p.name for p in (tmp_path / "features").rglob("*.pt"))
    assert cached == ["000000_0.pt", "000001_0.pt"]
    stamps = [p.stat().st_mtime_ns for p in sorted((tmp_path / "features").rglob("*.pt"))]
    train(_config(), shapes, tmp_path, TrainConfig(mode="decoder", augment=NO_AUGMENT, **{**FAST, "epochs": 2}),
          progress=False, resume=False)
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "features").rglob("*.pt"))] == stamps


def test_decoder_mode_trains_a_mobilesam(one_image, tmp_path):
    """TinyViT's batch norms hold 0-d step counters: the feature cache's weight fingerprint must take them."""
    config = tiny_mobilesam_config()
    before = _initial(config)
    train(config, one_image, tmp_path, TrainConfig(mode="decoder", **FAST), progress=False)
    after = torch.load(tmp_path / "last.pth", weights_only=True)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("mask_decoder.", "prompt_encoder.")) for k in changed)


@pytest.mark.parametrize("kind", ["sam", "mobilesam"])
def test_lora_merge_gives_the_adapted_outputs(kind):
    config = tiny_sam_config() if kind == "sam" else tiny_mobilesam_config()
    torch.manual_seed(1)
    model = Sam(config).eval()
    prepare_mode(model, "lora", lora_rank=2, lora_alpha=4.0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_b.normal_(0, 0.2)
        image = torch.rand(1, 3, config.image_size, config.image_size) * 255
        adapted = model.image_encoder(model.preprocess(image))
        merged = Sam(config).eval()
        merged.load_state_dict(official_state_dict(model), strict=True)
        plain = merged.image_encoder(merged.preprocess(image))
    assert (adapted - plain).abs().max() < 1e-4
    assert (adapted - Sam(config).eval().image_encoder(model.preprocess(image))).abs().max() > 1e-2


def test_lora_and_mode_errors_are_typed():
    model = Sam(_config())
    with pytest.raises(ConfigError, match="rank"):
        add_lora(model, rank=0)
    with pytest.raises(ConfigError, match="unknown training mode"):
        prepare_mode(model, "everything")
    with pytest.raises(ConfigError):
        TrainConfig(epochs=0)


OFFICIAL_ARCH = {"name": "tiny_official", "builder_args": {"encoder_embed_dim": 48, "encoder_depth": 2,
                                                           "encoder_num_heads": 2, "encoder_global_attn_indexes": [1]}}


def test_export_loads_with_the_official_builder(tmp_path):
    if not BENCH_PYTHON.is_file() or not (SHARED / "reference" / "tv_shim.py").is_file():
        pytest.skip("the benchmark environment with segment_anything (and its torchvision shim) is not here")
    config = config_from_dict(OFFICIAL_ARCH)
    model = Sam(config)
    prepare_mode(model, "lora")
    path = tmp_path / "lora.pth"
    torch.save(official_state_dict(model), path)
    args = OFFICIAL_ARCH["builder_args"]
    code = ("import sys; sys.path.insert(0, sys.argv[2]); from benchmarks.common import import_official; import_official(); "
            "from segment_anything.build_sam import _build_sam; "
            f"_build_sam({args['encoder_embed_dim']}, {args['encoder_depth']}, {args['encoder_num_heads']}, "
            f"{args['encoder_global_attn_indexes']}, checkpoint=sys.argv[1]); print('ok')")
    proc = subprocess.run([str(BENCH_PYTHON), "-c", code, str(path), str(REPO)], capture_output=True, text=True, check=False,
                          timeout=120, env={**os.environ, "SEGANY_SHARED": str(SHARED)})
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_cli_train_decoder_run(shapes, tmp_path, capsys):
    config_path = tmp_path / "tiny.json"
    config_path.write_text(json.dumps(config_to_dict(_config())))
    code = main(["train", "--model", str(config_path), "--data", str(shapes), "--val", str(shapes), "--mode", "decoder",
                 "-o", str(tmp_path / "run"), "--epochs", "1", "--points", "1", "--silent", "0", "--both-prompts",
                 "--encoder-lr-scale", "2", "--box-noise", "0.05", "--quiet"])
    assert code == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "run" / "best.pth")
    settings = json.loads((tmp_path / "run" / "trained_on.json").read_text())["settings"]
    assert settings["both_prompts"] is True and settings["encoder_lr_scale"] == 2.0 and settings["box_noise"] == 0.05
    assert load_model(tmp_path / "run" / "config.json", checkpoint=tmp_path / "run" / "best.pth")


def test_cli_train_bad_data_is_a_clear_error(tmp_path, capsys):
    code = main(["train", "--model", "vit_t", "--data", str(tmp_path / "nothing.json"), "-o", str(tmp_path / "run")])
    assert code == 2 and "nothing.json" in capsys.readouterr().err


def test_gradient_checkpointing_gives_the_same_step(one_image, tmp_path):
    runs = {}
    for flag in (False, True):
        train(_config(), one_image, tmp_path / str(flag), TrainConfig(mode="full", gradient_checkpointing=flag, **FAST),
              progress=False)
        runs[flag] = torch.load(tmp_path / str(flag) / "last.pth", weights_only=True)
    assert all(torch.allclose(runs[False][k], runs[True][k], atol=1e-6) for k in runs[False])


def test_cli_trains_on_the_coco_file_of_segany_everything(one_image, tmp_path, capsys):
    """The data engine's loop: `segany everything --format coco` output (image names relative to its input
    folder, given with --images) is training data as it is."""
    images = one_image.parent.parent / "images"
    assert main(["everything", str(images), "-o", str(tmp_path / "auto"), "--format", "coco", "--model", "classic"]) == 0
    config_path = tmp_path / "tiny.json"
    config_path.write_text(json.dumps(config_to_dict(_config())))
    code = main(["train", "--model", str(config_path), "--data", str(tmp_path / "auto" / "annotations.json"),
                 "--images", str(images), "--mode", "decoder", "-o", str(tmp_path / "run"), "--epochs", "1",
                 "--points", "1", "--silent", "0", "--max-objects", "2", "--quiet"])
    assert code == 0 and (tmp_path / "run" / "last.pth").is_file()
    assert json.loads((tmp_path / "run" / "trained_on.json").read_text())["images"] == ["shapes_00000.png"]


def test_full_mode_overfits_one_image_from_its_boxes(one_image):
    """The training pieces (model-frame masks, prompts, decode, losses, validation) fit together: a random
    tiny SAM overfits one image from its boxes. A prompt in another frame than its mask, a target off the
    logits or a dead gradient keeps the held-out box IoU at ~0 (random init, after ~90 steps of empty masks)."""
    torch.manual_seed(0)
    model = Sam(_config())
    config = TrainConfig(mode="full", points=0, silent=0, box_probability=1.0, augment=NO_AUGMENT)
    prepare_mode(model, "full")
    frames = train_loop._Frames(model, train_loop.load_train_images(one_image), None, torch.device("cpu"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=config.weight_decay)
    rng = np.random.default_rng(0)
    before = train_loop.validate(model, frames.all_plain(), config)["val_box_miou"]
    for _ in range(160):
        embedding, masks = frames.training(0, config.augment, rng)
        loss = train_loop.interactive_losses(model, embedding, masks, rng, config)["core_loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = train_loop.validate(model, frames.all_plain(), config)["val_box_miou"]
    assert before < 0.2 and after > 0.8, (before, after)


def test_step_masks_caps_the_objects_and_repeats_each_for_its_own_prompts():
    masks = np.zeros((5, 8, 8), bool)
    for i in range(5):
        masks[i, i, :] = True  # object i: row i
    config = TrainConfig(max_objects=3, prompts_per_object=2)
    chosen = train_loop.step_masks(masks, np.random.default_rng(0), config)
    assert chosen.shape == (6, 8, 8)
    rows = [int(np.flatnonzero(m.any(1))[0]) for m in chosen]
    assert rows[0::2] == rows[1::2] and len(set(rows)) == 3  # 3 distinct objects, each twice in a row
    assert train_loop.step_masks(masks, np.random.default_rng(0), TrainConfig(max_objects=8)).shape == (5, 8, 8)
    with pytest.raises(ConfigError, match="prompts_per_object"):
        TrainConfig(prompts_per_object=0)
    with pytest.raises(ConfigError, match="images_per_step"):
        TrainConfig(images_per_step=0)


def test_both_prompts_trains_the_box_and_the_point_path_every_step(one_image, monkeypatch):
    """``both_prompts``: the step's loss is the mean of the simulation from every object's box and the one
    from a point, each decoded (single-mask for the boxes, multimask for the points) in every step."""
    torch.manual_seed(0)
    model = Sam(_config())
    frames = train_loop._Frames(model, train_loop.load_train_images(one_image), None, torch.device("cpu"))
    config = TrainConfig(mode="full", points=1, silent=0, augment=NO_AUGMENT, both_prompts=True)
    features, masks, image_of = frames.training_step([0], np.random.default_rng(0), config)
    decoded = []
    plain_decode = train_loop.decode

    def recording_decode(model, features, state, mask_input, multimask):
        decoded.append(("box" if state.boxes is not None else "point", multimask, mask_input is None))
        return plain_decode(model, features, state, mask_input, multimask)

    monkeypatch.setattr(train_loop, "decode", recording_decode)
    loss = train_loop.step_loss(model, features, masks, np.random.default_rng(1), config, image_of)
    firsts = [(kind, multimask) for kind, multimask, first in decoded if first]
    assert firsts == [("box", False), ("point", True)]
    rng = np.random.default_rng(1)
    box, point = (train_loop.interactive_losses(model, features, masks, rng, replace(config, box_probability=p),
                                                image_of)["core_loss"] for p in (1.0, 0.0))
    assert not torch.isclose(box, point)
    torch.testing.assert_close(loss, (box + point) / 2)


def assert_a_batched_step_equals_its_images_one_by_one(model: torch.nn.Module, data: Path) -> None:
    """Full mode, exact-box prompts: the loss and gradients of a step of 2 images (one encoder batch, all
    objects decoded together) are their one-image steps' averaged per object. Feeding an object another
    image's embedding, or averaging per image, breaks the equality."""
    prepare_mode(model, "full")
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    config = TrainConfig(mode="full", points=0, silent=0, box_probability=1.0, box_noise=0.0, augment=NO_AUGMENT,
                         images_per_step=2)
    frames = train_loop._Frames(model, train_loop.load_train_images(data), None, torch.device("cpu"))

    def step(indices: list[int]) -> tuple[int, torch.Tensor, list[torch.Tensor]]:
        rng = np.random.default_rng(0)
        features, masks, image_of = frames.training_step(indices, rng, config)
        loss = train_loop.interactive_losses(model, features, masks, rng, config, image_of)["core_loss"]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return len(masks), loss.detach(), [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]

    count, loss, grads = step([0, 1])
    (count0, loss0, grads0), (count1, loss1, grads1) = step([0]), step([1])
    assert count0 and count1 and count == count0 + count1
    torch.testing.assert_close(loss, (count0 * loss0 + count1 * loss1) / count)
    for grad, grad0, grad1 in zip(grads, grads0, grads1):
        torch.testing.assert_close(grad, (count0 * grad0 + count1 * grad1) / count, rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for name, g in zip(names, grads) if name.startswith("image_encoder."))  # batched encoder


def test_a_batched_step_equals_its_images_one_by_one(shapes):
    torch.manual_seed(0)
    assert_a_batched_step_equals_its_images_one_by_one(Sam(_config()), shapes)
