"""Losses against references written from their formulas, and the 2-rank distributed equivalence."""

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from silc_hf.training.losses import DistillationLoss, distributed_contrastive_loss, sinkhorn_knopp


def _embeddings(n=4, dim=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(n, dim, generator=generator, dtype=torch.float64), dim=-1)
    texts = F.normalize(torch.randn(n, dim, generator=generator, dtype=torch.float64), dim=-1)
    return images, texts


def _reference_softmax(images, texts, log_scale):
    """CLIP loss written out: mean over i of -log softmax_j (s <x_i, y_j>) [i], both directions, halved."""
    n, scale = len(images), math.exp(log_scale)
    total = 0.0
    for i in range(n):
        row = [scale * float(images[i] @ texts[j]) for j in range(n)]
        col = [scale * float(images[j] @ texts[i]) for j in range(n)]
        total += -(row[i] - math.log(sum(math.exp(v) for v in row)))
        total += -(col[i] - math.log(sum(math.exp(v) for v in col)))
    return total / (2 * n)


def _reference_sigmoid(images, texts, log_scale, bias):
    """SigLIP loss written out: -(1/n) sum_ij log sigmoid(z_ij (s <x_i, y_j> + b)), z = +1 on the diagonal."""
    n, scale = len(images), math.exp(log_scale)
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            total += math.log1p(math.exp(-z * (scale * float(images[i] @ texts[j]) + bias)))
    return total / n


@pytest.mark.parametrize("loss_type", ["softmax", "sigmoid"])
def test_contrastive_losses_and_gradients_match_the_formulas(loss_type):
    images, texts = _embeddings()
    log_scale, bias = 1.3, -2.0

    def loss_fn(images, texts, log_scale, bias):
        return distributed_contrastive_loss(images, texts, log_scale, bias, loss_type)

    inputs = (
        images.clone().requires_grad_(),
        texts.clone().requires_grad_(),
        torch.tensor([log_scale], dtype=torch.float64, requires_grad=True),
        torch.tensor([bias], dtype=torch.float64, requires_grad=True),
    )
    loss = loss_fn(*inputs)
    if loss_type == "softmax":
        expected = _reference_softmax(images, texts, log_scale)
    else:
        expected = _reference_sigmoid(images, texts, log_scale, bias)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    # gradient check against central finite differences of the written-out formula
    loss.backward()
    eps = 1e-6
    for tensor_index, tensor in enumerate(inputs):
        for flat in range(min(tensor.numel(), 6)):
            shifted = [t.detach().clone() for t in inputs]
            shifted[tensor_index].view(-1)[flat] += eps
            up = loss_fn(*shifted).item()
            shifted[tensor_index].view(-1)[flat] -= 2 * eps
            down = loss_fn(*shifted).item()
            assert tensor.grad.view(-1)[flat].item() == pytest.approx((up - down) / (2 * eps), abs=1e-7)
    if loss_type == "softmax":  # a shared bias cannot change a softmax
        assert inputs[3].grad.abs().item() < 1e-12


