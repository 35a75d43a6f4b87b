"""SILC's training losses: the image-text contrastive loss over the global batch (CLIP softmax or SigLIP sigmoid,
features gathered across ranks) and the DINO-style local-to-global distillation loss with its centring, KoLeo and
the teacher diagnostics.

The contrastive pieces are the model's own (`silc_hf.modeling_silc`: L2-normalised embeddings, *log* logit scale),
so that `SilcModel(..., return_loss=True)` and the trainer share one implementation.
"""

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..modeling_silc import image_text_logits, sigmoid_contrastive_loss

CENTERINGS = ("ema", "sinkhorn")  # DINO's EMA centre, DINOv2's Sinkhorn-Knopp
PATCH_HEADS = ("shared", "separate")  # the patch head: the DINO head itself (DINOv2's default) or its own
PATCH_LOSS_TOKENS = ("masked", "all")  # iBOT: the masked patches; TIPSv2: every patch of a masked view
TEACHER_TOWERS = ("ema", "student")  # an EMA copy of the tower (DINO, SILC), or the student's with an EMA head (TIPSv2)


def check_choice(name: str, value, choices) -> None:
    """Raise `ValueError` naming `name`, its `value` and the `choices` when `value` is not one of them."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; use one of {list(choices)}.")


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's slice (all_reduce, then slice)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.batch = dist.get_rank(), tensor.shape[0]
        gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, tensor.contiguous())
        return torch.cat(gathered)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad_output = grad_output.contiguous()
        dist.all_reduce(grad_output)
        return grad_output[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from all ranks along dim 0, differentiably; the identity on one process."""
    return _AllGatherWithGrad.apply(tensor) if is_distributed() else tensor


