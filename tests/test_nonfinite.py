"""One bad step must not poison a run: a step whose loss or gradient is not finite changes nothing (student, teacher,
centre, optimizer), is counted and named, and too many in a row stop the run with the checkpoint to resume from."""

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModel, TrainerCallback
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from silc_hf.tools.cli import RunStopped
from silc_hf.training.trainer import NonFiniteTrainingError

from conftest import REPOSITORY, max_difference, tiny_trainer, tiny_training_args, training_state


class BadSteps(TrainerCallback):
    """Marks the optimizer steps in `steps` (counted from 1, as the Trainer's logs) as bad while they run, and keeps
    the training state right before and right after the first of them."""

    def __init__(self, trainer, steps):
        self.trainer, self.steps, self.active = trainer, set(steps), False
        self.before = self.after = None

    def on_step_begin(self, args, state, control, **kwargs):
        self.active = state.global_step + 1 in self.steps
        if self.active and self.before is None:
            self.before = training_state(self.trainer)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == min(self.steps):
            self.after = training_state(self.trainer)
        self.active = False


def nan_image_features(trainer, bad: BadSteps) -> None:
    """The student's image tower returns NaN features during the bad steps (a stand-in for an overflow)."""

    def hook(module, inputs, output):
        if bad.active:
            output.pooler_output = output.pooler_output * float("nan")
            output.image_embeds = output.image_embeds * float("nan")
        return output

    trainer.model.student.vision_model.register_forward_hook(hook)


def infinite_gradient(trainer, bad: BadSteps) -> None:
    """One weight's gradient is infinite during the bad steps; the loss stays finite."""
    weight = trainer.model.student.vision_model.embeddings.patch_embedding.weight
    weight.register_hook(lambda grad: grad + float("inf") if bad.active else grad)


def all_finite(trainer) -> bool:
    return all(torch.isfinite(t).all() for t in trainer.model.state_dict().values() if t.is_floating_point())


@pytest.mark.parametrize(
    "inject, precision",
    [(nan_image_features, {}), (infinite_gradient, {}), (nan_image_features, {"bf16": True})],
    ids=["nan-features", "inf-gradient", "nan-features-bf16"],
)
def test_one_bad_step_changes_nothing_and_training_goes_on(caption_folder, tmp_path, inject, precision):
    args = tiny_training_args(tmp_path, max_steps=12, learning_rate=2e-3, **precision)
    trainer = tiny_trainer(caption_folder, args)
    bad = BadSteps(trainer, [4])
    trainer.add_callback(bad)
    inject(trainer, bad)
    with CaptureLogger(logging.get_logger("silc_hf.training.trainer")) as captured:
        trainer.train()
    assert trainer.state.global_step == 12 and all_finite(trainer)
    assert max_difference(bad.before, bad.after) == 0  # student, head, teacher, centre, optimizer: bit-exact
    assert bad.before["optimizer"]  # (the optimizer has state to compare: the step before was applied)
    assert "Step 4 had a non-finite loss or gradient (NaN or inf) and was skipped" in captured.out
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["nonfinite_steps"] for entry in logs] == [0, 0, 0] + [1] * 9
    assert int(trainer.model.nonfinite_steps) == 1
    assert "contrastive_loss" not in logs[3]  # the skipped step's parts are not averaged into the logs
    losses = [entry["contrastive_loss"] for entry in logs if "contrastive_loss" in entry]
    assert sum(losses[-4:]) / 4 < sum(losses[:3]) / 3  # the losses after it keep falling


def test_too_many_bad_steps_in_a_row_stop_the_run_naming_the_checkpoint_to_resume_from(caption_folder, tmp_path):
    args = tiny_training_args(
        tmp_path, max_steps=12, save_strategy="steps", save_steps=2, max_consecutive_nonfinite_steps=3
    )
    trainer = tiny_trainer(caption_folder, args)
    bad = BadSteps(trainer, range(5, 13))
    trainer.add_callback(bad)
    nan_image_features(trainer, bad)
    with pytest.raises(NonFiniteTrainingError) as stopped:
        trainer.train()
    message = str(stopped.value)
    assert isinstance(stopped.value, RunStopped) and "\n" not in message  # one line through run_script
    assert "Steps 5 to 7 all had a non-finite loss or gradient (max_consecutive_nonfinite_steps=3)" in message
    assert f"resume from {tmp_path / 'checkpoint-6'} (the newest complete checkpoint" in message
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert all_finite(trainer)
    loaded = AutoModel.from_pretrained(tmp_path / "checkpoint-6").state_dict()
    assert max_difference(loaded, bad.before["student"]) == 0  # the checkpoint holds the last applied step's weights


def test_the_stop_reads_as_one_line_from_a_script(capsys):
    from silc_hf.tools.cli import run_script

    def main():
        raise NonFiniteTrainingError("Steps 5 to 7 all had a non-finite loss or gradient; resume from x.")

    with pytest.raises(SystemExit) as exit_info:
        run_script(main)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[0] == (
        "error: Steps 5 to 7 all had a non-finite loss or gradient; resume from x."
    )


def test_max_consecutive_nonfinite_steps_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="max_consecutive_nonfinite_steps=0 must be >= 1"):
        tiny_training_args(tmp_path, max_consecutive_nonfinite_steps=0)


