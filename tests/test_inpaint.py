"""Remove / fill / replace anything: the inpainting engines, their inputs, and the commands."""
from __future__ import annotations

import io
import json
import typing
import urllib.error
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from segany.cli import main
from segany.data.images import ORIENTATION_TAG, load_image, save_image
from segany.errors import CheckpointError, ChecksumError, InpaintError, WeightsUnavailableError
from segany.inpaint import ClassicInpainter, LamaInpainter, check_inputs, dilate_mask, method_names
from segany.inpaint.base import hole_depth
from segany.inpaint.lama import pad_to_multiple

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "shapes.png"


def gradient(height: int = 96, width: int = 128) -> np.ndarray:
    """A smooth RGB image: each channel a different plane through the pixel grid."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = [40 + 0.8 * x + 0.3 * y, 200 - 0.5 * x + 0.2 * y, 90 + 0.6 * y + 0.1 * x]
    return np.clip(np.stack(planes, axis=-1), 0, 255).astype(np.uint8)


def hole(height: int = 64, width: int = 80) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (width // 2, height // 2), (16, 10), 20, 0, 360, 1, -1)
    return mask.astype(bool)


@pytest.mark.parametrize("method", method_names())
@pytest.mark.parametrize("multiscale", [False, True])
def test_a_hole_in_a_gradient_comes_back_close_to_the_gradient(method: str, multiscale: bool) -> None:
    image, mask = gradient(64, 80), hole()
    damaged = image.copy()
    damaged[mask] = (255, 0, 255)  # the engine must not use what is under the hole
    out = ClassicInpainter(method, multiscale=multiscale, max_depth=4).inpaint(damaged, mask)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out[~mask] == damaged[~mask]).all(), "known pixels changed"
    error = np.abs(out.astype(int) - image.astype(int))[mask].mean()
    flat = np.abs(image[~mask].mean(0) - image[mask].astype(float)).mean()  # filling with the mean colour
    if method == "shiftmap":  # copies patches of the image: no smooth extrapolation, but a plausible fill
        assert error < 2 * flat, (error, flat)
    else:
        assert error < 3 and error < flat / 2, (error, flat)


def test_coarse_to_fine_helps_a_deep_hole_in_a_gradient() -> None:
    image = gradient(160, 200)
    mask = np.zeros(image.shape[:2], bool)
    mask[30:130, 50:150] = True
    assert hole_depth(mask) > 40
    errors = {ms: np.abs(ClassicInpainter("telea", multiscale=ms).inpaint(image, mask).astype(int) - image)[mask].mean()
              for ms in (False, True)}
    assert errors[True] < errors[False], errors


def test_bad_inputs_are_typed_errors() -> None:
    image = gradient()
    with pytest.raises(InpaintError, match="size"):
        check_inputs(image, np.ones((10, 10), bool))
    with pytest.raises(InpaintError, match="empty"):
        ClassicInpainter().inpaint(image, np.zeros(image.shape[:2], bool))
    with pytest.raises(InpaintError, match="whole image"):
        ClassicInpainter().inpaint(image, np.ones(image.shape[:2], bool))
    with pytest.raises(InpaintError, match="unknown inpainting method"):
        ClassicInpainter("blur")
    with pytest.raises(InpaintError, match=">= 0"):
        dilate_mask(hole(), -1)


def test_dilation_grows_the_mask_by_the_given_pixels() -> None:
    mask = np.zeros((41, 41), bool)
    mask[20, 20] = True
    grown = dilate_mask(mask, 5)
    distance = np.hypot(*np.mgrid[-20:21, -20:21])
    assert grown[distance <= 4.5].all() and not grown[distance > 5.5].any()
    assert (dilate_mask(mask, 0) == mask).all()


class StandIn(torch.nn.Module):
    """LaMa's TorchScript contract: (1x3xHxW in 0..1, 1x1xHxW 0/1) with H, W multiples of 8."""

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        assert image.shape[2] % 8 == 0 and image.shape[3] % 8 == 0, "not padded to a multiple of 8"
        return image * (1 - mask) + 0.5 * mask