def distributed_contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    loss_type: str,
) -> torch.Tensor:
    """Image-text loss over the global batch, computed locally (open_clip's `local_loss` + `gather_with_grad`).

    Each rank scores its own images and texts against all ranks' texts and images. The mean of the ranks'
    losses equals the single-process loss over the global batch, and so do the gradients once DDP averages
    them: every rank's loss only counts its own rows, so the gathered features are not counted `world_size`
    times (open_clip#616).
    """
    all_images, all_texts = gather_with_grad(image_embeds), gather_with_grad(text_embeds)
    first = dist.get_rank() * image_embeds.shape[0] if is_distributed() else 0
    image_to_text = image_text_logits(image_embeds, all_texts, logit_scale, logit_bias)  # (local, global)
    if loss_type == "sigmoid":
        return sigmoid_contrastive_loss(image_to_text, first)
    if loss_type != "softmax":
        raise ValueError(f"loss_type={loss_type!r} is not supported; use 'softmax' or 'sigmoid'.")
    text_to_image = image_text_logits(text_embeds, all_images, logit_scale, logit_bias)  # (local, global)
    labels = torch.arange(image_embeds.shape[0], device=image_embeds.device) + first
    return (F.cross_entropy(image_to_text, labels) + F.cross_entropy(text_to_image, labels)) / 2


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """Teacher targets with equal mass on every prototype over the global batch (SwAV; DINOv2
    `sinkhorn_knopp_teacher`): alternately normalise prototype totals to 1/K and sample totals to 1/B.
    `scores` are `(batch, K)` logits already divided by the temperature; returns rows summing to 1."""
    # one shift for the global batch: it cancels in the normalisations only if shared (a process may hold no rows)
    shift = scores.max() if scores.numel() else scores.new_tensor(float("-inf"))
    num_prototypes, batch = scores.shape[1], torch.tensor(float(scores.shape[0]), device=scores.device)
    if is_distributed():
        dist.all_reduce(shift, op=dist.ReduceOp.MAX)
        dist.all_reduce(batch)  # kept a tensor: no host sync
    q = torch.exp(scores - shift).t()  # (K, batch)
    total = q.sum()
    if is_distributed():
        dist.all_reduce(total)
    q /= total
    for _ in range(iterations):
        rows = q.sum(dim=1, keepdim=True)
        if is_distributed():
            dist.all_reduce(rows)
        q /= rows * num_prototypes
        q /= q.sum(dim=0, keepdim=True) * batch
    return (q * batch).t()


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy regulariser (Sablayrolles et al. 2019; DINOv2 `loss/koleo_loss.py`):
    `-mean log(distance to the nearest other sample)` of L2-normalised `(batch, dim)` features. It pushes each
    sample away from its nearest neighbour, i.e. spreads the batch over the sphere (computed per process)."""
    features = F.normalize(features.float(), dim=-1)
    similarity = features @ features.t()
    similarity.fill_diagonal_(-2.0)  # never one's own neighbour
    nearest = similarity.argmax(dim=1)
    distances = (features - features[nearest]).norm(dim=-1)
    return -torch.log(distances + eps).mean()


@torch.no_grad()
def teacher_diagnostics(teacher_probs: torch.Tensor, student_bottleneck: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """What tells a healthy self-distillation from a collapsing one, from tensors the step already has.

    `teacher_probs` `(n, K)`: the centred, sharpened teacher distributions of all global views; `student_bottleneck`:
    one `(batch, d)` tensor of L2-normalised head bottleneck features per student view. Healthy: each teacher row
    sharp (`teacher_entropy` well below ln K), the batch spread over many prototypes (`teacher_batch_entropy`
    near ln K, many `prototypes_used`), different images' features apart (`student_feature_cosine` well below 1).
    DINO's two failure modes: collapse onto one prototype (batch entropy falls) and a uniform teacher (per-sample
    entropy rises to ln K); the second follows when the features contract (cosine rises) and centring removes
    what they share. Returns detached scalars (this process's batch; no communication, no host sync).
    """
    log_k = math.log(teacher_probs.shape[-1])
    probs = teacher_probs.float()
    entropy = -(probs * probs.clamp_min(1e-30).log()).sum(dim=-1).mean()
    mean_probs = probs.mean(dim=0)
    batch_entropy = -(mean_probs * mean_probs.clamp_min(1e-30).log()).sum()
    used = torch.zeros(probs.shape[-1], dtype=torch.bool, device=probs.device)
    used[probs.argmax(dim=-1)] = True
    cosines = []
    for features in student_bottleneck:  # mean cosine over pairs of different images: (|sum|^2 - n) / (n (n - 1))
        n = features.shape[0]
        if n > 1:
            cosines.append((features.float().sum(dim=0).square().sum() - n) / (n * (n - 1)))
    return {
        "teacher_entropy": entropy,
        "teacher_entropy_fraction": entropy / log_k,
        "teacher_batch_entropy": batch_entropy,
        "teacher_batch_entropy_fraction": batch_entropy / log_k,
        "teacher_max_probability": probs.max(dim=-1).values.mean(),
        "prototypes_used": used.sum().float(),
        "student_feature_cosine": torch.stack(cosines).mean() if cosines else torch.zeros((), device=probs.device),
    }


class DistillationLoss(nn.Module):
    """DINO's self-distillation loss (Caron et al. 2021; DINOv2 `loss/dino_clstoken_loss.py`), owning the center.

    The teacher's prototype scores are centred (an EMA of their batch mean, all-reduced across ranks) and
    sharpened with the teacher temperature; the student's are softened with `student_temperature`. The loss
    is the cross-entropy `-sum p_teacher * log p_student`, averaged over the batch and over all pairs (teacher
    global view i, student view j) with j != i.

    As in DINOv2, the centre moves only on an explicit call, never as a side effect of `forward`: the trainer
    records each micro-batch's teacher outputs (`record_center`) and moves the centre once per optimizer step,
    after a step that was applied (`update_center`), or drops them after a skipped one (`discard_pending_center`).
    """

    def __init__(
        self,
        num_prototypes: int,
        student_temperature: float = 0.1,
        center_momentum: float = 0.9,
        centering: str = "ema",
    ):
        super().__init__()
        if centering not in CENTERINGS:
            raise ValueError(f"centering={centering!r} is not supported; use 'ema' (DINO) or 'sinkhorn' (DINOv2).")
        self.student_temperature = student_temperature
        self.center_momentum = center_momentum
        self.centering = centering
        self.register_buffer("center", torch.zeros(1, num_prototypes))
        self._pending_sum: torch.Tensor | None = None  # recorded teacher outputs of this step, this process
        self._pending_count = 0

    def teacher_probabilities(
        self, teacher_views: list[torch.Tensor], teacher_temperature: float
    ) -> list[torch.Tensor]:
        """Centred and sharpened teacher distributions, one `(batch, K)` tensor per global view."""
        if self.centering == "ema":
            return [F.softmax((t - self.center) / teacher_temperature, dim=-1) for t in teacher_views]
        probs = sinkhorn_knopp(torch.cat(teacher_views).float() / teacher_temperature)
        return list(probs.split([view.shape[0] for view in teacher_views]))

    def forward(
        self,
        student_views: list[torch.Tensor],
        teacher_views: list[torch.Tensor],
        teacher_temperature: float,
        teacher_probs: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`student_views[j]` / `teacher_views[i]` are `(batch, num_prototypes)` head outputs; student views
        `0..len(teacher_views)-1` are the same global crops as the teacher's. `teacher_probs`, when the caller
        already has them, are `teacher_probabilities(teacher_views, teacher_temperature)`."""
        if teacher_probs is None:
            teacher_probs = self.teacher_probabilities(teacher_views, teacher_temperature)
        student_log_probs = [F.log_softmax(s / self.student_temperature, dim=-1) for s in student_views]
        total, pairs = 0.0, 0
        for i, p_teacher in enumerate(teacher_probs):
            for j, log_p_student in enumerate(student_log_probs):
                if i == j:
                    continue
                total = total - (p_teacher * log_p_student).sum(dim=-1).mean()
                pairs += 1
        return total / pairs

    @torch.no_grad()
    def record_center(self, teacher_output: torch.Tensor) -> None:
        """Add teacher outputs `(n, K)` to the statistics of the next `update_center` (this process's sum)."""
        batch_sum = teacher_output.float().sum(dim=0, keepdim=True)
        self._pending_sum = batch_sum if self._pending_sum is None else self._pending_sum + batch_sum
        self._pending_count += teacher_output.shape[0]

    def discard_pending_center(self) -> None:
        """Forget the recorded teacher outputs (a skipped step must not move the centre)."""
        self._pending_sum, self._pending_count = None, 0

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor | None = None) -> None:
        """center <- m * center + (1 - m) * mean, over the global batch, of the recorded teacher outputs and
        `teacher_output` (when given); then the record is cleared. Nothing recorded: the centre stays. Every rank
        must call it (the statistics are all-reduced)."""
        if teacher_output is not None:
            self.record_center(teacher_output)
        if self._pending_sum is None:
            return
        batch_sum = self._pending_sum
        count = torch.tensor(float(self._pending_count), device=batch_sum.device)
        self.discard_pending_center()
        if is_distributed():
            dist.all_reduce(batch_sum)
            dist.all_reduce(count)
        self._move_center(batch_sum, count)

    def _move_center(self, batch_sum: torch.Tensor, count: torch.Tensor) -> None:
        self.center.mul_(self.center_momentum).add_(batch_sum / count, alpha=1 - self.center_momentum)