def test_distillation_loss_matches_the_formula_and_moves_the_center_only_when_told():
    generator = torch.Generator().manual_seed(0)
    batch, k = 3, 6
    teacher = [torch.randn(batch, k, generator=generator, dtype=torch.float64) for _ in range(2)]
    student = [torch.randn(batch, k, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    loss_module = DistillationLoss(k, student_temperature=0.1, center_momentum=0.9).double()
    loss_module.center.copy_(torch.randn(1, k, generator=generator))
    center = loss_module.center.clone()
    loss = loss_module(student, teacher, teacher_temperature=0.05)

    # written out: pairs (teacher i, student j != i), per-sample cross-entropy, averaged over batch and pairs
    total, pairs = 0.0, 0
    for i, t in enumerate(teacher):
        for j, s in enumerate(student):
            if i == j:
                continue
            for b in range(batch):
                p = [math.exp((float(t[b, c]) - float(center[0, c])) / 0.05) for c in range(k)]
                q = [math.exp(float(s.detach()[b, c]) / 0.1) for c in range(k)]
                total -= sum(p[c] / sum(p) * math.log(q[c] / sum(q)) for c in range(k)) / batch
            pairs += 1
    assert pairs == 6
    assert loss.item() == pytest.approx(total / pairs, rel=1e-10)
    torch.testing.assert_close(loss_module.center, center, rtol=0, atol=0)  # no side effect of the loss itself
    for view in teacher:  # two micro-batches of one optimizer step, then the step's single update (DINOv2's call)
        loss_module.record_center(view)
    loss_module.update_center()
    expected_center = 0.9 * center + 0.1 * torch.cat(teacher).mean(0, keepdim=True)
    torch.testing.assert_close(loss_module.center, expected_center)

    loss.backward()  # d/ds of -sum p log softmax(s/T) = (softmax(s/T) - p) / T, summed over pairs, / (batch * pairs)
    p = [F.softmax((t - center) / 0.05, dim=-1) for t in teacher]
    q = F.softmax(student[2].detach() / 0.1, dim=-1)
    expected_grad = sum((q - p_i) / 0.1 for p_i in p) / (batch * pairs)
    torch.testing.assert_close(student[2].grad, expected_grad)

    updated = loss_module.center.clone()
    loss_module.record_center(teacher[0])  # a skipped step's outputs are dropped: the centre stays
    loss_module.discard_pending_center()
    loss_module.update_center()
    torch.testing.assert_close(loss_module.center, updated, rtol=0, atol=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank, world_size, port, images, texts, teacher_out, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        half = images.shape[0] // world_size
        rows = slice(rank * half, (rank + 1) * half)
        out = {}
        for loss_type in ("softmax", "sigmoid"):
            local_images = images[rows].clone().requires_grad_()
            local_texts = texts[rows].clone().requires_grad_()
            scale = torch.tensor([1.1], dtype=torch.float64, requires_grad=True)
            bias = torch.tensor([-1.5], dtype=torch.float64, requires_grad=True)
            loss = distributed_contrastive_loss(local_images, local_texts, scale, bias, loss_type)
            loss.backward()
            # what DDP does: average the parameter gradients over ranks
            for parameter in (scale, bias):
                dist.all_reduce(parameter.grad)
                parameter.grad /= world_size
            out[loss_type] = (
                loss.item(),
                local_images.grad / world_size,
                local_texts.grad / world_size,
                scale.grad,
                bias.grad,
            )
        center = DistillationLoss(teacher_out.shape[1]).double()
        center.update_center(teacher_out[rows])
        out["center"] = center.center.clone()
        # Sinkhorn targets: the ranks' rows differ in scale, so a per-rank shift or total would show
        out["sinkhorn"] = sinkhorn_knopp(teacher_out[rows] * (1 + 3 * rank), iterations=3)
        results[rank] = out
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one_process_on_the_global_batch():
    """Loss and gradients on 2 ranks x B equal one process on 2B (gloo, two real processes)."""
    images, texts = _embeddings(n=6, dim=5, seed=3)
    teacher_out = torch.randn(6, 7, dtype=torch.float64)
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_rank_worker, args=(2, _free_port(), images, texts, teacher_out, results), nprocs=2, join=True)

    for loss_type in ("softmax", "sigmoid"):
        full_images, full_texts = images.clone().requires_grad_(), texts.clone().requires_grad_()
        scale = torch.tensor([1.1], dtype=torch.float64, requires_grad=True)
        bias = torch.tensor([-1.5], dtype=torch.float64, requires_grad=True)
        loss = distributed_contrastive_loss(full_images, full_texts, scale, bias, loss_type)
        loss.backward()
        ranks = [results[0][loss_type], results[1][loss_type]]
        assert (ranks[0][0] + ranks[1][0]) / 2 == pytest.approx(loss.item(), abs=1e-5)
        # each rank's input gradient (already divided by world size, as DDP's averaging would) is its slice
        torch.testing.assert_close(torch.cat([ranks[0][1], ranks[1][1]]), full_images.grad, atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.cat([ranks[0][2], ranks[1][2]]), full_texts.grad, atol=1e-5, rtol=0)
        for rank in ranks:
            torch.testing.assert_close(rank[3], scale.grad, atol=1e-5, rtol=0)
            torch.testing.assert_close(rank[4], bias.grad, atol=1e-5, rtol=0)

    single = DistillationLoss(7).double()
    single.update_center(teacher_out)
    for rank in (0, 1):
        torch.testing.assert_close(results[rank]["center"], single.center)
    scaled = torch.cat([teacher_out[:3], teacher_out[3:] * 4])
    torch.testing.assert_close(
        torch.cat([results[0]["sinkhorn"], results[1]["sinkhorn"]]), sinkhorn_knopp(scaled, iterations=3)
    )


def test_sinkhorn_targets_balance_the_prototypes_and_keep_the_ranking():
    from silc_hf.training.losses import sinkhorn_knopp

    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(8, 4, generator=generator, dtype=torch.float64) * 3
    targets = sinkhorn_knopp(scores, iterations=50)
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(8, dtype=torch.float64))  # each sample a distribution
    torch.testing.assert_close(
        targets.sum(dim=0), torch.full((4,), 2.0, dtype=torch.float64), atol=1e-6, rtol=0
    )  # equal mass
    # the result is diag(a) exp(scores) diag(b): log-ratios between two samples are the same for every prototype
    log_targets = targets.log()
    differences = log_targets[0] - log_targets[1] - (scores[0] - scores[1])
    torch.testing.assert_close(differences, differences.mean().expand(4))
    with pytest.raises(ValueError, match="centering='kmeans' is not supported"):
        DistillationLoss(4, centering="kmeans")


def test_teacher_diagnostics_equal_hand_computations():
    from silc_hf.training.losses import teacher_diagnostics

    # 4 teacher rows over K = 4 prototypes: one-hot on 0, one-hot on 2, uniform, (0.5, 0.5, 0, 0)
    probs = torch.tensor(
        [[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0, 0]], dtype=torch.float64
    )
    # per-sample entropies 0, 0, ln 4, ln 2; batch mean distribution (0.4375, 0.1875, 0.3125, 0.0625)
    mean = [0.4375, 0.1875, 0.3125, 0.0625]
    # student bottlenecks: view 1 pairs (0,1)=0, (0,2)=1, (1,2)=0 -> 1/3; view 2 pairs cos 0.6, 0.8, 0 -> 1.4/3
    view1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    view2 = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    d = teacher_diagnostics(probs, [view1, view2])
    assert d["teacher_entropy"].item() == pytest.approx((math.log(4) + math.log(2)) / 4)
    assert d["teacher_entropy_fraction"].item() == pytest.approx((math.log(4) + math.log(2)) / 4 / math.log(4))
    batch_entropy = -sum(p * math.log(p) for p in mean)
    assert d["teacher_batch_entropy"].item() == pytest.approx(batch_entropy)
    assert d["teacher_batch_entropy_fraction"].item() == pytest.approx(batch_entropy / math.log(4))
    assert d["teacher_max_probability"].item() == pytest.approx((1 + 1 + 0.25 + 0.5) / 4)
    assert d["prototypes_used"].item() == 2  # argmaxes: 0, 2, 0 (ties: first), 0
    assert d["student_feature_cosine"].item() == pytest.approx((1 / 3 + 1.4 / 3) / 2, rel=1e-6)


def test_koleo_loss_is_minus_the_mean_log_nearest_neighbour_distance():
    from silc_hf.training.losses import koleo_loss

    # unit vectors at angles 0, 90 and 100 degrees (features are normalised inside, so scale them)
    angles = [0.0, math.pi / 2, math.radians(100)]
    features = torch.tensor([[3 * math.cos(a), 3 * math.sin(a)] for a in angles], requires_grad=True)
    nearest = [
        2 * math.sin(math.radians(90) / 2),
        2 * math.sin(math.radians(10) / 2),
        2 * math.sin(math.radians(10) / 2),
    ]
    loss = koleo_loss(features)
    assert loss.item() == pytest.approx(-sum(math.log(d + 1e-8) for d in nearest) / 3, rel=1e-6)
    loss.backward()
    assert features.grad.abs().sum() > 0  # it pushes neighbours apart
