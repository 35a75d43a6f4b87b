"""`SilcTrainer`: a `transformers.Trainer` that adds SILC's EMA teacher and distillation loss to the
image-text loss (its knobs: `SilcTrainingArguments` in `silc_hf.training.arguments`).

Gradient accumulation: each micro-batch's contrastive loss only sees that micro-batch's negatives (and,
under DDP, the other ranks' same-index micro-batches), so accumulating k micro-batches of B is not the
same as one batch of kB: it has k times fewer negatives per loss term. The gradients are the mean over
micro-batches; the teacher and the centre move once per optimizer step (the centre by the mean teacher output
of all its micro-batches).

A bad step changes nothing: when a step's loss or any gradient is not finite (on any rank), the optimizer, the
teacher and the centre are left as they were, the step is counted (`nonfinite_steps` in the logs), the first one
is named in a warning, and `max_consecutive_nonfinite_steps` in a row stop the run with the newest complete
checkpoint to resume from (`SilcTrainer.before_optimizer_step` / `after_optimizer_step`).
"""

import math
import os
import time
from collections import defaultdict

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.utils import logging

from ..modeling_silc import SilcModel
from ..tools.cli import RunStopped
from ..zero_shot.evaluation import ZeroShotEvaluator
from .arguments import SilcTrainingArguments
from .checkpoints import DISTILLATION_STATE_NAME, latest_complete_checkpoint, load_student_state
from .data import StreamingMultiCropDataset
from .losses import is_distributed
from .optimization import split_param_groups
from .pretraining import SilcPretrainingModel

logger = logging.get_logger(__name__)


def cosine_schedule(start: float, end: float, step: int, total_steps: int) -> float:
    """Half-cosine from `start` (step 0) to `end` (step `total_steps`), constant after."""
    progress = min(max(step, 0) / max(total_steps, 1), 1.0)
    return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2


def linear_warmup(start: float, end: float, step: int, warmup_steps: int) -> float:
    """Linear from `start` (step 0) to `end` (step `warmup_steps`), constant after."""
    if warmup_steps <= 0:
        return end
    return start + (end - start) * min(max(step, 0) / warmup_steps, 1.0)