class PatchDistillationLoss(DistillationLoss):
    """iBOT's masked patch loss (Zhou et al. 2022; DINOv2 `loss/ibot_patch_loss.py`), owning its own centre.

    The teacher sees the unmasked view, the student the view with some patches replaced by the mask token; at each
    selected patch (the masked ones, or every patch of a masked view as in TIPSv2) the student's patch head output
    is pulled towards the teacher's centred, sharpened distribution for that patch. Per token the loss is
    `-sum p_teacher * log p_student`; each masked view contributes the mean over its selected tokens, and the sum
    over views is divided by the number of global views in the batch, masked or not (DINOv2's normalisation: with
    half the views masked the loss is half of the masked views' mean). Centring: an EMA of the selected teacher
    tokens' mean (iBOT's second centre) or Sinkhorn-Knopp over the selected tokens of the global batch (DINOv2).
    """

    def forward(
        self,
        student_tokens: torch.Tensor,
        teacher_probs: torch.Tensor,
        token_weights: torch.Tensor,
        num_views: int,
    ) -> torch.Tensor:
        """`student_tokens` `(n, K)` patch-head outputs of the selected tokens, `teacher_probs` `(n, K)` their
        targets (`teacher_probabilities`), `token_weights` `(n,)` one over the number of selected tokens of each
        token's view, `num_views` the global views of this process's batch."""
        log_p_student = F.log_softmax(student_tokens / self.student_temperature, dim=-1)
        per_token = -(teacher_probs * log_p_student).sum(dim=-1)
        return (per_token * token_weights).sum() / num_views

    def _move_center(self, batch_sum: torch.Tensor, count: torch.Tensor) -> None:
        """As `DistillationLoss`'s, except that a step whose global batch selected no token (possible with
        `mask_probability` < 0.5) leaves the centre where it is."""
        moved = self.center * self.center_momentum + batch_sum / count.clamp(min=1) * (1 - self.center_momentum)
        self.center.copy_(torch.where(count > 0, moved, self.center))
