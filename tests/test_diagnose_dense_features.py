"""The dense-feature diagnosis of `benchmarks/diagnose_dense_features.py` against hand computations."""

import math

import pytest
import torch

from conftest import load_script

diagnose = load_script("benchmarks/diagnose_dense_features.py")
CAR, BUS, SKY = 1, 2, 21  # mask values: 1 + the index in LABELS


def test_patch_labels_take_the_majority_and_mark_the_pure_patches():
    masks = torch.tensor([[[1, 1, 2, 2], [1, 1, 2, 3], [5, 5, 5, 5], [5, 5, 5, 5]]])
    labels, pure = diagnose.patch_labels(masks, patch=2)
    assert labels.tolist() == [[[1, 2], [5, 5]]]
    assert pure.tolist() == [[[True, True], [True, True]]]  # 3 of 4 pixels is the 75 % threshold
    masks[0, 0, 1], masks[0, 1, 0] = 4, 3  # label 1 now covers 2 of its patch's 4 pixels
    labels, pure = diagnose.patch_labels(masks, patch=2)
    assert labels[0, 0, 0] == 1 and not pure[0, 0, 0]


def test_similarity_structure_matches_a_hand_computation():
    """Two images of 2x2 patches: a car over the sky, and a car over a bus; every label's patches share one token
    (e1 car, e2 sky, e3 bus). After the mean token (0.5, 0.25, 0.25) is removed the car's token meets the sky's and
    the bus's at cosine -0.375 / sqrt(0.375 * 0.875)."""
    e1, e2, e3 = torch.eye(3)
    tokens = torch.stack([torch.stack([e1, e1, e2, e2]), torch.stack([e1, e1, e3, e3])])  # (N, P, D)
    tokens = tokens.transpose(1, 2).unflatten(2, (2, 2))  # (N, D, h, w) as patch_tokens returns them
    labels = torch.tensor([[[CAR, CAR], [SKY, SKY]], [[CAR, CAR], [BUS, BUS]]])
    pure = torch.ones_like(labels, dtype=torch.bool)
    pure[0, 1, 1] = False  # an impure sky patch changes nothing here but must be left out without error
    result = diagnose.similarity_structure(tokens, labels, pure)
    between = -0.375 / math.sqrt(0.375 * 0.875)
    car, bus = result["per_class"]["car"], result["per_class"]["bus"]
    assert car["within"] == pytest.approx(1.0) and car["rest"] == pytest.approx(between, abs=1e-6)
    assert car["separation"] == pytest.approx(1.0 - between, abs=1e-6)
    assert bus["rest"] == pytest.approx(between, abs=1e-6)
    # the two cars' mean tokens agree (1) and each meets the bus's at `between`; one bus: no consistency of its own
    assert car["class consistency"] == pytest.approx(1.0 - between, abs=1e-6)
    assert bus["class consistency"] is None
    assert set(result["per_class"]) == {"car", "bus"}  # the sky is stuff: no entry
    assert result["class consistency"] == pytest.approx(1.0 - between, abs=1e-6)


def test_class_consistency_leaves_each_thing_out_of_its_own_class():
    """Two cars that differ: their consistency is their cosine with each other (not with themselves) minus their
    mean cosine with the bus, on the centred unit tokens."""
    car0, sky, car1, bus = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 1], [0, 0, 1, 0]])
    tokens = torch.stack([torch.stack([car0, car0, sky, sky]), torch.stack([car1, car1, bus, bus])])  # (N, P, D)
    labels = torch.tensor([[[CAR, CAR, SKY, SKY]], [[CAR, CAR, BUS, BUS]]])  # (N, h=1, w=4)
    unit = torch.nn.functional.normalize(tokens - tokens.mean(dim=(0, 1)), dim=-1)
    car0, car1, bus = unit[0, 0], unit[1, 0], unit[1, 2]
    expected = car0 @ car1 - (car0 @ bus + car1 @ bus) / 2
    result = diagnose.similarity_structure(tokens.transpose(1, 2).unflatten(2, (1, 4)), labels, labels > 0)
    assert result["per_class"]["car"]["class consistency"] == pytest.approx(expected.item(), abs=1e-6)
    assert expected < 0.9  # the two cars differ: counting a car with itself would raise it
