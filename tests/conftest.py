"""Tiny models, tokenizers and images shared by the tests (everything built locally, nothing downloaded)."""

import copy
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
    TrainerCallback,
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


# A SilcTrainer on tiny towers, a tiny head and a 16-image caption folder: the trainer tests' common ground.
TINY_HEAD = dict(
    head_num_prototypes=32, head_hidden_dim=32, head_bottleneck_dim=16, num_local_crops=2, local_crop_size=16
)


def tiny_training_args(output_dir, **overrides):
    """`SilcTrainingArguments` for 6 CPU steps of batch 4, logging every step, no checkpoints (unless overridden)."""
    from silc_hf.training import SilcTrainingArguments

    values = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        max_steps=6,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        dataloader_pin_memory=False,
        teacher_momentum=0.9,
        **TINY_HEAD,
    )
    values.update(overrides)
    return SilcTrainingArguments(**values)


@pytest.fixture(scope="module")
def caption_folder(tmp_path_factory):
    """An imagefolder of 16 captioned shapes, shared by a test module."""
    folder = tmp_path_factory.mktemp("captions")
    write_caption_folder(folder, n=16)
    return folder


def tiny_trainer(folder, args, seed=0, loss_type="softmax"):
    """A `SilcTrainer` of a tiny SILC model (initialised from `seed`) on the images of `folder`."""
    from silc_hf import SilcImageProcessor, SilcModel, SilcProcessor
    from silc_hf.data import load_image_text_dataset
    from silc_hf.training import (
        MultiCropDataset,
        MultiCropTransform,
        SamplePreparer,
        SilcMultiCropCollator,
        SilcTrainer,
    )

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    config = tiny_silc_config(
        loss_type=loss_type,
        text_config=dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id),
    )
    model = SilcModel(config)
    processor = SilcProcessor(SilcImageProcessor(size={"height": 32, "width": 32}), tokenizer, fixed_text_length=16)
    patch_size = config.vision_config.patch_size if args.patch_distill_weight > 0 else None  # masks for the patch loss
    preparer = SamplePreparer(MultiCropTransform(args, 32, patch_size), min_image_size=16)
    dataset = MultiCropDataset(load_image_text_dataset(str(folder)), preparer, seed=0)
    return SilcTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=dataset,
        data_collator=SilcMultiCropCollator(processor, 16),
        processing_class=processor,
    )


class StopAfter(TrainerCallback):
    """Stops training after optimizer step `step` (as a preemption would)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


def training_state(trainer) -> dict:
    """Copies of everything a step may change: student, head, teacher, centre, optimizer moments."""
    wrapper = trainer.model
    return {
        "student": {k: v.detach().clone() for k, v in wrapper.student.state_dict().items()},
        "head": {k: v.detach().clone() for k, v in wrapper.student_head.state_dict().items()},
        "teacher": {k: v.detach().clone() for k, v in wrapper.teacher.state_dict().items()},
        "center": wrapper.distillation_loss.center.clone(),
        "optimizer": copy.deepcopy(trainer.optimizer.state_dict()["state"]),
    }


def max_difference(a, b) -> float:
    """Largest absolute difference between two nested dicts of tensors (keys and non-tensors must match)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return max((max_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, torch.Tensor):
        return (a.float() - b.float()).abs().max().item() if a.numel() else 0.0
    assert a == b
    return 0.0
