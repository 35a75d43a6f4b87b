"""Zero-shot evaluators during training: their numbers are the evaluation module's, and the trainer reports them."""

import numpy as np
import pytest
import torch
from PIL import Image

from silc_hf import SilcImageProcessor, SilcModel, SilcProcessor
from silc_hf.data.scenes import LABELS, THINGS, as_dataset
from silc_hf.zero_shot.evaluation import (
    ZeroShotEvaluator,
    evaluate_retrieval,
    evaluate_segmentation,
    evaluate_segmentation_probe,
    evaluate_zero_shot_classification,
)

from conftest import clip_tokenizer, tiny_silc_config

TEMPLATES = ("a {}", "a picture of a {}")


def _model_and_processor(seed=0):
    tokenizer = clip_tokenizer()
    torch.manual_seed(seed)
    model = SilcModel(
        tiny_silc_config(text_config=dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id))
    ).eval()
    processor = SilcProcessor(SilcImageProcessor(size={"height": 32, "width": 32}), tokenizer, fixed_text_length=16)
    return model, processor


def test_evaluator_metrics_equal_the_evaluation_functions():
    model, processor = _model_and_processor()
    data = as_dataset("validation", 12, image_size=32)
    evaluator = ZeroShotEvaluator(data, segmentation_class_names=list(LABELS), templates=TEMPLATES, mask_offset=1)
    assert list(evaluator.tasks) == ["classification", "retrieval", "segmentation"]
    assert evaluator.class_names == list(THINGS)  # read from the ClassLabel column
    metrics = evaluator(model, processor)
    top1 = evaluate_zero_shot_classification(model, processor, data, list(THINGS), templates=TEMPLATES)
    recall = evaluate_retrieval(model, processor, data)
    segmentation = evaluate_segmentation(model, processor, data, list(LABELS), templates=TEMPLATES, mask_offset=1)
    assert metrics == {
        "zero_shot_top1": top1["top1_accuracy"],
        "image_to_text_R@1": recall["image_to_text_R@1"],
        "text_to_image_R@1": recall["text_to_image_R@1"],
        "segmentation_mIoU": segmentation["mIoU"],
        "segmentation_top_class_share": max(segmentation["predicted_share"]),
    }


def test_evaluator_refuses_tasks_the_data_cannot_support():
    data = as_dataset("validation", 4, image_size=32).remove_columns(["mask"])
    assert list(ZeroShotEvaluator(data).tasks) == ["classification", "retrieval"]
    with pytest.raises(ValueError, match="zero-shot segmentation needs columns the dataset lacks"):
        ZeroShotEvaluator(data, tasks=["segmentation"])
    with pytest.raises(ValueError, match="Unknown zero-shot task 'detection'"):
        ZeroShotEvaluator(data, tasks=["detection"])


def _two_colour_scenes(count: int, seed: int, size: int = 32, patch: int = 8):
    """Images whose left part is red and right part blue, split at a random patch boundary; masks 1 (red) / 2."""
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    rows = {"image": [], "mask": [], "text": []}
    for _ in range(count):
        split = patch * int(rng.integers(1, size // patch))
        pixels = np.zeros((size, size, 3), dtype=np.uint8)
        pixels[:, :split], pixels[:, split:] = (220, 30, 30), (30, 30, 220)
        mask = np.full((size, size), 2, dtype=np.uint8)
        mask[:, :split] = 1
        rows["image"].append(Image.fromarray(pixels))
        rows["mask"].append(Image.fromarray(mask))
        rows["text"].append("red and blue")
    return Dataset.from_dict(rows)


def test_segmentation_probe_reads_what_the_patch_tokens_hold():
    model, processor = _model_and_processor()
    train, test = _two_colour_scenes(32, seed=0), _two_colour_scenes(16, seed=1)
    probe = dict(mask_offset=1, steps=150, learning_rate=5e-2)
    # colour is linear in even a random tower's patch tokens: the probe segments the test images almost perfectly
    result = evaluate_segmentation_probe(model, processor, train, test, ["red", "blue"], **probe)
    assert result["mIoU"] > 0.9
    # with the training masks' classes swapped, the same probe must get the test images wrong
    swapped = train.map(lambda row: {"mask": Image.fromarray(3 - np.asarray(row["mask"]))})
    assert evaluate_segmentation_probe(model, processor, swapped, test, ["red", "blue"], **probe)["mIoU"] < 0.1
