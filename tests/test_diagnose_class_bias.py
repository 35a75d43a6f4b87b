"""The offset diagnosis of `benchmarks/diagnose_class_bias.py` against a hand computation."""

import pytest
import torch

from conftest import load_script

diagnose = load_script("benchmarks/diagnose_class_bias.py")


def test_removing_each_class_mean_undoes_an_offset_and_keeps_the_ranking_within_a_class():
    """Four pixels, one per class except class 0 (a thing) twice: the true class scores 1, the others 0, and class 2
    (the stuff) has +5 everywhere. Raw, class 2 wins every pixel: its IoU is 1/4, the others 0. With each class's mean
    over the pixels removed (0.5, 0.25, 5.25), the true class wins each pixel again: every IoU is 1."""
    targets = torch.tensor([[[0, 0], [1, 2]]])
    logits = torch.nn.functional.one_hot(targets, 3).permute(0, 3, 1, 2).float()
    logits[:, 2] += 5
    result = diagnose.offset_diagnosis(logits, targets, num_things=2, names=["car", "bus", "sky"])
    raw, removed = result["raw"], result["class_mean_removed"]
    assert (raw["top_class"], raw["top_class_share"]) == ("sky", 1.0)
    assert raw["stuff_mIoU"] == pytest.approx(0.25) and raw["things_mIoU"] == 0.0
    assert raw["mIoU"] == pytest.approx(0.25 / 3)
    assert removed["mIoU"] == removed["things_mIoU"] == removed["stuff_mIoU"] == 1.0
    assert (removed["top_class"], removed["top_class_share"]) == ("car", 0.5)
