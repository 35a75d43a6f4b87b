"""Masked patch distillation (iBOT), the staged start and the head-only teacher.

The patch loss against a hand computation, the masking generator, the mask token inside the tower, resumption,
the staged start's teacher copy, the head-only teacher; and, with every option off, the step equal to the one
pinned before the options existed (`tests/fixtures/silc_step`). Two ranks = one process with the patch loss on:
`test_distributed_training.py`.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import TrainerCallback

from silc_hf import SilcModel
from silc_hf.training import MultiCropArguments, MultiCropTransform
from silc_hf.training.augmentation import patch_mask, stack_augment
from silc_hf.training.losses import PatchDistillationLoss
from silc_hf.training.pretraining import SilcPretrainingModel

from conftest import (
    REPOSITORY,
    StopAfter,
    max_difference,
    tiny_silc_config,
    tiny_trainer,
    tiny_training_args,
    training_state,
)

PATCH = dict(patch_distill_weight=1.0)


def components(mask: np.ndarray) -> int:
    """4-connected groups of True cells."""
    seen, groups = np.zeros_like(mask), 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        groups, stack = groups + 1, [start]
        while stack:
            i, j = stack.pop()
            if 0 <= i < mask.shape[0] and 0 <= j < mask.shape[1] and mask[i, j] and not seen[i, j]:
                seen[i, j] = True
                stack += [(i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)]
    return groups


def test_patch_loss_equals_a_hand_computation():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 2.0, 1.0]])
    teacher = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.1, 0.8, 0.1]])
    weights = torch.tensor([0.5, 0.5, 1.0])  # tokens 0, 1 from one view, token 2 from another
    loss = PatchDistillationLoss(3, student_temperature=0.1)(student, teacher, weights, num_views=4)
    expected = 0.0
    for s, t, w in zip(student.tolist(), teacher.tolist(), weights.tolist()):
        log_normaliser = math.log(sum(math.exp(v / 0.1) for v in s))
        expected += w * -sum(p * (v / 0.1 - log_normaliser) for p, v in zip(t, s))
    assert loss.item() == pytest.approx(expected / 4, rel=1e-6)


@pytest.mark.parametrize("tokens", ["masked", "all"])
def test_the_steps_patch_loss_is_the_mean_over_each_masked_views_tokens(tokens):
    """The wrapper's loss on a constructed batch, against a loop over views and tokens: the student sees the mask
    token at the masked patches, the teacher the whole view; each masked view contributes the mean of its tokens'
    cross-entropies (the masked ones, or all), and the sum is divided by the batch's global views."""
    torch.manual_seed(0)
    model = SilcModel(tiny_silc_config(vision_config={"pooling_type": "cls"}))  # a class token before the patches
    wrapper = SilcPretrainingModel(
        model,
        head_num_prototypes=8,
        head_hidden_dim=16,
        head_bottleneck_dim=8,
        patch_distillation=True,
        patch_loss_tokens=tokens,
    ).eval()
    torch.nn.init.normal_(wrapper.mask_token)
    batch, patches = 3, 16
    views = torch.randint(0, 256, (batch, 2, 3, 32, 32), dtype=torch.uint8)
    plain = dict(flip=False, jitter=False, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0)
    plain.update(jitter_order=np.arange(4), grayscale=False, blur=False, blur_sigma=1.0, solarize=False)
    augment = {key: value.expand(batch, *value.shape) for key, value in stack_augment([plain, plain]).items()}
    masks = torch.zeros(batch, 2, patches, dtype=torch.bool)
    masks[0, 0, [1, 2, 5]] = True  # image 0, view 0: 3 masked patches
    masks[2, 1, [0, 15]] = True  # image 2, view 1: 2 masked patches
    out = wrapper(
        views,
        augment,
        input_ids=None,
        global_masks=masks,
        distill_weight=0.0,
        contrastive_weight=0.0,
        patch_distill_weight=1.0,
        teacher_temperature=0.05,
    )
    pixels = wrapper._pixels(views, augment)  # view-major, as the step uses them
    expected = 0.0
    for image, view in [(0, 0), (2, 1)]:
        x = pixels[view * batch + image : view * batch + image + 1]
        mask = masks[image, view]
        student = model.vision_model(pixel_values=x, bool_masked_pos=mask[None], mask_token=wrapper.mask_token)
        teacher = wrapper.teacher.vision_model(pixel_values=x)
        chosen = mask.nonzero().flatten().tolist() if tokens == "masked" else list(range(patches))
        for index in chosen:
            s = wrapper.student_head(student.last_hidden_state[0, 1 + index])  # after the class token
            t = F.softmax(wrapper.teacher.head(teacher.last_hidden_state[0, 1 + index]) / 0.05, dim=-1)  # centre 0
            expected += -(t * F.log_softmax(s / 0.1, dim=-1)).sum().item() / len(chosen)
    assert out["patch_distillation_loss"].item() == pytest.approx(expected / (2 * batch), rel=1e-5)


