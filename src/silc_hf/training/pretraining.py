"""SILC's pretraining task: the DINO head, the EMA teacher and the wrapper that the `Trainer` trains.

`SilcPretrainingModel` is the task (DINOv2's `SSLMetaArch`, open_clip's distillation task, in Hugging Face
form). It holds the student `SilcModel`, the student head, the teacher (a frozen float32 copy of the student's vision
tower and head, always in eval mode) and the distillation loss with its center; all of it is in the checkpoints,
and only the student is exported.
"""

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling_silc import SilcModel
from .augmentation import apply_photometric
from .losses import (
    PATCH_HEADS,
    PATCH_LOSS_TOKENS,
    TEACHER_TOWERS,
    DistillationLoss,
    PatchDistillationLoss,
    check_choice,
    distributed_contrastive_loss,
    koleo_loss,
    teacher_diagnostics,
)


class DINOHead(nn.Module):
    """DINO projection head (Caron et al. 2021; DINOv2 `layers/dino_head.py`): an MLP with GELUs down to a
    bottleneck, L2 normalisation, then a bias-free linear layer onto `num_prototypes` whose rows are kept at
    unit norm (DINO's weight-normalised last layer with its gain frozen at 1)."""

    def __init__(
        self, in_dim: int, num_prototypes: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, num_layers: int = 3
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"head_num_layers={num_layers} must be >= 1.")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers = []
        for index, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(fan_in, fan_out))
            if index < num_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.prototypes = nn.Parameter(torch.empty(num_prototypes, bottleneck_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # std 1/sqrt(fan_in): DINO's 0.02 at its 2048-wide layers, and still norm-preserving in small heads, where
        # 0.02 would shrink the bottleneck so much that its L2 normalisation blows the gradients up.
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=module.in_features**-0.5)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def bottleneck(self, pooled: torch.Tensor) -> torch.Tensor:
        """L2-normalised bottleneck features `(batch, bottleneck_dim)`."""
        return F.normalize(self.mlp(pooled), dim=-1)

    def prototype_scores(self, bottleneck: torch.Tensor) -> torch.Tensor:
        """Cosine similarities with the unit-norm prototypes `(batch, num_prototypes)`."""
        return bottleneck @ F.normalize(self.prototypes, dim=-1).t()

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.prototype_scores(self.bottleneck(pooled))


class SilcTeacher(nn.Module):
    """EMA teacher: a copy of the student's vision tower and head (and patch head, when separate). No gradients;
    eval mode whatever `train()` says, so that dropout or other train-time behaviour never reaches it.

    Without a tower (`vision_model=None`: TIPSv2's head-only teacher) it holds only the heads, and its features
    are the student tower's, run without gradient (`SilcPretrainingModel` passes the student's own global forward,
    detached: the same numbers, no second forward)."""

    def __init__(self, vision_model: nn.Module | None, head: DINOHead, patch_head: DINOHead | None = None):
        super().__init__()
        self.vision_model = copy.deepcopy(vision_model).float() if vision_model is not None else None
        self.head = copy.deepcopy(head).float()
        self.patch_head = copy.deepcopy(patch_head).float() if patch_head is not None else None
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.vision_model(pixel_values=pixel_values).pooler_output)


def _float32(device: torch.device):
    """A region computed in float32 even inside the Trainer's bf16/fp16 autocast (photometric ops, losses)."""
    return torch.autocast(device.type, enabled=False)


