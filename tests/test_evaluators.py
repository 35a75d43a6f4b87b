"""Zero-shot evaluators during training: their numbers are the evaluation module's, and the trainer reports them."""

import pytest
import torch

from silc_hf import SilcImageProcessor, SilcModel, SilcProcessor
from silc_hf.data.scenes import CLASSES, as_dataset
from silc_hf.zero_shot.evaluation import (
    ZeroShotEvaluator,
    evaluate_retrieval,
    evaluate_segmentation,
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
    evaluator = ZeroShotEvaluator(data, templates=TEMPLATES, ignore_index=0, mask_offset=1)
    assert list(evaluator.tasks) == ["classification", "retrieval", "segmentation"]
    assert evaluator.class_names == list(CLASSES)  # read from the ClassLabel column
    metrics = evaluator(model, processor)
    top1 = evaluate_zero_shot_classification(model, processor, data, list(CLASSES), templates=TEMPLATES)
    recall = evaluate_retrieval(model, processor, data)
    segmentation = evaluate_segmentation(
        model, processor, data, list(CLASSES), templates=TEMPLATES, ignore_index=0, mask_offset=1
    )
    assert metrics == {
        "zero_shot_top1": top1["top1_accuracy"],
        "image_to_text_R@1": recall["image_to_text_R@1"],
        "text_to_image_R@1": recall["text_to_image_R@1"],
        "segmentation_mIoU": segmentation["mIoU"],
    }


def test_evaluator_refuses_tasks_the_data_cannot_support():
    data = as_dataset("validation", 4, image_size=32).remove_columns(["mask"])
    assert list(ZeroShotEvaluator(data).tasks) == ["classification", "retrieval"]
    with pytest.raises(ValueError, match="zero-shot segmentation needs columns the dataset lacks"):
        ZeroShotEvaluator(data, tasks=["segmentation"])
    with pytest.raises(ValueError, match="Unknown zero-shot task 'detection'"):
        ZeroShotEvaluator(data, tasks=["detection"])
