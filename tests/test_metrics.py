"""Metric functions against hand-computed values (ties, empty classes, ignored pixels)."""

import math

import pytest
import torch

from silc_hf.zero_shot.evaluation import results_entry
from silc_hf.zero_shot.metrics import (
    confusion_matrix,
    linear_probe_accuracy,
    recall_at_k,
    segmentation_metrics,
    topk_accuracy,
)


def test_topk_accuracy_by_hand_with_ties():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.0],  # target 0: rank 0
            [0.5, 0.5, 0.2],  # target 1: tied with class 0, which wins (lower index) -> rank 1
            [0.5, 0.5, 0.2],  # target 0: wins the tie -> rank 0
            [0.1, 0.2, 0.3],  # target 0: rank 2
        ]
    )
    targets = torch.tensor([0, 1, 0, 0])
    assert topk_accuracy(scores, targets, ks=(1, 2, 3)) == {
        "top1_accuracy": 0.5,
        "top2_accuracy": 0.75,
        "top3_accuracy": 1.0,
    }


def test_recall_at_k_by_hand_with_several_positives_and_ties():
    similarity = torch.tensor(
        [
            [0.1, 0.9, 0.3, 0.3],  # positives {0, 2}: best is 2 at rank 1 (tied with 3, lower index wins)
            [0.2, 0.1, 0.0, 0.5],  # positive {1}: rank 2
            [0.7, 0.7, 0.7, 0.7],  # positive {3}: all tied -> rank 3
        ]
    )
    result = recall_at_k(similarity, [{0, 2}, {1}, {3}], ks=(1, 2, 3, 4))
    assert result == {"R@1": 0.0, "R@2": pytest.approx(1 / 3), "R@3": pytest.approx(2 / 3), "R@4": 1.0}


def test_segmentation_metrics_by_hand():
    # 3 classes; class 2 absent from ground truth and prediction; 255 ignored; -1 = predicted background
    target = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 255]])
    prediction = torch.tensor([[0, 1, 1, 1], [-1, 1, 0, 2]])
    confusion = confusion_matrix(prediction, target, num_classes=3, ignore_index=255)
    # rows: ground truth 0 (3 px), 1 (4 px), 2 (0 px); columns 0..2 and "no class"
    assert confusion.tolist() == [[1, 1, 0, 1], [1, 3, 0, 0], [0, 0, 0, 0]]
    metrics = segmentation_metrics(confusion)
    iou0, iou1 = 1 / (3 + 2 - 1), 3 / (4 + 4 - 3)  # TP / (GT + predicted - TP)
    assert metrics["per_class_IoU"] == [pytest.approx(iou0), pytest.approx(iou1), None]
    assert metrics["mIoU"] == pytest.approx((iou0 + iou1) / 2)
    assert metrics["pixel_accuracy"] == pytest.approx(4 / 7)
    # 7 scored pixels: predicted 0 twice, 1 four times, 2 never (the background pixel is nobody's); truth 3 / 4 / 0
    assert metrics["predicted_share"] == pytest.approx([2 / 7, 4 / 7, 0.0])
    assert metrics["true_share"] == pytest.approx([3 / 7, 4 / 7, 0.0])


def test_a_class_only_predicted_counts_with_zero_iou():
    confusion = confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 0]), num_classes=2)
    metrics = segmentation_metrics(confusion)
    assert metrics["per_class_IoU"] == [0.5, 0.0] and metrics["mIoU"] == 0.25


def test_empty_input_gives_nan_not_a_crash():
    metrics = segmentation_metrics(confusion_matrix(torch.tensor([1]), torch.tensor([255]), 2, ignore_index=255))
    assert math.isnan(metrics["mIoU"]) and math.isnan(metrics["pixel_accuracy"])


def test_linear_probe_separates_separable_features():
    generator = torch.Generator().manual_seed(0)
    centers = torch.eye(3) * 4
    labels = torch.arange(3).repeat(10)
    features = centers[labels] + 0.3 * torch.randn(30, 3, generator=generator)
    test_labels = torch.arange(3).repeat(5)
    test = centers[test_labels] + 0.3 * torch.randn(15, 3, generator=generator)
    assert linear_probe_accuracy(features, labels, test, test_labels) == 1.0
    shuffled = test_labels[torch.randperm(15, generator=generator)]
    assert linear_probe_accuracy(features, labels, test, shuffled) < 1.0


def test_results_entry_keeps_numbers_only():
    entry = results_entry(
        "zero-shot-image-segmentation", "scenes", {"mIoU": 0.5, "per_class_IoU": [0.5, None]}, split="test"
    )
    assert entry == {
        "task": "zero-shot-image-segmentation",
        "dataset": "scenes",
        "dataset_name": "scenes",
        "metrics": {"mIoU": 0.5},
        "split": "test",
    }


def test_paired_interval_by_hand():
    from silc_hf.tools.benchmark import paired_interval

    # differences 1, 2, 3: mean 2, sample std 1, t(0.975, 2 dof) = 4.303 (a t table) -> half-width 4.303 / sqrt(3)
    interval = paired_interval([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    assert interval["differences"] == [1.0, 2.0, 3.0] and interval["mean"] == 2.0
    assert interval["high"] - 2.0 == pytest.approx(4.303 / 3**0.5, abs=1e-3)
    assert interval["low"] == pytest.approx(4.0 - interval["high"])
    with pytest.raises(ValueError, match="needs 2 to"):
        paired_interval([1.0], [0.0])