def test_masks_have_the_drawn_share_in_blocks_and_follow_the_seed():
    for count in (0, 1, 7, 30, 61, 100):
        block = patch_mask(np.random.default_rng(count), 10, 10, count)
        assert block.sum() == count
    block = patch_mask(np.random.default_rng(0), 14, 14, 60)
    scattered = patch_mask(np.random.default_rng(0), 14, 14, 60, block_wise=False)
    assert block.sum() == scattered.sum() == 60
    assert components(block) <= 6 < 20 <= components(scattered)  # rectangles vs single patches
    assert np.array_equal(block, patch_mask(np.random.default_rng(0), 14, 14, 60))
    assert not np.array_equal(block, patch_mask(np.random.default_rng(1), 14, 14, 60))
    with pytest.raises(ValueError, match="count=101 masked patches do not fit a 10x10 grid"):
        patch_mask(np.random.default_rng(0), 10, 10, 101)


@pytest.mark.parametrize("probability, masked_views", [(0.5, {1}), (1.0, {2}), (0.25, {0, 1})])
def test_each_image_masks_its_share_of_global_views_without_changing_its_crops(probability, masked_views):
    args = MultiCropArguments(mask_probability=probability, mask_ratio=[0.2, 0.4], num_local_crops=2)
    transform, plain = MultiCropTransform(args, 64, patch_size=8), MultiCropTransform(args, 64)
    counts, shares = [], []
    for seed in range(200):
        masks = transform.draw_masks(np.random.default_rng(seed))
        assert masks.shape == (2, 64) and masks.dtype == torch.bool
        counts.append(int(masks.any(dim=1).sum()))
        shares += [m.float().mean().item() for m in masks if m.any()]
    assert set(counts) == masked_views
    assert np.mean(counts) == pytest.approx(2 * probability, abs=0.1)
    assert min(shares) >= 0.2 - 1 / 64 and max(shares) <= 0.4 + 1 / 64
    rng, plain_rng = np.random.default_rng(3), np.random.default_rng(3)
    assert repr(transform.plan(80, 60, rng)) == repr(plain.plan(80, 60, plain_rng))  # masks come after the crops
    assert plain.draw_masks(plain_rng) is None


def test_the_mask_token_replaces_the_masked_patches_inside_the_tower():
    torch.manual_seed(0)
    tower = SilcModel(tiny_silc_config(vision_config={"pooling_type": "cls"})).vision_model.eval()
    token = torch.randn(32)
    pixels = torch.randn(1, 3, 32, 32)
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, 5] = True  # row 1, column 1 of the 4 x 4 grid: pixels [8:16, 8:16]
    out = tower(pixel_values=pixels, bool_masked_pos=mask, mask_token=token).last_hidden_state
    changed_masked = pixels.clone()
    changed_masked[..., 8:16, 8:16] += 1.0
    assert torch.equal(
        tower(pixel_values=changed_masked, bool_masked_pos=mask, mask_token=token).last_hidden_state, out
    )
    changed_visible = pixels.clone()
    changed_visible[..., 0:8, 0:8] += 1.0
    assert not torch.allclose(
        tower(pixel_values=changed_visible, bool_masked_pos=mask, mask_token=token).last_hidden_state, out
    )
    other_token = tower(pixel_values=pixels, bool_masked_pos=mask, mask_token=torch.randn(32)).last_hidden_state
    assert (other_token[0, 1 + 5] - out[0, 1 + 5]).abs().max() > 1e-3  # the token is what the tower sees there
    with pytest.raises(ValueError, match=r"bool_masked_pos of shape \(1, 15\) needs a mask_token and the shape"):
        tower(pixel_values=pixels, bool_masked_pos=mask[:, :15], mask_token=token)