def step_is_finite(parameters, loss_is_finite: torch.Tensor | None = None) -> bool:
    """Whether every gradient of `parameters` (and `loss_is_finite`, a boolean tensor) is finite on every rank: one
    fused norm over the gradients, one all-reduced flag, one host sync — the price of skipping a step, which a
    Python-level decision needs (PyTorch's AMP grad scaler pays it too)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    finite = torch.stack(torch._foreach_norm(grads)).isfinite().all() if grads else torch.ones((), dtype=torch.bool)
    if loss_is_finite is not None:
        finite = finite & loss_is_finite.to(finite.device)
    if is_distributed():  # one decision for all ranks: a rank-local skip would desynchronise DDP/FSDP
        bad = (~finite).float()
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        finite = bad == 0
    return bool(finite)


class NonFiniteTrainingError(RunStopped):
    """Too many optimizer steps in a row had a non-finite loss or gradient."""


class _SilcStepCallback(TrainerCallback):
    """Around each optimizer step (not micro-batch): freeze the prototypes early on; afterwards clamp the
    logit scale and move the teacher."""

    def __init__(self, trainer: "SilcTrainer"):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.before_optimizer_step(state.global_step)

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.after_optimizer_step(state.global_step)


class SilcTrainer(Trainer):
    """Trainer for SILC pretraining and fine-tuning.

    Give it a `SilcModel` (it builds the `SilcPretrainingModel` around it: head, teacher, loss) or a
    `SilcPretrainingModel`, a `SilcTrainingArguments`, a multi-crop dataset and `SilcMultiCropCollator`
    (see `silc_hf.data`), and the model's processor as `processing_class` (its normalisation is used for
    the views, and it is saved with the model). `save_model()` writes a clean `SilcModel` folder with the
    processor; every checkpoint is such a folder too, plus the head, teacher and center in
    `distillation_state.safetensors` (see `silc_hf.training.checkpoints`). `train(resume_from_checkpoint="latest")`
    (or `True`) resumes from the newest complete checkpoint in `output_dir`.
    """

    # compute_loss returns each micro-batch's mean loss; the Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model=None,
        args: SilcTrainingArguments = None,
        processing_class=None,
        zero_shot_evaluator: ZeroShotEvaluator | None = None,
        **kwargs,
    ):
        if not isinstance(args, SilcTrainingArguments):
            raise TypeError(f"SilcTrainer needs SilcTrainingArguments, got {type(args).__name__}.")
        if isinstance(model, SilcModel):
            model = self.build_pretraining_model(model, args, processing_class)
        if not isinstance(model, SilcPretrainingModel):
            raise TypeError(f"SilcTrainer trains a SilcModel or a SilcPretrainingModel, got {type(model).__name__}.")
        args.check_model(model.config)
        if args.torch_compile:
            self.compile_towers(model, args)
        super().__init__(model=model, args=args, processing_class=processing_class, **kwargs)
        if self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3:
            raise ValueError(
                "DeepSpeed ZeRO-3 partitions the parameters, so the EMA teacher would average empty shards. "
                "Use ZeRO stage 1 or 2, or FSDP (the teacher is sharded like the student and updated shard by shard)."
            )
        self.add_callback(_SilcStepCallback(self))
        self._parts: dict[str, list[torch.Tensor]] = defaultdict(list)  # applied steps since the last log
        self._step_parts: dict[str, list[torch.Tensor]] = defaultdict(list)  # this optimizer step's micro-batches
        self._step_loss_finite: torch.Tensor | None = None  # on the device: no host sync per micro-batch
        self._step_applied = True
        self._consecutive_nonfinite_steps = 0
        self._skipped_samples = 0
        self.zero_shot_evaluator = zero_shot_evaluator

    @staticmethod
    def compile_towers(model: SilcPretrainingModel, args: SilcTrainingArguments) -> None:
        """`--torch_compile`: compile the student's towers, its heads and the teacher's in place, each as one graph
        (`fullgraph=True`) per input shape (`dynamic=False`: global and local views are two shapes), rather than
        the whole step (its batched augmentation branches on the data). State-dict keys do not change."""
        options = dict(fullgraph=True, dynamic=False, backend=args.torch_compile_backend or "inductor")
        if args.torch_compile_mode:
            options["mode"] = args.torch_compile_mode
        teacher = model.teacher
        modules = (model.student.vision_model, model.student.text_model, model.student_head, model.student_patch_head)
        for module in (*modules, teacher.vision_model, teacher.head, teacher.patch_head):
            if module is not None:  # no teacher tower (head-only teacher), no separate patch head
                module.compile(**options)

    def _build_accelerator_args(self, **kwargs) -> dict:
        args = super()._build_accelerator_args(**kwargs)
        if self.args.torch_compile:  # the towers are compiled already (compile_towers); not the whole wrapper
            from accelerate.utils import TorchDynamoPlugin

            args["dynamo_plugin"] = TorchDynamoPlugin(backend="no")
        return args

    @staticmethod
    def build_pretraining_model(
        student: SilcModel, args: SilcTrainingArguments, processing_class=None
    ) -> SilcPretrainingModel:
        """Wrap a `SilcModel` with the head, teacher and loss configured by `args`."""
        image_processor = getattr(processing_class, "image_processor", None)
        return SilcPretrainingModel(
            student,
            head_num_prototypes=args.head_num_prototypes,
            head_hidden_dim=args.head_hidden_dim,
            head_bottleneck_dim=args.head_bottleneck_dim,
            head_num_layers=args.head_num_layers,
            student_temperature=args.student_temperature,
            center_momentum=args.center_momentum,
            centering=args.centering,
            patch_distillation=args.patch_distill_weight > 0,
            patch_head=args.patch_head,
            patch_loss_tokens=args.patch_loss_tokens,
            teacher_tower=args.teacher_tower,
            image_mean=getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5),
            image_std=getattr(image_processor, "image_std", None) or (0.5, 0.5, 0.5),
            blur_kernel_size=args.blur_kernel_size,
            solarize_threshold=args.solarize_threshold,
        )

    @property
    def pretraining_model(self) -> SilcPretrainingModel:
        return self.accelerator.unwrap_model(self.model)

    def get_train_dataloader(self):
        """A rank-split streaming dataset (`StreamingMultiCropDataset`) already reads only this rank's shards:
        it gets a plain DataLoader, which accelerate would otherwise dispatch or shard a second time."""
        if isinstance(self.train_dataset, StreamingMultiCropDataset) and self.args.world_size > 1:
            return torch.utils.data.DataLoader(
                self.train_dataset,
                batch_size=self._train_batch_size,
                collate_fn=self.data_collator,
                num_workers=self.args.dataloader_num_workers,
                pin_memory=self.args.dataloader_pin_memory,
                drop_last=True,
            )
        return super().get_train_dataloader()

    def floating_point_ops(self, inputs: dict) -> int:
        """Training FLOPs of one batch, transformers' estimate (6 x parameters x tokens for forward + backward)
        per tower, plus the teacher's forward (2 x parameters x tokens) on the global views; reported as
        `total_flos`. Tokens: patches of every view, text positions. The benchmarks' FLOP model
        (`silc_hf.tools.benchmark.step_flops`, for MFU) differs in two named ways: it adds the attention products
        (4 x layers x tokens^2 x width) and counts the blocks' weights only (not the pooling head, projection and
        norms)."""
        wrapper = self.pretraining_model
        vision = wrapper.student.vision_model.num_parameters(exclude_embeddings=True)
        text = wrapper.student.text_model.num_parameters(exclude_embeddings=True)
        head = sum(p.numel() for p in wrapper.student_head.parameters())
        patch = self.model.config.vision_config.patch_size
        global_tokens = inputs["global_views"][:, :, 0].numel() // patch**2
        local_views = inputs.get("local_views")
        local_tokens = local_views[:, :, 0].numel() // patch**2 if local_views is not None else 0
        views = inputs["global_views"].shape[:2].numel() + (
            local_views.shape[:2].numel() if local_views is not None else 0
        )
        text_tokens = inputs["input_ids"].numel() if self.args.contrastive_weight > 0 else 0
        student = 6 * (vision * (global_tokens + local_tokens) + text * text_tokens + head * views)
        teacher = 2 * (vision * global_tokens + head * inputs["global_views"].shape[:2].numel())
        return student + (teacher if self.args.distill_weight > 0 else 0)

    # --- schedules, indexed by optimizer step ------------------------------------------------------------

    @property
    def distill_start_step(self) -> int:
        """The optimizer step at which the distillation losses start: `distill_start_ratio` of the run, if set,
        else `distill_start_step`."""
        if self.args.distill_start_ratio is not None:
            return round(self.args.distill_start_ratio * self.state.max_steps)
        return self.args.distill_start_step

    def _distill_steps(self) -> int:
        return max(self.state.max_steps - self.distill_start_step, 1)

    def distill_weight_at(self, step: int) -> float:
        return self.args.distill_weight if step >= self.distill_start_step else 0.0

    def patch_distill_weight_at(self, step: int) -> float:
        return self.args.patch_distill_weight if step >= self.distill_start_step else 0.0

    def teacher_temperature_at(self, step: int) -> float:
        warmup = round(self.args.teacher_temperature_warmup_ratio * self._distill_steps())
        return linear_warmup(
            self.args.teacher_temperature_warmup_start,
            self.args.teacher_temperature,
            step - self.distill_start_step,
            warmup,
        )

    def teacher_momentum_at(self, step: int) -> float:
        if self.args.teacher_momentum_schedule == "constant":
            return self.args.teacher_momentum
        return cosine_schedule(
            self.args.teacher_momentum,
            self.args.teacher_momentum_end,
            step - self.distill_start_step,
            self._distill_steps(),
        )

    # --- the step --------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        skipped = inputs.pop("skipped_samples", None)
        step = self.state.global_step
        weight, patch_weight = self.distill_weight_at(step), self.patch_distill_weight_at(step)
        wrapper = self.pretraining_model
        if (weight > 0 or patch_weight > 0) and not bool(wrapper.distillation_started):
            wrapper.start_distillation()
        outputs = model(
            **inputs,
            teacher_temperature=self.teacher_temperature_at(step),
            distill_weight=weight,
            patch_distill_weight=patch_weight,
            contrastive_weight=self.args.contrastive_weight,
            koleo_weight=self.args.koleo_weight,
        )
        if model.training:  # loss parts and teacher diagnostics, averaged over the applied steps between two logs
            for name, value in outputs.items():
                if name != "loss":
                    self._step_parts[name].append(value.detach())
            finite = torch.isfinite(outputs["loss"].detach())
            self._step_loss_finite = finite if self._step_loss_finite is None else self._step_loss_finite & finite
            if skipped is not None:
                self._skipped_samples += int(skipped.sum())
        return (outputs["loss"], outputs) if return_outputs else outputs["loss"]

    def before_optimizer_step(self, step: int) -> None:
        """Cancel the prototypes' gradient early in distillation (after clipping, as DINO does): trained from
        the start, the prototypes can collapse onto each other and flatten the teacher to a uniform output. Then
        decide, on every rank alike, whether the step is finite; if not, make the optimizer step change nothing
        (every gradient dropped; under fp16 the grad scaler skips it by itself)."""
        wrapper = self.pretraining_model
        if step - self.distill_start_step < self.args.head_freeze_prototypes_steps:
            wrapper.student_head.prototypes.grad = None
            if wrapper.student_patch_head is not None:
                wrapper.student_patch_head.prototypes.grad = None
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self._step_applied = step_is_finite(trainable, self._step_loss_finite)
        self._step_loss_finite = None
        if self._step_applied:
            return
        if self.accelerator.scaler is not None:  # its step must see the non-finite gradient to skip and back off
            torch._foreach_mul_([p.grad for p in trainable if p.grad is not None], float("nan"))
        else:  # torch optimizers leave a parameter without a gradient untouched: weights, moments, step count
            for parameter in trainable:
                parameter.grad = None

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        """After an applied step: clamp the CLIP logit scale (openai/CLIP#46), take one EMA step of the teacher and
        move the centre. After a skipped one: nothing moves; count it, and stop after too many in a row."""
        wrapper = self.pretraining_model
        step_parts, self._step_parts = self._step_parts, defaultdict(list)
        centres = [wrapper.distillation_loss]
        if wrapper.patch_distillation:
            centres.append(wrapper.patch_distillation_loss)
        if not self._step_applied or self.accelerator.optimizer_step_was_skipped:
            for centre in centres:
                centre.discard_pending_center()
            self._count_nonfinite_step(step)
            return
        self._consecutive_nonfinite_steps = 0
        for name, values in step_parts.items():
            self._parts[name].extend(values)
        if wrapper.config.loss_type == "softmax":
            wrapper.student.logit_scale.clamp_(max=math.log(self.args.max_logit_scale))
        if bool(wrapper.distillation_started):
            wrapper.update_teacher(self.teacher_momentum_at(step))
            for centre in centres:
                centre.update_center()

    def _count_nonfinite_step(self, step: int) -> None:
        wrapper = self.pretraining_model
        wrapper.nonfinite_steps += 1
        self._consecutive_nonfinite_steps += 1
        number = step + 1  # the Trainer counts optimizer steps from 1
        if int(wrapper.nonfinite_steps) == 1:
            logger.warning(
                f"Step {number} had a non-finite loss or gradient (NaN or inf) and was skipped: no weight, optimizer, "
                "teacher or centre update. Later ones are counted in the logs (nonfinite_steps); "
                f"{self.args.max_consecutive_nonfinite_steps} in a row stop the run."
            )
        if self._consecutive_nonfinite_steps >= self.args.max_consecutive_nonfinite_steps:
            checkpoint = latest_complete_checkpoint(self.args.output_dir)
            resume = (
                f"resume from {checkpoint} (the newest complete checkpoint; rerunning the same command does), "
                "e.g. with a lower learning rate"
                if checkpoint
                else "no checkpoint was saved yet: restart, e.g. with a lower learning rate"
            )
            first = number - self._consecutive_nonfinite_steps + 1
            raise NonFiniteTrainingError(
                f"Steps {first} to {number} all had a non-finite loss or gradient (max_consecutive_nonfinite_steps="
                f"{self.args.max_consecutive_nonfinite_steps}); stopping with the weights of step {first - 1}, "
                f"unchanged since and not saved again: {resume}."
            )

    def zero_shot_metrics(self, metric_key_prefix: str = "eval") -> dict[str, float]:
        """The `zero_shot_evaluator`'s metrics for the current student (every rank computes them: under FSDP the
        student's forward needs all ranks), with their runtime."""
        if self.zero_shot_evaluator is None:
            return {}
        student = self.pretraining_model.student
        was_training, start = student.training, time.time()
        try:
            metrics = self.zero_shot_evaluator(student.eval(), self.processing_class)
        finally:
            student.train(was_training)
        metrics["zero_shot_runtime"] = round(time.time() - start, 3)
        return {f"{metric_key_prefix}_{name}": value for name, value in metrics.items()}

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """`eval_loss` on the eval dataset (if any) plus the zero-shot metrics (if a `zero_shot_evaluator` is set)."""
        if eval_dataset is not None or self.eval_dataset is not None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        metrics = self.zero_shot_metrics(metric_key_prefix)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if description == "Evaluation":  # not predict()
            output.metrics.update(self.zero_shot_metrics(metric_key_prefix))
        return output

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation reports `eval_loss` (the same total loss, without touching the center)."""
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add the parts since the last one
            for name, values in self._parts.items():
                mean = torch.stack(values).mean()
                logs[name] = (
                    self.accelerator.reduce(mean, reduction="mean").item() if self.args.world_size > 1 else mean.item()
                )
            self._parts.clear()
            wrapper = self.pretraining_model
            step = max(self.state.global_step - 1, 0)  # the last completed step, whose losses are logged
            logs["logit_scale"] = wrapper.student.logit_scale.exp().item()
            logs["logit_bias"] = wrapper.student.logit_bias.item()
            logs["distill_weight"] = self.distill_weight_at(step)
            if self.args.patch_distill_weight > 0:
                logs["patch_distill_weight"] = self.patch_distill_weight_at(step)
            logs["teacher_temperature"] = self.teacher_temperature_at(step)
            logs["teacher_momentum"] = self.teacher_momentum_at(step)
        if "loss" in logs or "train_loss" in logs:
            logs["skipped_samples"] = self._skipped_samples  # bad samples skipped so far (this process)
            logs["nonfinite_steps"] = int(self.pretraining_model.nonfinite_steps)  # skipped steps, whole run
        super().log(logs, start_time)

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with the distillation head in groups of its own when `head_learning_rate`
        is set (the LR schedule scales them like the rest)."""
        optimizer = super().create_optimizer(model)
        if self.args.head_learning_rate is None:
            return optimizer
        head = self.pretraining_model.student_head.parameters()
        return split_param_groups(optimizer, head, lambda _: self.args.head_learning_rate)

    def get_decay_parameter_names(self, model) -> list[str]:
        """Weight decay on matrices only: not on biases, norms, class token, probe or logit scale/bias
        (open_clip's rule: parameters with fewer than 2 dimensions)."""
        return [name for name, parameter in model.named_parameters() if parameter.ndim >= 2]

    def _issue_warnings_after_load(self, load_result) -> None:
        """Resuming must restore the whole pretraining state (teacher, head, center included); only the count of
        skipped steps may be missing (checkpoints written before it existed: the count restarts at 0)."""
        missing = [key for key in load_result.missing_keys if key != "nonfinite_steps"]
        if missing or load_result.unexpected_keys:
            raise ValueError(
                f"The checkpoint does not match the SILC pretraining state: missing {missing[:5]}, "
                f"unexpected {load_result.unexpected_keys[:5]}. Resume with the same model and head settings."
            )

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """`resume_from_checkpoint`: a checkpoint folder, or "latest" / `True` for the newest *complete* one in
        `output_dir` (folders cut short by a kill are skipped with a warning; none found: step 0)."""
        if resume_from_checkpoint is True or resume_from_checkpoint == "latest":
            resume_from_checkpoint = latest_complete_checkpoint(self.args.output_dir)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """A clean `SilcModel` folder (student weights, config, processor; no teacher, head or center),
        loadable by `AutoModel` and the pipelines. Checkpoints (`_internal_call`) add the rest of the
        pretraining state in `distillation_state.safetensors`. Under FSDP, checkpoints keep the Trainer's
        own format (resumable, not loadable as a model)."""
        if _internal_call and self.is_fsdp_enabled:
            return super().save_model(output_dir, _internal_call=True)
        output_dir = output_dir or self.args.output_dir
        state_dict = self.accelerator.get_state_dict(self.model)  # gathers DeepSpeed shards
        if not self.args.should_save:
            return
        prefix = "student."
        student_state = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
        self.pretraining_model.student.save_pretrained(output_dir, state_dict=student_state)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))
        if _internal_call:
            rest = {key: value.contiguous() for key, value in state_dict.items() if not key.startswith(prefix)}
            save_file(rest, os.path.join(output_dir, DISTILLATION_STATE_NAME), metadata={"format": "pt"})

    def _load_best_model(self) -> None:
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return super()._load_best_model()
        self._load_from_checkpoint(self.state.best_model_checkpoint)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Restore student, head, teacher and center from a checkpoint written by `save_model`."""
        if self.is_fsdp_enabled or not os.path.isfile(os.path.join(resume_from_checkpoint, DISTILLATION_STATE_NAME)):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        state = {f"student.{key}": value for key, value in load_student_state(resume_from_checkpoint).items()}
        state.update(load_file(os.path.join(resume_from_checkpoint, DISTILLATION_STATE_NAME)))
        self._issue_warnings_after_load((model or self.model).load_state_dict(state, strict=False))


__all__ = ["SilcTrainer"]
