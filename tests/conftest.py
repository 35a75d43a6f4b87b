"""Tiny models, tokenizers and images shared by the tests (everything built locally, nothing downloaded)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
    SiglipConfig,
    SiglipModel,
)

from silc_hf import SilcConfig
from silc_hf.training.tokenization import train_clip_tokenizer

REPOSITORY = Path(__file__).resolve().parents[1]
WORDS = "this is a photo of the cat dog bird red green blue circle square on background".split()
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def clip_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer trained in memory on the test vocabulary."""
    return train_clip_tokenizer([" ".join(WORDS) + ". ,"] * 3, vocab_size=600)


def tiny_silc_config(**overrides) -> SilcConfig:
    """A 2-layer, width-32 SILC config (32 px images, 8 px patches, 16 text tokens)."""
    vocab_size = len(clip_tokenizer().get_vocab())
    kwargs = dict(
        vision_config={**TOWER, "image_size": 32, "patch_size": 8, **overrides.pop("vision_config", {})},
        text_config={
            **TOWER,
            "vocab_size": vocab_size,
            "max_position_embeddings": 16,
            "projection_dim": 32,
            **overrides.pop("text_config", {}),
        },
    )
    return SilcConfig(**kwargs, **overrides)


def tiny_clip_model(seed: int = 0, eos_token_id: int = 1) -> CLIPModel:
    torch.manual_seed(seed)
    vocab_size = len(clip_tokenizer().get_vocab())
    config = CLIPConfig(
        text_config=dict(
            TOWER,
            vocab_size=vocab_size,
            max_position_embeddings=16,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=eos_token_id,
        ),
        vision_config=dict(TOWER, image_size=32, patch_size=8),
        projection_dim=24,
    )
    return CLIPModel(config).eval()


def tiny_siglip_model(seed: int = 0) -> SiglipModel:
    vocab_size = len(clip_tokenizer().get_vocab())
    torch.manual_seed(seed)
    config = SiglipConfig(
        text_config=dict(
            TOWER, vocab_size=vocab_size, max_position_embeddings=16, pad_token_id=1, bos_token_id=None, eos_token_id=1
        ),
        vision_config=dict(TOWER, image_size=32, patch_size=8),
    )
    model = SiglipModel(config).eval()
    with torch.no_grad():  # SigLIP initialises scale and bias to 0; make both matter
        model.logit_scale.fill_(2.0)
        model.logit_bias.fill_(-3.0)
    return model


def tiny_clip_processor() -> CLIPProcessor:
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer())


def random_image(seed: int = 0, size=(45, 37)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


@pytest.fixture
def clip_folder(tmp_path):
    """A saved tiny HF CLIP model with its processor."""
    folder = tmp_path / "clip"
    tiny_clip_model().save_pretrained(folder)
    tiny_clip_processor().save_pretrained(folder)
    return folder


COLORS = {"red": (220, 30, 30), "green": (30, 190, 40), "blue": (30, 60, 220)}
SHAPES = ("circle", "square")


def shape_image(color: str, shape: str, seed: int, size: int = 48) -> Image.Image:
    """A coloured circle or square on a random grey background."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(60, 200, 3)))
    draw = ImageDraw.Draw(image)
    margin = size // 5
    box = (margin, margin, size - margin, size - margin)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLORS[color])
    return image


def write_caption_folder(root, n: int = 24, seed: int = 0) -> list[dict]:
    """An `imagefolder` of coloured shapes with `metadata.jsonl` captions; returns the metadata rows."""
    import json

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
        shape_image(color, shape, seed=seed * 1000 + i).save(root / f"{i:04d}.png")
        rows.append({"file_name": f"{i:04d}.png", "text": f"a {color} {shape}"})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return rows


def load_script(path: str):
    """A script of the repository (e.g. "training/train_silc.py") imported as a module, without touching sys.path."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, REPOSITORY / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_fresh_python(code: str, *args, workdir) -> dict:
    """Run `code` (which prints a JSON line last) in a fresh interpreter, offline, with its own remote-code cache in
    `workdir`; return that JSON. The test fails with the child's stderr if it fails."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(Path(workdir) / "modules"))
    command = [sys.executable, "-c", code, *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
