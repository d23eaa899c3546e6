"""CPU time per image of each text route on the tiny random models, and the FLOPs of the real ones.

    PYTHONPATH=src:tests SEGANY_SHARED=../shared python benchmarks/text_routes.py [--flops]

Tiny models: tests/tiny_text_models.py + tests/tiny_models.py (SAM at 128 px). ``--flops`` counts
one forward pass of randomly initialised models of the real architectures (default configs of
grounding-dino-tiny, owlv2-base-patch16, clip-vit-base-patch32, blip-base, SAM ViT-B / MobileSAM)
with torch's FlopCounterMode, on a 640x480 image at each processor's input size.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

PHOTO = Path(os.environ.get("SEGANY_SHARED", "../shared")) / "data/coco_val2017_tiny/images/000000005001.jpg"


def cpu_seconds(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    start = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - start) / repeat


def tiny_routes() -> None:
    from segany import MaskGenerator, Predictor
    from segany.data.images import load_image
    from segany.text import BlipCaptioner, Clip, ClipTextPredictor, GroundingDino, Owlv2, TextLabeler, TextPredictor
    from tiny_models import tiny_random_model
    from tiny_text_models import tiny_text_model_folders

    folders, sam, photo = tiny_text_model_folders(), tiny_random_model("sam"), load_image(PHOTO)
    routes = {
        "grounding-dino": TextPredictor(GroundingDino(folders["gdino"]), Predictor(sam)),
        "owlv2": TextPredictor(Owlv2(folders["owlv2"]), Predictor(sam)),
        "clip": ClipTextPredictor(MaskGenerator(sam, output_mode="coco_rle"), Clip(folders["clip"])),
    }
    for name, route in routes.items():
        result = route.predict(photo, "cat. dog. person.")
        print(f"{name:15} {cpu_seconds(lambda route=route: route.predict(photo, 'cat. dog. person.')):.3f} s CPU/image "
              f"({len(result)} masks, {photo.shape[1]}x{photo.shape[0]})")
    labeler = TextLabeler(routes["grounding-dino"], captioner=BlipCaptioner(folders["blip"]))
    print(f"{'caption+gdino':15} {cpu_seconds(lambda: labeler.generate(photo)):.3f} s CPU/image")


def gflops(model: torch.nn.Module, *args, **kwargs) -> float:
    from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    try:
        with torch.inference_mode(), FakeTensorMode(allow_non_fake_inputs=True), counter:  # shapes only
            model(*args, **kwargs)
    except DataDependentOutputException:  # Grounding DINO reads values (valid ratios): compute for real
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            model(*args, **kwargs)
    return counter.get_total_flops() / 1e9


def real_flops(skip_gdino: bool = False) -> None:
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        CLIPConfig,
        CLIPModel,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        Owlv2Config,
        Owlv2ForObjectDetection,
    )

    from segany.build import build_model

    torch.manual_seed(0)
    ids = torch.randint(1000, 2000, (1, 8))
    if skip_gdino:
        print("grounding-dino-tiny: skipped")
    else:
        gdino = GroundingDinoForObjectDetection(GroundingDinoConfig()).eval()
        print(f"grounding-dino-tiny 800x1067: {gflops(gdino, pixel_values=torch.rand(1, 3, 800, 1067), input_ids=ids):.0f} GFLOPs")
        del gdino
    owl = Owlv2ForObjectDetection(Owlv2Config(vision_config={"image_size": 960})).eval()
    print(f"owlv2-base-patch16 960x960, 3 queries: "
          f"{gflops(owl, pixel_values=torch.rand(1, 3, 960, 960), input_ids=ids[:, :8].repeat(3, 1)):.0f} GFLOPs")
    del owl
    clip = CLIPModel(CLIPConfig()).eval()
    print(f"clip-vit-base-patch32 per crop (224x224): {gflops(clip.get_image_features, pixel_values=torch.rand(1, 3, 224, 224)):.1f} GFLOPs")
    del clip
    blip = BlipForConditionalGeneration(BlipConfig()).eval()
    pixels = torch.rand(1, 3, 384, 384)
    print(f"blip-base 384x384, vision + 1 decoder step of 8 tokens: {gflops(blip, pixel_values=pixels, input_ids=ids):.0f} GFLOPs")
    del blip
    for name in ("vit_b", "vit_t"):
        sam = build_model(name).eval()
        print(f"SAM {name} image encoder 1024x1024: {gflops(sam.image_encoder, torch.rand(1, 3, 1024, 1024)):.0f} GFLOPs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--flops", action="store_true", help="FLOPs of the real architectures instead")
    parser.add_argument("--skip-gdino", action="store_true", help="--flops without Grounding DINO (computed for real: slow)")
    args = parser.parse_args()
    torch.set_num_threads(1 if not args.flops else 2)
    real_flops(args.skip_gdino) if args.flops else tiny_routes()