@pytest.fixture(scope="module")
def lama_stand_in(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lama") / "big-lama.pt"
    torch.jit.save(torch.jit.script(StandIn()), str(path))
    return path


def test_lama_pads_runs_and_crops(lama_stand_in: Path) -> None:
    image, mask = gradient(45, 70), np.zeros((45, 70), bool)
    mask[10:20, 30:50] = True
    out = LamaInpainter(checkpoint=lama_stand_in).inpaint(image, mask)
    assert out.shape == image.shape
    assert (out[mask] == 127).all()  # 0.5 * 255 truncated, as IOPaint converts
    assert (out[~mask] == image[~mask]).all()
    padded = pad_to_multiple(image)
    assert padded.shape == (48, 72, 3) and (padded[45:, :70] == image[44:41:-1]).all()  # mirrored rows


def test_lama_checkpoint_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not torchscript")
    with pytest.raises(CheckpointError, match="not a LaMa TorchScript"):
        LamaInpainter(checkpoint=bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        LamaInpainter(checkpoint=tmp_path / "missing.pt")
    monkeypatch.setenv("SEGANY_HOME", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(WeightsUnavailableError, match="big-lama.*github.com/Sanster.*sha256 344c77bb.*--lama-checkpoint"):
        LamaInpainter()

    class Response(io.BytesIO):
        headers: typing.ClassVar[dict] = {}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: Response(b"tampered"))
    with pytest.raises(ChecksumError, match="expected 344c77bb"):
        LamaInpainter()
    assert not any((tmp_path / "cache").iterdir()), "a failed download left a file"


def test_remove_command_offline_makes_the_object_go(tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    assert main(["remove", str(EXAMPLE), "--point", "420,200", "--model", "classic", "-o", str(out)]) == 0
    image, result = load_image(EXAMPLE), load_image(out)
    assert result.shape == image.shape and (tmp_path / "out_side_by_side.png").exists()
    disc = np.zeros(image.shape[:2], np.uint8)
    cv2.circle(disc, (420, 200), 40, 1, -1)  # the orange disc inside the green one
    green = image[150, 340].astype(float)  # the green ring around it
    before = np.abs(image[disc > 0].astype(float) - green).mean()
    after = np.abs(result[disc > 0].astype(float) - green).mean()
    assert before > 60 and after < 15, (before, after)


def test_remove_with_a_mask_file_keeps_size_format_and_exif(tmp_path: Path) -> None:
    image = gradient(60, 90)
    source = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6  # stored sideways: viewers rotate it 90 degrees
    Image.fromarray(image).save(source, exif=exif.tobytes(), quality=95)
    upright = load_image(source)
    assert upright.shape == (90, 60, 3)
    mask = np.zeros(upright.shape[:2], np.uint8)
    mask[30:50, 20:40] = 255
    save_image(tmp_path / "mask.png", np.repeat(mask[..., None], 3, axis=2))
    out = tmp_path / "clean.jpg"
    assert main(["remove", str(source), "--mask", str(tmp_path / "mask.png"), "--dilate", "0", "-o", str(out)]) == 0
    with Image.open(out) as result:
        assert result.format == "JPEG" and result.size == (60, 90)
        assert result.getexif().get(ORIENTATION_TAG) == 1
    assert load_image(out).shape == upright.shape
    wrong = tmp_path / "wrong.png"
    save_image(wrong, np.zeros((10, 10, 3), np.uint8))
    assert main(["remove", str(source), "--mask", str(wrong), "-o", str(tmp_path / "x.png")]) == 2


def test_remove_from_a_video_writes_every_frame(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(4):
        frame = gradient(64, 80)
        cv2.circle(frame, (30 + 3 * i, 32), 9, (250, 120, 20), -1)
        save_image(frames / f"{i:05d}.png", frame)
    out = tmp_path / "removed.mp4"
    assert main(["remove", str(frames), "--point", "30,32", "--model", "classic", "--fps", "5", "-o", str(out)]) == 0
    with av.open(str(out)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 4
    orange = np.array([250, 120, 20], float)
    assert np.abs(decoded[0][28:37, 26:35].astype(float) - orange).sum(-1).min() > 100  # no orange left


def test_save_image_refuses_an_unknown_suffix(tmp_path: Path) -> None:
    from segany.errors import ImageError

    with pytest.raises(ImageError, match="format"):
        save_image(tmp_path / "out.unknown", gradient())


def _tiny_sd_pipeline(folder: Path) -> Path:
    """A random Stable Diffusion inpainting pipeline small enough for a test, saved as a model folder."""
    diffusers = pytest.importorskip("diffusers")
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, **{c: 2 + i for i, c in enumerate(letters)},
             **{c + "</w>": 28 + i for i, c in enumerate(letters)}}
    (folder / "tok").mkdir(parents=True)
    (folder / "tok" / "vocab.json").write_text(json.dumps(vocab))
    (folder / "tok" / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "tok" / "vocab.json"), str(folder / "tok" / "merges.txt"),
                              pad_token="<|endoftext|>", model_max_length=77)
    text = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, vocab_size=len(vocab),
                                        hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                        num_hidden_layers=2, max_position_embeddings=77))
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=9, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32)
    vae = diffusers.AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                                  down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    pipeline = diffusers.StableDiffusionInpaintPipeline(
        vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=diffusers.DDIMScheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(folder / "model")
    return folder / "model"


def test_fill_and_replace_run_a_diffusers_pipeline(tmp_path: Path) -> None:
    model = _tiny_sd_pipeline(tmp_path)
    image = gradient(48, 64)
    source = tmp_path / "photo.png"
    save_image(source, image)
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[10:30, 20:40] = 255
    save_image(tmp_path / "mask.png", np.repeat(mask[..., None], 3, axis=2))
    common = ["--mask", str(tmp_path / "mask.png"), "--sd-model", str(model), "--steps", "2", "--size", "32",
              "--text", "a red car"]
    assert main(["fill", str(source), *common, "--dilate", "0", "-o", str(tmp_path / "fill.png")]) == 0
    filled = load_image(tmp_path / "fill.png")
    inside = mask > 0
    assert (filled[~inside] == image[~inside]).all() and (filled[inside] != image[inside]).any()
    assert main(["replace", str(source), *common, "-o", str(tmp_path / "replace.png")]) == 0
    replaced = load_image(tmp_path / "replace.png")
    assert (replaced[inside] == image[inside]).all() and (replaced[~inside] != image[~inside]).any()


def test_fill_offline_names_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("diffusers")
    from segany.inpaint.diffusion import load_pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsUnavailableError, match="someone/no-such-inpainting-model.*--sd-model DIR"):
        load_pipeline("someone/no-such-inpainting-model")


