"""Tiny randomly initialised transformers models for the text-prompt tests (no weights needed).

Real architectures at toy sizes, seeded, each with a tiny tokenizer whose vocabulary is made
here (a WordPiece vocab for Grounding DINO and BLIP, a CLIP BPE vocab + merges for OWLv2 and
CLIP), all saved with ``save_pretrained`` (tokenizer files included) so ``from_pretrained(folder)``
is what the tests exercise:

    from tiny_text_models import save_tiny_grounding_dino
    folder = save_tiny_grounding_dino(tmp_path / "gdino")
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch

WORDS = ("a", "an", "the", "of", "on", "in", "and", "with", "photo", "picture", "cat", "cats", "dog", "person",
         "horse", "grass", "clouds", "sky", "tree", "car", "bird", "sitting", "standing", "next", "to", "wall")
WORDPIECE_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PUNCTUATION = (".", ",")


def _wordpiece_tokenizer():
    from transformers import BertTokenizer

    tokens = (*WORDPIECE_SPECIAL, *PUNCTUATION, *WORDS)
    return BertTokenizer(vocab={token: index for index, token in enumerate(tokens)})


def _clip_bpe_tokenizer():
    """A CLIP BPE tokenizer that knows :data:`WORDS` as whole tokens (every letter is in the vocab too)."""
    from transformers import CLIPTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list(PUNCTUATION)
    tokens = letters + [c + "</w>" for c in letters]
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merge = (pieces[0], pieces[1])
            if merge not in merges:
                merges.append(merge)
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            if pieces[0] not in tokens:
                tokens.append(pieces[0])
    tokens += ["<|startoftext|>", "<|endoftext|>"]  # last, as CLIP's (OWL masks queries whose first id is 0)
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, model_max_length=16)


def _save(model, processor, folder: Path, seed: int) -> Path:
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # zero-initialised biases and norms get random values too, so every weight matters
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator))
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def save_tiny_grounding_dino(folder: Path, seed: int = 0) -> Path:
    """A small Grounding DINO (Swin of width 8, BERT of width 8, 10 queries) + its processor in ``folder``."""
    from transformers import (
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    tokenizer = _wordpiece_tokenizer()
    backbone = SwinConfig(window_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], image_size=64,
                          out_features=["stage2", "stage3", "stage4"], out_indices=[2, 3, 4])
    text = {"model_type": "bert", "vocab_size": len(tokenizer), "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 32}
    config = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, d_model=32, num_queries=10, encoder_layers=1, decoder_layers=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2,
        num_feature_levels=4, encoder_n_points=2, decoder_n_points=2, max_text_len=32,
    )
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(config)
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}), tokenizer=tokenizer)
    return _save(model, processor, folder, seed)


def _clip_like_configs(tokenizer, image_size: int) -> tuple[dict, dict]:
    text = {"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": image_size, "patch_size": 8}
    return text, vision


def save_tiny_owlv2(folder: Path, seed: int = 0) -> Path:
    """A 1-layer OWLv2 (32 px input, 16 patches) + its processor in ``folder``."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    tokenizer = _clip_bpe_tokenizer()
    text, vision = _clip_like_configs(tokenizer, 32)
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=16))
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    return _save(model, processor, folder, seed)


def save_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A 1-layer CLIP (32 px input) + its processor in ``folder``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = _clip_bpe_tokenizer()
    text, vision = _clip_like_configs(tokenizer, 32)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    return _save(model, processor, folder, seed)


def save_tiny_blip(folder: Path, seed: int = 0) -> Path:
    """A 1-layer BLIP captioner (32 px input, a WordPiece decoder over :data:`WORDS`) + its processor in ``folder``."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tokenizer = _wordpiece_tokenizer()
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in WORDPIECE_SPECIAL}
    text = {"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 32, "encoder_hidden_size": 16,
            "bos_token_id": ids["[CLS]"], "pad_token_id": ids["[PAD]"], "sep_token_id": ids["[SEP]"],
            "eos_token_id": ids["[SEP]"]}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=16))
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    _save(model, processor, folder, seed)
    with torch.no_grad():  # random weights would end the caption at once: make [SEP] unlikely
        model.text_decoder.cls.predictions.bias[ids["[SEP]"]] -= 20.0
    model.save_pretrained(folder)
    return folder


@functools.cache
def tiny_text_model_folders() -> dict[str, Path]:
    """Every tiny model above, built once per test run into one temporary folder (removed at exit):
    ``{"gdino", "owlv2", "clip", "blip"}`` → its save_pretrained folder."""
    root = Path(tempfile.mkdtemp(prefix="segany-text-models-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return {"gdino": save_tiny_grounding_dino(root / "gdino"), "owlv2": save_tiny_owlv2(root / "owlv2"),
            "clip": save_tiny_clip(root / "clip"), "blip": save_tiny_blip(root / "blip")}