def ema_update(teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor], momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, fused over all tensors (`torch._foreach_*`)."""
    student = [s.detach().to(t.dtype) for t, s in zip(teacher, student)]
    torch._foreach_mul_(teacher, momentum)
    torch._foreach_add_(teacher, student, alpha=1 - momentum)


class SilcPretrainingModel(nn.Module):
    """Student `SilcModel` + student head + EMA teacher + distillation loss; returns SILC's named losses.

    `forward` takes the multi-crop batch (uint8 views and their photometric parameters, see
    `silc_hf.training.augmentation`), texts, and the step-dependent teacher temperature and distillation weight:

        loss = contrastive_weight * mean over global views v of contrastive(image_v, text)
               + distill_weight * distillation

    The student's global forward serves both terms; the texts are encoded once for both global views. The
    outputs also carry the teacher diagnostics (`silc_hf.training.losses.teacher_diagnostics`) whenever distillation
    runs.
    """

    def __init__(
        self,
        student: SilcModel,
        head_num_prototypes: int = 65536,
        head_hidden_dim: int = 2048,
        head_bottleneck_dim: int = 256,
        head_num_layers: int = 3,
        student_temperature: float = 0.1,
        center_momentum: float = 0.9,
        centering: str = "ema",
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        blur_kernel_size: int = 9,
        solarize_threshold: float = 0.5,
        patch_distillation: bool = False,
        patch_head: str = "shared",
        patch_loss_tokens: str = "masked",
        teacher_tower: str = "ema",
    ):
        super().__init__()
        check_choice("patch_head", patch_head, PATCH_HEADS)
        check_choice("patch_loss_tokens", patch_loss_tokens, PATCH_LOSS_TOKENS)
        check_choice("teacher_tower", teacher_tower, TEACHER_TOWERS)
        self.student = student
        width = student.config.vision_config.hidden_size
        head_shape = (width, head_num_prototypes, head_hidden_dim, head_bottleneck_dim, head_num_layers)
        self.student_head = DINOHead(*head_shape).to(student.dtype)
        self.student_patch_head = None
        self.patch_loss_tokens = patch_loss_tokens
        if patch_distillation:
            # iBOT / DINOv2: a learned token in place of the masked patches, zeros at the start; it belongs to the
            # task, not to the exported model (which never sees masked inputs)
            self.mask_token = nn.Parameter(torch.zeros(width, dtype=student.dtype))
            if patch_head == "separate":
                self.student_patch_head = DINOHead(*head_shape).to(student.dtype)
            self.patch_distillation_loss = PatchDistillationLoss(
                head_num_prototypes, student_temperature, center_momentum, centering
            )
        tower = student.vision_model if teacher_tower == "ema" else None
        self.teacher = SilcTeacher(tower, self.student_head, self.student_patch_head)
        self.distillation_loss = DistillationLoss(head_num_prototypes, student_temperature, center_momentum, centering)
        # Whether the teacher has been (re-)initialised from the student: distillation may start late.
        self.register_buffer("distillation_started", torch.zeros((), dtype=torch.bool))
        # Optimizer steps skipped because their loss or gradients were not finite (kept with the checkpoints).
        self.register_buffer("nonfinite_steps", torch.zeros((), dtype=torch.long))
        self.photometric = dict(
            image_mean=list(image_mean),
            image_std=list(image_std),
            blur_kernel_size=blur_kernel_size,
            solarize_threshold=solarize_threshold,
        )

    @property
    def config(self):
        return self.student.config

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.train(False)
        return self

    def activation_checkpointing_enable(self, *args, **kwargs) -> None:
        """Checkpoint the student's layers (the teacher runs without gradients and needs none)."""
        self.student.activation_checkpointing_enable(*args, **kwargs)

    @property
    def patch_distillation(self) -> bool:
        return hasattr(self, "mask_token")

    def ema_parameters(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Matching (teacher, student) parameter lists, checked by name: the tower (unless the teacher is head-only),
        the head, and the patch head when it is separate."""
        teacher, student = {}, {}
        if self.teacher.vision_model is not None:
            teacher.update(self.teacher.vision_model.named_parameters())
            student.update(self.student.vision_model.named_parameters())
        teacher.update({f"head.{k}": v for k, v in self.teacher.head.named_parameters()})
        student.update({f"head.{k}": v for k, v in self.student_head.named_parameters()})
        if self.student_patch_head is not None:
            teacher.update({f"patch_head.{k}": v for k, v in self.teacher.patch_head.named_parameters()})
            student.update({f"patch_head.{k}": v for k, v in self.student_patch_head.named_parameters()})
        if teacher.keys() != student.keys():
            raise RuntimeError(f"Teacher and student parameters differ: {sorted(teacher.keys() ^ student.keys())[:5]}")
        names = sorted(teacher)
        return [teacher[n] for n in names], [student[n] for n in names]

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """One EMA step of the teacher towards the student (call once per optimizer step)."""
        ema_update(*self.ema_parameters(), momentum)

    @torch.no_grad()
    def start_distillation(self) -> None:
        """Copy the student into the teacher and reset the center (SigLIP 2's late start; DINO's init)."""
        teacher, student = self.ema_parameters()
        torch._foreach_copy_(teacher, [s.detach().to(t.dtype) for t, s in zip(teacher, student)])
        self.distillation_loss.center.zero_()
        if self.patch_distillation:
            self.patch_distillation_loss.center.zero_()
        self.distillation_started.fill_(True)

    def _pixels(self, views: torch.Tensor, augment: dict[str, torch.Tensor]) -> torch.Tensor:
        """(batch, num_views, 3, H, W) uint8 -> (num_views * batch, 3, H, W) augmented, view-major."""
        batch, num_views = views.shape[:2]
        views = views.transpose(0, 1).flatten(0, 1)
        augment = {key: value.transpose(0, 1).flatten(0, 1) for key, value in augment.items()}
        with _float32(views.device):  # the photometric ops stay in float32 under --bf16 / --fp16
            pixels = apply_photometric(views, augment, **self.photometric)
        return pixels.to(self.student.dtype)

    @torch.no_grad()
    def _teacher_features(self, global_pixels: torch.Tensor, student_out) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's pooled features `(views * batch, width)` and patch tokens `(views * batch, patches, width)`
        of the global views: from its EMA tower, or (head-only teacher) the student's own forward, detached."""
        if self.teacher.vision_model is None:
            out = student_out
        else:  # the teacher's weights stay float32; under autocast its matmuls run in bf16/fp16, as in DINO
            out = self.teacher.vision_model(pixel_values=global_pixels.float())
        prefix = self.student.vision_model.embeddings.num_prefix_tokens
        return out.pooler_output.detach().float(), out.last_hidden_state[:, prefix:].detach().float()

    def _patch_distillation(
        self,
        global_pixels: torch.Tensor,
        global_masks: torch.Tensor,
        teacher_tokens: torch.Tensor,
        teacher_temperature: float,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """iBOT's loss on the masked global views (`PatchDistillationLoss`) and its teacher diagnostics. The student
        runs once more, on the masked views only, with the mask token in place of their masked patches; the
        unmasked forward that feeds the image-text loss is left as it is."""
        masks = global_masks.transpose(0, 1).flatten(0, 1)  # (views * batch, patches), view-major like the pixels
        masked_views = masks.any(dim=1)
        masked_views[0] |= ~masked_views.any()  # no masked view here: run one anyway (no tokens), so DDP sees the graph
        view_masks = masks[masked_views]
        out = self.student.vision_model(
            pixel_values=global_pixels[masked_views], bool_masked_pos=view_masks, mask_token=self.mask_token
        )
        prefix = self.student.vision_model.embeddings.num_prefix_tokens
        selected = view_masks if self.patch_loss_tokens == "masked" else torch.ones_like(view_masks)
        weights = (1.0 / selected.sum(dim=1, keepdim=True).clamp(min=1)).expand_as(selected)[selected]
        separate = self.student_patch_head is not None
        student_head = self.student_patch_head if separate else self.student_head
        teacher_head = self.teacher.patch_head if separate else self.teacher.head
        bottleneck = student_head.bottleneck(out.last_hidden_state[:, prefix:][selected])
        student_logits = student_head.prototype_scores(bottleneck).float()
        teacher_logits = teacher_head(teacher_tokens[masked_views][selected]).float()
        loss_fn = self.patch_distillation_loss
        with _float32(global_pixels.device):
            teacher_probs = loss_fn.teacher_probabilities([teacher_logits], teacher_temperature)[0]
            loss = loss_fn(student_logits, teacher_probs, weights.float(), num_views=masks.shape[0])
            if self.training and loss_fn.centering == "ema":
                loss_fn.record_center(teacher_logits)
            diagnostics = {}
            if len(teacher_probs):
                features = [bottleneck.detach().float()]
                diagnostics = {f"patch_{k}": v for k, v in teacher_diagnostics(teacher_probs, features).items()}
        return loss, diagnostics

    def forward(
        self,
        global_views: torch.Tensor,
        global_augment: dict[str, torch.Tensor],
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        local_views: torch.Tensor | None = None,
        local_augment: dict[str, torch.Tensor] | None = None,
        teacher_temperature: float = 0.04,
        distill_weight: float = 1.0,
        contrastive_weight: float = 1.0,
        koleo_weight: float = 0.0,
        global_masks: torch.Tensor | None = None,
        patch_distill_weight: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        batch, num_global = global_views.shape[:2]
        student = self.student
        global_pixels = self._pixels(global_views, global_augment)
        global_out = student.vision_model(pixel_values=global_pixels)
        losses, loss = {}, 0.0
        if contrastive_weight > 0:  # 0: self-distillation alone (the text tower is not run)
            text_out = student.text_model(input_ids=input_ids, attention_mask=attention_mask)
            with _float32(global_pixels.device):  # losses in float32 under mixed precision
                text_embeds = F.normalize(text_out.text_embeds.float(), dim=-1)
                image_embeds = F.normalize(global_out.image_embeds.float(), dim=-1).view(num_global, batch, -1)
                contrastive = torch.stack(
                    [
                        distributed_contrastive_loss(
                            view, text_embeds, student.logit_scale, student.logit_bias, student.config.loss_type
                        )
                        for view in image_embeds
                    ]
                ).mean()
            losses["contrastive_loss"] = contrastive
            loss = contrastive_weight * contrastive

        if distill_weight > 0 or patch_distill_weight > 0:
            teacher_pooled, teacher_tokens = self._teacher_features(global_pixels, global_out)
        if distill_weight > 0:
            student_pooled = [global_out.pooler_output]
            if local_views is not None and local_views.shape[1] > 0:
                local_pixels = self._pixels(local_views, local_augment)
                local_out = student.vision_model(pixel_values=local_pixels, interpolate_pos_encoding=True)
                student_pooled.append(local_out.pooler_output)
            bottleneck = self.student_head.bottleneck(torch.cat(student_pooled))
            student_logits = self.student_head.prototype_scores(bottleneck).float().split(batch)
            # the teacher's weights stay float32; under autocast its matmuls run in bf16/fp16, as in DINO
            teacher_logits = self.teacher.head(teacher_pooled).float().split(batch)
            loss_fn = self.distillation_loss
            with _float32(global_pixels.device):
                teacher_probs = loss_fn.teacher_probabilities(list(teacher_logits), teacher_temperature)
                distillation = loss_fn(list(student_logits), list(teacher_logits), teacher_temperature, teacher_probs)
                if self.training and loss_fn.centering == "ema":  # moves at the optimizer step, if it is applied
                    loss_fn.record_center(torch.cat(teacher_logits))
                features = [view.float() for view in bottleneck.detach().split(batch)]
                losses.update(teacher_diagnostics(torch.cat(teacher_probs), features))
            losses["distillation_loss"] = distillation
            loss = loss + distill_weight * distillation
            if koleo_weight > 0:  # DINOv2: per global view, on the features that enter the head
                with _float32(global_pixels.device):
                    pooled = global_out.pooler_output.float().split(batch)
                    koleo = torch.stack([koleo_loss(view) for view in pooled]).mean()
                losses["koleo_loss"] = koleo
                loss = loss + distill_weight * koleo_weight * koleo
        if patch_distill_weight > 0:
            if not self.patch_distillation or global_masks is None:
                raise ValueError(
                    "Masked patch distillation needs a SilcPretrainingModel built with patch_distillation=True and "
                    "the batch's global_masks (a MultiCropTransform given the model's patch_size)."
                )
            patch_loss, diagnostics = self._patch_distillation(
                global_pixels, global_masks, teacher_tokens, teacher_temperature
            )
            losses.update(diagnostics)
            losses["patch_distillation_loss"] = patch_loss
            loss = loss + patch_distill_weight * patch_loss
        if not torch.is_tensor(loss):
            raise ValueError("contrastive_weight and distill_weight are both 0: there is nothing to train.")
        losses["loss"] = loss
        return losses