def test_annotator_remove_preview_of_an_accepted_mask(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from segany import load_model
    from segany.masks import encode_rle
    from segany.serve.app import create_app
    from test_serve_api import local_client

    image = load_image(EXAMPLE)
    (tmp_path / "images").mkdir()
    save_image(tmp_path / "images" / "shapes.png", image)
    client = local_client(create_app(tmp_path / "images", load_model("classic"), tmp_path / "coco.json"))
    image_id = client.get("/api/images").json()[0]["id"]
    disc = np.zeros(image.shape[:2], np.uint8)
    cv2.circle(disc, (420, 200), 48, 1, -1)  # the orange disc and a little of the green around it
    rle = encode_rle(disc.astype(bool))
    ann = client.post(f"/api/images/{image_id}/annotations",
                      json={"category": "disc", "rle": {"size": rle["size"], "counts": rle["counts"]}}).json()
    answer = client.post(f"/api/annotations/{ann['id']}/remove?dilate=0")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    removed = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"))
    inside = disc > 0
    assert (removed[~inside] == image[~inside]).all()
    green = image[150, 340].astype(float)
    assert np.abs(removed[inside].astype(float) - green).mean() < 15 < np.abs(image[inside].astype(float) - green).mean()
    assert client.post("/api/annotations/999/remove").status_code == 404
    assert client.post(f"/api/annotations/{ann['id']}/remove?dilate=-1").status_code == 422