PINNED_COMMIT = "5038825"  # the last commit before the options: its code and its make_reference.py


def pinned_commit_state(tmp_path) -> dict[str, torch.Tensor] | None:
    """The pinned commit's own three steps, run here by its own code in a fresh interpreter (one thread): a
    comparison bit for bit needs the same machine and libraries. None where the checkout has no git history."""
    git = ["git", "-C", str(REPOSITORY)]
    if subprocess.run([*git, "cat-file", "-e", f"{PINNED_COMMIT}^{{commit}}"], capture_output=True).returncode:
        return None
    old = tmp_path / "pinned"
    old.mkdir()
    archive = subprocess.run([*git, "archive", PINNED_COMMIT, "src", "tests"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    env = {**os.environ, "PYTHONPATH": str(old / "src"), "OMP_NUM_THREADS": "1"}
    script = old / "tests/fixtures/silc_step/make_reference.py"
    run = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return load_file(str(script.parent / "reference.safetensors"))


def test_with_every_option_off_the_step_is_the_pinned_one(tmp_path):
    sys.path.insert(0, str(REPOSITORY / "tests/fixtures/silc_step"))
    from make_reference import flat_state, reference_run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the reference was written
    try:
        state = flat_state(reference_run(tmp_path / "today"))
    finally:
        torch.set_num_threads(threads)
    pinned = pinned_commit_state(tmp_path)
    if pinned is not None:  # the code before the options, on this machine: bit for bit, optimizer moments included
        assert pinned.keys() == state.keys()
        assert [key for key in pinned if not torch.equal(state[key], pinned[key])] == []
    # The file written then (for checkouts without history): bit-identical on the machine and library versions that
    # wrote it; elsewhere the kernels sum in another order (1.7e-6 here with transformers 5.24), while any change to
    # the step moves weights by about the learning rate (1e-3) per step. The optimizer moments are left out: the key
    # biases get no gradient (softmax ignores a constant per query), so Adam turns rounding noise into a full step.
    reference = load_file(str(REPOSITORY / "tests/fixtures/silc_step/reference.safetensors"))
    assert state.keys() == reference.keys()
    torch.testing.assert_close(state["losses"], reference["losses"], rtol=1e-6, atol=0)
    for key in (key for key in reference if not key.startswith("optimizer.")):
        torch.testing.assert_close(state[key], reference[key], rtol=0, atol=2e-5, msg=key)


def test_patch_distillation_trains_and_resumes_exactly(caption_folder, tmp_path):
    options = dict(PATCH, patch_head="separate", mask_probability=0.75)
    straight = tiny_trainer(caption_folder, tiny_training_args(tmp_path / "straight", max_steps=6, **options))
    straight.train()
    expected = training_state(straight)
    expected["patch_center"] = straight.model.patch_distillation_loss.center.clone()
    expected["mask_token"] = straight.model.mask_token.detach().clone()
    logs = [entry for entry in straight.state.log_history if "loss" in entry]
    assert all("patch_distillation_loss" in e and "patch_teacher_entropy" in e for e in logs)
    assert expected["patch_center"].abs().sum() > 0 and expected["mask_token"].abs().sum() > 0  # both moved

    first = tiny_trainer(
        caption_folder,
        tiny_training_args(tmp_path / "resumed", max_steps=6, save_strategy="steps", save_steps=3, **options),
    )
    first.add_callback(StopAfter(3))
    first.train()
    resumed = tiny_trainer(caption_folder, tiny_training_args(tmp_path / "resumed", max_steps=6, **options), seed=2)
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-3"))
    actual = training_state(resumed)
    actual["patch_center"] = resumed.model.patch_distillation_loss.center
    actual["mask_token"] = resumed.model.mask_token.detach()
    for part in expected:
        assert max_difference(actual[part], expected[part]) <= 1e-6, part
    straight.save_model(str(tmp_path / "exported"))  # the task's mask token stays behind: a plain SilcModel
    exported = load_file(str(tmp_path / "exported" / "model.safetensors"))
    assert exported.keys() == straight.model.student.state_dict().keys()


class _SnapshotStudent(TrainerCallback):
    """Keeps a copy of the student's tower and head as they are when step `step` begins."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            self.snapshot = [s.detach().clone() for s in model.ema_parameters()[1]]


def test_staged_start_copies_the_student_into_the_teacher_at_its_fraction_of_the_run(caption_folder, tmp_path):
    args = tiny_training_args(tmp_path, max_steps=4, distill_start_ratio=0.5, **PATCH)
    trainer = tiny_trainer(caption_folder, args)
    initial = [t.detach().clone() for t in trainer.model.ema_parameters()[0]]
    snapshot = _SnapshotStudent(2)
    trainer.add_callback(snapshot)
    trainer.add_callback(StopAfter(3))
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [e["distill_weight"] for e in logs] == [0.0, 0.0, 1.0]
    assert [e["patch_distill_weight"] for e in logs] == [0.0, 0.0, 1.0]
    assert ["patch_distillation_loss" in e for e in logs] == [False, False, True]
    teacher, student = trainer.model.ema_parameters()
    assert any(not torch.equal(s, i) for s, i in zip(snapshot.snapshot, initial))  # the student moved before
    for t, copied, s in zip(teacher, snapshot.snapshot, student):  # copied at step 2, one EMA step (m = 0.9) since
        assert torch.allclose(t, copied.mul(0.9).add(s.detach(), alpha=0.1), atol=1e-7)


def test_a_head_only_teacher_reads_the_students_tower_and_averages_only_the_head(caption_folder, tmp_path):
    full = tiny_trainer(caption_folder, tiny_training_args(tmp_path / "full", max_steps=2, **PATCH))
    head_only = tiny_trainer(
        caption_folder, tiny_training_args(tmp_path / "head", max_steps=2, teacher_tower="student", **PATCH)
    )
    wrapper = head_only.model
    assert wrapper.teacher.vision_model is None
    tower = sum(p.numel() for p in full.model.teacher.vision_model.parameters())
    parameters = sum(p.numel() for p in full.model.parameters())
    assert sum(p.numel() for p in wrapper.parameters()) == parameters - tower
    assert len(wrapper.ema_parameters()[0]) == len(list(wrapper.student_head.parameters()))
    head_only.train()
    pixels = torch.randn(2, 3, 32, 32)
    wrapper.student.eval()
    features = wrapper.student.vision_model(pixel_values=pixels)
    pooled, tokens = wrapper._teacher_features(pixels, features)
    assert torch.equal(pooled, features.pooler_output)
    assert torch.equal(tokens, features.last_hidden_state)  # MAP pooling: every token is a patch
    assert not torch.equal(wrapper.teacher.head.prototypes, wrapper.student_head.prototypes)  # an EMA, not a copy


def test_bad_patch_options_are_refused(tmp_path):
    with pytest.raises(ValueError, match="patch_distill_weight=1.0 with mask_probability=0 masks no view"):
        tiny_training_args(tmp_path, patch_distill_weight=1.0, mask_probability=0.0)
    with pytest.raises(ValueError, match=r"patch_head='both' is not supported; use one of \['shared', 'separate'\]"):
        tiny_training_args(tmp_path, patch_head="both")
    with pytest.raises(ValueError, match=r"distill_start_ratio=1.0 must be in \[0, 1\)"):
        tiny_training_args(tmp_path, distill_start_ratio=1.0)
    with pytest.raises(ValueError, match=r"mask_ratio=\[0.5, 0.1\] must be \[low, high\]"):
        tiny_training_args(tmp_path, mask_ratio=[0.5, 0.1])
