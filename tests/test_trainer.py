"""SilcTrainer: the EMA step, resumption, distillation start, evaluation and export."""

import json
import math

import pytest
import torch
from transformers import AutoModel, pipeline

from conftest import (
    TINY_HEAD,
    StopAfter,
    max_difference,
    tiny_trainer,
    tiny_training_args,
    training_state,
)


def test_teacher_moves_once_per_optimizer_step_and_gets_no_gradient(caption_folder, tmp_path):
    trainer = tiny_trainer(caption_folder, tiny_training_args(tmp_path, max_steps=1, gradient_accumulation_steps=2))
    wrapper = trainer.model
    teacher, student = wrapper.ema_parameters()
    old_teacher = [t.detach().clone() for t in teacher]
    trainer.train()
    teacher, student = wrapper.ema_parameters()
    assert trainer.state.global_step == 1
    for t, old, s in zip(teacher, old_teacher, student):
        assert torch.equal(t, old.mul(0.9).add(s.detach(), alpha=1 - 0.9))  # m * old + (1 - m) * student, once
        assert t.grad is None and not t.requires_grad
    assert any(not torch.equal(t, old) for t, old in zip(teacher, old_teacher))  # the student moved, so did the teacher
    wrapper.train()
    assert wrapper.training and not wrapper.teacher.training
    assert all(not m.training for m in wrapper.teacher.modules())


def test_resume_restores_student_teacher_head_center_and_optimizer(caption_folder, tmp_path):
    straight = tiny_trainer(caption_folder, tiny_training_args(tmp_path / "straight", max_steps=6))
    straight.train()
    expected = training_state(straight)

    first = tiny_trainer(
        caption_folder, tiny_training_args(tmp_path / "resumed", max_steps=6, save_strategy="steps", save_steps=3)
    )
    first.add_callback(StopAfter(3))  # interrupted after the step-3 checkpoint; the LR schedule spans 6 steps
    first.train()
    assert first.state.global_step == 3
    checkpoint = tmp_path / "resumed" / "checkpoint-3"
    assert checkpoint.is_dir()
    resumed = tiny_trainer(
        caption_folder, tiny_training_args(tmp_path / "resumed", max_steps=6), seed=2
    )  # different init: all state must come from the checkpoint
    resumed.train(resume_from_checkpoint=str(checkpoint))
    actual = training_state(resumed)
    for part in expected:
        assert max_difference(actual[part], expected[part]) <= 1e-6, part


def test_distillation_starts_late_from_a_copy_of_the_student(caption_folder, tmp_path):
    trainer = tiny_trainer(
        caption_folder,
        tiny_training_args(tmp_path, max_steps=4, distill_start_step=2, teacher_temperature_warmup_ratio=0.5),
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["distill_weight"] for entry in logs] == [0.0, 0.0, 1.0, 1.0]
    assert "distillation_loss" not in logs[0] and "distillation_loss" in logs[2]
    assert logs[2]["teacher_temperature"] == pytest.approx(0.04)  # warm-up restarts with distillation
    assert bool(trainer.model.distillation_started)


def test_starting_distillation_copies_the_student_into_the_teacher(caption_folder, tmp_path):
    wrapper = tiny_trainer(caption_folder, tiny_training_args(tmp_path)).model
    with torch.no_grad():
        for parameter in wrapper.student.vision_model.parameters():
            parameter.add_(0.5)
        wrapper.distillation_loss.center.fill_(3.0)
    wrapper.start_distillation()
    for teacher, student in zip(*wrapper.ema_parameters()):
        assert torch.equal(teacher, student)
    assert not wrapper.distillation_loss.center.any() and bool(wrapper.distillation_started)


def test_prototypes_stay_frozen_early_and_the_head_can_have_its_own_learning_rate(caption_folder, tmp_path):
    trainer = tiny_trainer(
        caption_folder,
        tiny_training_args(tmp_path, max_steps=3, head_freeze_prototypes_steps=2, head_learning_rate=1e-5),
    )
    prototypes = trainer.model.student_head.prototypes
    before = prototypes.detach().clone()
    trainer.add_callback(StopAfter(2))
    trainer.train()
    assert torch.equal(prototypes, before)  # two frozen steps
    head = {id(p) for p in trainer.model.student_head.parameters()}
    rates = {(id(p) in head, group["lr"] > 0) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert rates == {(False, True), (True, True)}
    head_groups = [g for g in trainer.optimizer.param_groups if id(g["params"][0]) in head]
    other_groups = [g for g in trainer.optimizer.param_groups if id(g["params"][0]) not in head]
    assert all(g["initial_lr"] == 1e-5 for g in head_groups) and all(g["initial_lr"] == 1e-3 for g in other_groups)
    full = tiny_trainer(
        caption_folder, tiny_training_args(tmp_path / "full", max_steps=3, head_freeze_prototypes_steps=2)
    )
    full.train()
    assert not torch.equal(full.model.student_head.prototypes, before)


def test_logit_scale_is_clamped_after_each_step(caption_folder, tmp_path):
    trainer = tiny_trainer(caption_folder, tiny_training_args(tmp_path, max_steps=1, max_logit_scale=5.0))
    trainer.train()
    assert trainer.model.student.logit_scale.exp().item() == pytest.approx(5.0)


def test_evaluate_reports_eval_loss_without_touching_the_center(caption_folder, tmp_path):
    trainer = tiny_trainer(caption_folder, tiny_training_args(tmp_path, max_steps=1))
    trainer.train()
    center = trainer.model.distillation_loss.center.clone()
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] > 0
    assert torch.equal(trainer.model.distillation_loss.center, center)


