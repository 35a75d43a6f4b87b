"""Metrics of the zero-shot evaluations, computed here (no Hub-hosted `evaluate` metric), and the names under which
the package reports them. Conventions:

- ranking ties are broken in favour of the lower index (a stable sort), for top-k and for recall@k;
- segmentation ignores `ignore_index` pixels; a class absent from both prediction and ground truth has no
  IoU and does not count in the mean; pixel accuracy is over the non-ignored pixels.
"""

import numpy as np
import torch
import torch.nn.functional as F

# Task names of the results JSON and the model card (Hub `model-index` task types).
CLASSIFICATION_TASK = "zero-shot-image-classification"
RETRIEVAL_TASK = "image-text-retrieval"
SEGMENTATION_TASK = "zero-shot-image-segmentation"
LINEAR_PROBE_TASK = "few-shot-linear-probe"
SEGMENTATION_PROBE_TASK = "linear-probe-segmentation"

# What `ZeroShotEvaluator` reports during training (as `eval_<name>`), read by the run report, plots and the demo.
ZERO_SHOT_TOP1 = "zero_shot_top1"
IMAGE_TO_TEXT_R1 = "image_to_text_R@1"
TEXT_TO_IMAGE_R1 = "text_to_image_R@1"
SEGMENTATION_MIOU = "segmentation_mIoU"
# share of the scored pixels given to the most-predicted class: near 1 when a segmenter paints everything one name
SEGMENTATION_TOP_SHARE = "segmentation_top_class_share"


def ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each row's target column under a stable descending sort (ties: lower index first)."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return (order == targets.view(-1, 1)).int().argmax(dim=1)


def topk_accuracy(scores: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """Fraction of rows whose target class is among the k best-scored classes."""
    rank = ranks(scores, targets)
    return {f"top{k}_accuracy": (rank < k).float().mean().item() for k in ks}


def recall_at_k(similarity: torch.Tensor, positives: list[set[int]], ks=(1, 5, 10)) -> dict[str, float]:
    """Fraction of queries (rows) with at least one positive candidate (column) in their top k."""
    order = torch.sort(similarity, dim=1, descending=True, stable=True).indices
    best = torch.tensor([min(int((order[q] == c).nonzero()) for c in positives[q]) for q in range(len(positives))])
    return {f"R@{k}": (best < k).float().mean().item() for k in ks}


def confusion_matrix(
    prediction: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """`(num_classes, num_classes)` counts, rows = ground truth, columns = prediction. Predictions outside
    [0, num_classes) (e.g. background -1) count as wrong for their ground-truth class."""
    prediction, target = prediction.flatten().long(), target.flatten().long()
    valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    valid &= (target >= 0) & (target < num_classes)
    prediction, target = prediction[valid], target[valid]
    in_range = (prediction >= 0) & (prediction < num_classes)
    matrix = torch.bincount(target[in_range] * num_classes + prediction[in_range], minlength=num_classes**2)
    matrix = matrix.view(num_classes, num_classes)
    misses = torch.bincount(target[~in_range], minlength=num_classes)  # ground truth predicted as nothing
    return torch.cat([matrix, misses.view(-1, 1)], dim=1)  # last column: predictions outside the classes


def segmentation_metrics(confusion: torch.Tensor) -> dict:
    """mIoU, per-class IoU (None for classes absent from prediction and ground truth), pixel accuracy and each
    class's share of the scored pixels in the prediction and in the ground truth, from `confusion_matrix`."""
    confusion = confusion.double()
    num_classes = confusion.shape[0]
    true_positive = confusion[:, :num_classes].diagonal()
    ground_truth = confusion.sum(dim=1)
    predicted = confusion[:, :num_classes].sum(dim=0)
    union = ground_truth + predicted - true_positive
    iou = [(tp / u).item() if u > 0 else None for tp, u in zip(true_positive, union)]
    present = [v for v in iou if v is not None]
    total = ground_truth.sum().item()
    return {
        "mIoU": float(np.mean(present)) if present else float("nan"),
        "pixel_accuracy": true_positive.sum().item() / total if total else float("nan"),
        "per_class_IoU": iou,
        "predicted_share": (predicted / total).tolist() if total else [float("nan")] * num_classes,
        "true_share": (ground_truth / total).tolist() if total else [float("nan")] * num_classes,
    }


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    weight_decay: float = 1e-3,
    steps: int = 100,
    normalize: str = "l2",
) -> float:
    """Multinomial logistic regression (L-BFGS, L2 penalty) on features normalised by `normalize`: `"l2"` (each
    feature vector to unit length, for embeddings) or `"standardize"` (each dimension to zero mean and unit variance
    over the training set, for raw measurements such as colours); test top-1 accuracy."""
    train, test = train_features.double(), test_features.double()
    if normalize == "l2":
        train, test = F.normalize(train, dim=-1), F.normalize(test, dim=-1)
    else:
        mean, std = train.mean(0), train.std(0) + 1e-8
        train, test = (train - mean) / std, (test - mean) / std
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    weight = torch.zeros(train.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(train @ weight + bias, train_labels) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return ((test @ weight + bias).argmax(dim=1) == test_labels).double().mean().item()


def summarize_iou(metrics: dict, class_names: list[str], unseen: set[str]) -> dict:
    """Flat metrics: `mIoU`, `mIoU_seen`, `mIoU_unseen` (when some classes are unseen), `pixel_accuracy` and
    `IoU_<class>`; classes absent from both prediction and ground truth are left out of every mean."""
    iou = dict(zip(class_names, metrics["per_class_IoU"]))
    result = {"mIoU": metrics["mIoU"], "pixel_accuracy": metrics["pixel_accuracy"]}
    groups = {"seen": [n for n in class_names if n not in unseen], "unseen": [n for n in class_names if n in unseen]}
    for group, names in groups.items():
        values = [iou[n] for n in names if iou[n] is not None]
        if unseen and values:
            result[f"mIoU_{group}"] = float(np.mean(values))
    result.update({f"IoU_{name}": value for name, value in iou.items() if value is not None})
    return result


def mask_value_lookup(mask_ids: list[int], missing: int) -> torch.Tensor:
    """A table from mask value to class index: class `i` has mask value `mask_ids[i]`; every other value, including
    any larger than the table (its last entry), maps to `missing`. Index it with `mask.clamp(max=len(table) - 1)`."""
    if min(mask_ids) < 0:
        raise ValueError(f"mask_ids={list(mask_ids)} must be non-negative mask values, one per class.")
    table = torch.full((max(mask_ids) + 2,), missing, dtype=torch.long)
    table[torch.tensor(mask_ids)] = torch.arange(len(mask_ids))
    return table


def classes_of_mask(mask: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Class indices of a mask of values through a `mask_value_lookup` table."""
    return table[mask.long().clamp(min=0, max=len(table) - 1)]