# Two gloo ranks; rank 1 alone gets a NaN loss at step 2 (a constant: its gradients stay finite, so only the
# all-reduced decision makes rank 0 skip too). Each rank writes what it saw.
CHILD = r"""
import json, os, sys
import torch
from silc_hf.tools.cli import ArgumentParser
from silc_hf.training import SilcDataArguments, SilcModelArguments, SilcTrainingArguments, build_trainer
from conftest import max_difference, training_state
from test_nonfinite import BadSteps

config, data, output = sys.argv[1:4]
rank = int(os.environ["RANK"])
parser = ArgumentParser((SilcModelArguments, SilcDataArguments, SilcTrainingArguments))
arguments = parser.parse(["--config", config, "--train_data", data, "--output_dir", output, "--use_cpu", "true",
                          "--max_steps", "4", "--per_device_train_batch_size", "8", "--logging_steps", "1",
                          "--save_strategy", "no", "--eval_strategy", "no", "--report_to", "none"])
trainer = build_trainer(*arguments)
bad = BadSteps(trainer, [2])
trainer.add_callback(bad)
def poison(module, inputs, losses):
    if bad.active and rank == 1:
        losses["loss"] = losses["loss"] + torch.tensor(float("nan"))
    return losses
trainer.pretraining_model.register_forward_hook(poison)
trainer.train()
student = trainer.model.module.student if hasattr(trainer.model, "module") else trainer.model.student
report = {
    "rank": rank,
    "unchanged": max_difference(bad.before, bad.after) == 0,
    "nonfinite_steps": int(trainer.pretraining_model.nonfinite_steps),
    "weights": sum(p.double().sum().item() for p in student.parameters()),
}
with open(f"{output}/report-{rank}.json", "w") as file:  # a file per rank: their stdout lines can interleave
    json.dump(report, file)
torch.distributed.destroy_process_group()
"""


def test_two_ranks_skip_together_when_only_one_sees_a_nan(tmp_path):
    from conftest import write_caption_folder

    write_caption_folder(tmp_path / "data", n=32, seed=3)
    (tmp_path / "child.py").write_text(CHILD)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [str(tmp_path / "child.py"), str(REPOSITORY / "training/configs/tiny.json"), str(tmp_path / "data")]
    command += [str(tmp_path / "out")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPOSITORY / "tests"))
    # (ranks that decided apart would deadlock in the centre's all-reduce: the timeout turns that into a failure)
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr[-4000:]
    files = sorted((tmp_path / "out").glob("report-*.json"))
    reports = sorted((json.loads(file.read_text()) for file in files), key=lambda report: report["rank"])
    assert [r["rank"] for r in reports] == [0, 1]
    assert all(r["unchanged"] and r["nonfinite_steps"] == 1 for r in reports), reports
    assert reports[0]["weights"] == reports[1]["weights"]  # still in step with each other


@pytest.fixture
def poisoned_folder(tmp_path):
    """A saved SILC folder whose image tower gives NaN for every image and whose text tower gives NaN for the
    texts that contain "dog" (its token embedding is NaN): what a run saved after a diverged step looks like."""
    from silc_hf import SilcImageProcessor, SilcModel, SilcProcessor

    from conftest import clip_tokenizer, tiny_silc_config

    tokenizer = clip_tokenizer()
    torch.manual_seed(0)
    model = SilcModel(tiny_silc_config(loss_type="softmax")).eval()
    with torch.no_grad():
        model.vision_model.post_layernorm.weight[0] = float("nan")
        dog = tokenizer.convert_tokens_to_ids("dog</w>")
        model.text_model.embeddings.token_embedding.weight[dog] = float("nan")
    processor = SilcProcessor(SilcImageProcessor(size={"height": 32, "width": 32}), tokenizer, fixed_text_length=16)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    return tmp_path, model, processor


def test_evaluators_name_the_inputs_whose_embeddings_are_not_finite(poisoned_folder):
    from silc_hf.data.scenes import as_dataset
    from silc_hf.zero_shot import encode_class_names, evaluate_zero_shot_classification, text_embeddings

    _, model, processor = poisoned_folder
    with pytest.raises(ValueError, match=r"text embeddings for 'dog' are not finite \(NaN or inf\)"):
        encode_class_names(model, processor.tokenizer, ["cat", "dog", "bird"], ["a {}"])
    with pytest.raises(ValueError, match=r"text embeddings for 'a red dog' are not finite"):
        text_embeddings(model, processor, ["a cat", "a red dog", "a bird"])
    dataset = as_dataset("test", 3, image_size=32)
    with pytest.raises(ValueError, match=r"image embeddings for 'row 0', 'row 1', 'row 2' are not finite"):
        evaluate_zero_shot_classification(model, processor, dataset, ["cat", "bird"], templates=["a {}"])


def test_pipelines_refuse_non_finite_scores_naming_the_image(poisoned_folder):
    from transformers import pipeline

    from silc_hf import SilcZeroShotImageClassificationPipeline

    from conftest import random_image

    folder, _, _ = poisoned_folder
    image = random_image(0)
    classifier = pipeline(
        "zero-shot-image-classification", model=str(folder), pipeline_class=SilcZeroShotImageClassificationPipeline
    )
    with pytest.raises(ValueError, match=r"scores for 'the image' are not finite"):
        classifier(image, candidate_labels=["cat", "bird"])
    segmenter = pipeline("zero-shot-image-segmentation", model=str(folder))
    with pytest.raises(ValueError, match=r"segmentation scores for 'the image' are not finite"):
        segmenter(image, candidate_labels=["cat", "bird"])
    with pytest.raises(ValueError, match=r"text embeddings for 'dog' are not finite"):
        segmenter(image, candidate_labels=["cat", "dog"])