def test_bad_arguments_are_refused(caption_folder, tmp_path):
    with pytest.raises(ValueError, match="teacher_momentum_schedule='linear' is not supported"):
        tiny_training_args(tmp_path, teacher_momentum_schedule="linear")
    with pytest.raises(ValueError, match="remove_unused_columns=True would drop the multi-crop views"):
        tiny_training_args(tmp_path, remove_unused_columns=True)
    with pytest.raises(ValueError, match="local_crop_size=12 is not a multiple of patch_size=8; use 8 or 16"):
        tiny_trainer(caption_folder, tiny_training_args(tmp_path, local_crop_size=12))


@pytest.mark.parametrize("loss_type", ["softmax", "sigmoid"])
def test_training_lowers_the_loss_and_exports_a_clean_silc_folder(caption_folder, tmp_path, loss_type):
    trainer = tiny_trainer(
        caption_folder, tiny_training_args(tmp_path, max_steps=12, learning_rate=2e-3), loss_type=loss_type
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert all("contrastive_loss" in e and "distillation_loss" in e for e in logs)
    first, last = sum(e["loss"] for e in logs[:3]) / 3, sum(e["loss"] for e in logs[-3:]) / 3
    assert last < first
    export = tmp_path / "export"
    trainer.save_model(str(export))
    weights = json.loads((export / "config.json").read_text())
    assert weights["model_type"] == "silc"
    from safetensors import safe_open

    with safe_open(str(export / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not any(k.startswith(("teacher", "student_head", "distillation")) for k in keys)
    loaded = AutoModel.from_pretrained(export)
    for key, value in trainer.model.student.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    classifier = pipeline("zero-shot-image-classification", model=str(export))
    from conftest import shape_image

    result = classifier(shape_image("red", "circle", 0), candidate_labels=["a red circle", "a blue square"])
    assert sorted(r["label"] for r in result) == ["a blue square", "a red circle"]


def test_logs_carry_the_teacher_diagnostics(caption_folder, tmp_path):
    trainer = tiny_trainer(caption_folder, tiny_training_args(tmp_path, max_steps=2))
    trainer.train()
    log = [entry for entry in trainer.state.log_history if "loss" in entry][-1]
    log_k = math.log(TINY_HEAD["head_num_prototypes"])
    assert log["teacher_entropy_fraction"] == pytest.approx(log["teacher_entropy"] / log_k, rel=1e-5)
    assert log["teacher_batch_entropy_fraction"] == pytest.approx(log["teacher_batch_entropy"] / log_k, rel=1e-5)
    assert 0 <= log["teacher_entropy"] <= log["teacher_batch_entropy"] + 1e-5 <= log_k + 1e-5  # concavity
    assert 1 / TINY_HEAD["head_num_prototypes"] <= log["teacher_max_probability"] <= 1
    assert 1 <= log["prototypes_used"] <= 2 * 4 and -1 <= log["student_feature_cosine"] <= 1


def test_contrastive_weight_zero_trains_the_self_distillation_alone(caption_folder, tmp_path):
    trainer = tiny_trainer(
        caption_folder, tiny_training_args(tmp_path, max_steps=3, contrastive_weight=0.0, distill_weight=2.0)
    )
    text_before = {k: v.clone() for k, v in trainer.model.student.text_model.state_dict().items()}
    scale_before = trainer.model.student.logit_scale.detach().clone()
    vision_before = {k: v.clone() for k, v in trainer.model.student.vision_model.state_dict().items()}
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert all("contrastive_loss" not in e and e["loss"] == pytest.approx(2 * e["distillation_loss"]) for e in logs)
    student = trainer.model.student
    assert all(torch.equal(v, text_before[k]) for k, v in student.text_model.state_dict().items())
    assert torch.equal(student.logit_scale.detach(), scale_before)
    assert any(not torch.equal(v, vision_before[k]) for k, v in student.vision_model.state_dict().items())
    with pytest.raises(ValueError, match="contrastive_weight=0 with distill_weight=0"):
        tiny_training_args(tmp_path, contrastive_weight=0.0, distill_weight=0.0)


def test_evaluate_reports_the_zero_shot_metrics_during_training(caption_folder, tmp_path):
    from silc_hf.data.scenes import as_dataset
    from silc_hf.zero_shot.evaluation import ZeroShotEvaluator

    evaluator = ZeroShotEvaluator(
        as_dataset("validation", 6, image_size=32), templates=("a {}",), ignore_index=0, mask_offset=1
    )
    trainer = tiny_trainer(
        caption_folder, tiny_training_args(tmp_path, max_steps=2, eval_strategy="steps", eval_steps=2)
    )
    trainer.zero_shot_evaluator = evaluator
    trainer.train()
    evaluations = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    assert [entry["step"] for entry in evaluations] == [2]
    student = trainer.model.student
    expected = evaluator(student.eval(), trainer.processing_class)
    for name, value in expected.items():
        assert evaluations[0][f"eval_{name}"] == value, name
    assert evaluations[0]["eval_zero_shot_runtime"] > 0
    trainer.eval_dataset = None  # zero-shot metrics alone
    assert trainer.evaluate()["eval_segmentation_mIoU"] == expected["segmentation_mIoU"]


@pytest.mark.parametrize("options", [{}, {"patch_distill_weight": 1.0}], ids=["silc", "masked-patch"])
def test_bf16_autocast_tracks_the_float32_run(caption_folder, tmp_path, options):
    """10 steps under --bf16 (CPU autocast) against float32 from the same init and data. bf16 keeps 8 mantissa
    bits (relative rounding 2^-9 = 0.2 %); matmuls in bf16 through a few layers give ~1 % on a loss, and the
    runs' weights drift apart over the steps (measured: at most 1.5 % over these 10 steps), so each logged
    loss is compared at 3 % relative. Weights, teacher and center stay float32."""
    logs = {}
    for name, extra in (("float32", {}), ("bf16", {"bf16": True})):
        trainer = tiny_trainer(caption_folder, tiny_training_args(tmp_path / name, max_steps=10, **extra, **options))
        trainer.train()
        logs[name] = [e for e in trainer.state.log_history if "contrastive_loss" in e]
        wrapper = trainer.model
        assert all(p.dtype == torch.float32 for p in wrapper.parameters())
        assert wrapper.distillation_loss.center.dtype == torch.float32
    assert len(logs["bf16"]) == len(logs["float32"]) == 10
    keys = ("contrastive_loss", "distillation_loss") + (("patch_distillation_loss",) if options else ())
    for reference, mixed in zip(logs["float32"], logs["bf16"]):
        for key in keys:
            assert mixed[key] == pytest.approx(reference[key], rel=0.03), (reference["step"], key)
    # and bf16 really ran: the losses are not bit-identical
    assert any(m["loss"] != r["loss"] for r, m in zip(logs["float32"], logs["bf16"]))


def test_torch_compile_compiles_the_towers_as_whole_graphs_and_trains_like_eager(caption_folder, tmp_path):
    """--torch_compile (CPU inductor): the towers and heads compile with fullgraph=True (a graph break or a host sync
    in their forward would raise), and 10 steps give the eager losses within 1e-4; the masked patch loss on (the
    student's masked forward is one more graph)."""
    logs, patch = {}, {"patch_distill_weight": 1.0}
    for name, extra in (("eager", {}), ("compiled", {"torch_compile": True})):
        trainer = tiny_trainer(caption_folder, tiny_training_args(tmp_path / name, max_steps=10, **extra, **patch))
        trainer.train()
        logs[name] = [e for e in trainer.state.log_history if "contrastive_loss" in e]
    wrapper = trainer.model
    compiled_modules = (wrapper.student.vision_model, wrapper.teacher.vision_model, wrapper.teacher.head)
    assert all(m._compiled_call_impl is not None for m in compiled_modules)
    assert len(logs["compiled"]) == 10
    for eager, compiled in zip(logs["eager"], logs["compiled"]):
        for key in ("contrastive_loss", "distillation_loss", "patch_distillation_loss"):
            assert compiled[key] == pytest.approx(eager[key], abs=1e-4), (eager["step"], key)


def test_total_flos_follow_transformers_six_times_parameters_times_tokens(caption_folder, tmp_path):
    trainer = tiny_trainer(caption_folder, tiny_training_args(tmp_path, max_steps=1))
    batch = next(iter(trainer.get_train_dataloader()))
    wrapper = trainer.pretraining_model
    vision = wrapper.student.vision_model.num_parameters(exclude_embeddings=True)
    text = wrapper.student.text_model
    head = sum(p.numel() for p in wrapper.student_head.parameters())
    # 4 images: 2 global views of 32 px (16 patches of 8 px each) and 2 local views of 16 px (4 patches each)
    student = 6 * (vision * (4 * 2 * 16 + 4 * 2 * 4) + head * 4 * 4)
    # Trainer.floating_point_ops's own rule for a model with input_ids
    student += 6 * batch["input_ids"].numel() * text.num_parameters(exclude_embeddings=True)
    teacher = 2 * (vision * 4 * 2 * 16 + head * 4 * 2)
    assert trainer.floating_point_ops(batch) == student + teacher
