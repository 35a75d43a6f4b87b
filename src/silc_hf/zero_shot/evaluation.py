"""Evaluation of SILC models: zero-shot classification (top-1/top-5, prompt ensembles), image<->text retrieval
(R@1/5/10), zero-shot segmentation (mIoU, pixel accuracy) and a few-shot linear probe on frozen embeddings, on any
`datasets` dataset; the metrics and their conventions are in `silc_hf.zero_shot.metrics`.

`results_entry` formats a task's metrics for the JSON file that `python -m silc_hf.tools.model_card` reads.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..configuration_silc import DEFAULT_PROMPT_TEMPLATES
from ..data.loading import caption_text
from .finite import ensure_finite
from .metrics import (
    CLASSIFICATION_TASK,
    IMAGE_TO_TEXT_R1,
    LINEAR_PROBE_TASK,
    RETRIEVAL_TASK,
    SEGMENTATION_MIOU,
    SEGMENTATION_PROBE_TASK,
    SEGMENTATION_TASK,
    SEGMENTATION_TOP_SHARE,
    TEXT_TO_IMAGE_R1,
    ZERO_SHOT_TOP1,
    classes_of_mask,
    confusion_matrix,
    linear_probe_accuracy,
    mask_value_lookup,
    recall_at_k,
    segmentation_metrics,
    topk_accuracy,
)
from .prompts import encode_class_names
from .segmentation import logits_to_result, segment_pixels, segmentation_inputs


def results_entry(
    task: str, dataset: str, metrics: dict, split: str | None = None, dataset_name: str | None = None
) -> dict:
    """One entry of the results JSON read by the model-card generator (numbers only)."""
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    entry = {"task": task, "dataset": dataset, "dataset_name": dataset_name or dataset, "metrics": numbers}
    if split:
        entry["split"] = split
    return entry


# -------------------------------------------------------------------------------------- model-level runners


def _batches(dataset, batch_size: int, description: str):
    for start in tqdm(range(0, len(dataset), batch_size), desc=description, leave=False):
        yield start, dataset[start : start + batch_size]


@torch.no_grad()
def image_embeddings(model, processor, dataset, image_column: str = "image", batch_size: int = 64) -> torch.Tensor:
    """L2-normalised image embeddings of every row, `(N, D)`."""
    outputs = []
    for start, batch in _batches(dataset, batch_size, "images"):
        pixels = processor.image_processor(
            images=[im.convert("RGB") for im in batch[image_column]], return_tensors="pt"
        )
        embeds = model.get_image_features(pixel_values=pixels["pixel_values"].to(model.device)).image_embeds.float()
        rows = [f"row {start + i}" for i in range(len(embeds))]
        outputs.append(F.normalize(ensure_finite(embeds, rows, "image embeddings"), dim=-1).cpu())
    return torch.cat(outputs)


@torch.no_grad()
def text_embeddings(model, processor, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised embeddings of `texts`, `(N, D)`, tokenised as the processor does."""
    outputs = []
    max_length = model.config.text_config.max_position_embeddings
    for start in range(0, len(texts), batch_size):
        tokens = processor(
            text=texts[start : start + batch_size], truncation=True, max_length=max_length, return_tensors="pt"
        )
        tokens = {k: v.to(model.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        embeds = model.get_text_features(**tokens).text_embeds.float()
        embeds = ensure_finite(embeds, texts[start : start + batch_size], "text embeddings")
        outputs.append(F.normalize(embeds, dim=-1).cpu())
    return torch.cat(outputs)


def evaluate_zero_shot_classification(
    model,
    processor,
    dataset,
    class_names: list[str],
    image_column="image",
    label_column="label",
    templates=DEFAULT_PROMPT_TEMPLATES,
    batch_size: int = 64,
    images: torch.Tensor | None = None,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy of zero-shot classification with a prompt-template ensemble (`images`: the
    dataset's `image_embeddings`, if already computed)."""
    classes = encode_class_names(model, processor.tokenizer, class_names, templates).cpu()
    if images is None:
        images = image_embeddings(model, processor, dataset, image_column, batch_size)
    targets = torch.tensor(dataset[label_column])
    return topk_accuracy(images @ classes.t(), targets, ks=tuple(k for k in (1, 5) if k <= len(class_names)))


def evaluate_retrieval(
    model,
    processor,
    dataset,
    image_column="image",
    text_column="text",
    batch_size: int = 64,
    images: torch.Tensor | None = None,
) -> dict[str, float]:
    """Image->text and text->image recall@1/5/10; a row's caption may be a string, a list of strings or a
    webdataset metadata dict with a "caption" (`images`: the dataset's `image_embeddings`, if already computed)."""
    if images is None:
        images = image_embeddings(model, processor, dataset, image_column, batch_size)
    captions, owner = [], []
    for row, value in enumerate(dataset[text_column]):
        value = caption_text(value)
        for caption in [value] if isinstance(value, str) else value:
            captions.append(caption)
            owner.append(row)
    texts = text_embeddings(model, processor, captions)
    similarity = images @ texts.t()
    image_positives = [set() for _ in range(len(images))]
    for index, row in enumerate(owner):
        image_positives[row].add(index)
    metrics = {f"image_to_text_{k}": v for k, v in recall_at_k(similarity, image_positives).items()}
    metrics.update({f"text_to_image_{k}": v for k, v in recall_at_k(similarity.t(), [{row} for row in owner]).items()})
    return metrics


def evaluate_segmentation(
    model,
    processor,
    dataset,
    class_names: list[str],
    image_column="image",
    mask_column="mask",
    templates=DEFAULT_PROMPT_TEMPLATES,
    method: str = "value",
    ignore_index: int | None = None,
    mask_offset: int = 0,
    background_threshold: float | None = None,
    sliding_window: bool = True,
    mask_ids: list[int] | None = None,
) -> dict:
    """mIoU and pixel accuracy of zero-shot segmentation. Mask value `v` is class `v - mask_offset`
    (e.g. `mask_offset=1` when 0 marks background and `ignore_index=0` drops it), or, with `mask_ids`, class `i`
    has mask value `mask_ids[i]` and every other value is ignored."""
    lookup = mask_value_lookup(mask_ids, missing=-1) if mask_ids is not None else None
    text_embeds = encode_class_names(model, processor.tokenizer, class_names, templates)
    size = model.config.vision_config.image_size
    confusion = torch.zeros(len(class_names), len(class_names) + 1, dtype=torch.long)
    for row in tqdm(range(len(dataset)), desc="segmentation", leave=False):
        example = dataset[row]
        resized, full = segmentation_inputs(processor.image_processor, example[image_column], size)
        logits = segment_pixels(model, resized, full, text_embeds, method, sliding_window, name=f"row {row}")
        result = logits_to_result(logits, class_names, model.config.loss_type, background_threshold)
        mask = torch.from_numpy(np.asarray(example[mask_column]).astype(np.int64))
        ignore = mask == ignore_index if ignore_index is not None else torch.zeros_like(mask, dtype=torch.bool)
        target = torch.where(ignore, torch.full_like(mask, -1), mask - mask_offset)
        if lookup is not None:
            target = torch.where(ignore, -1, classes_of_mask(mask, lookup))
        confusion += confusion_matrix(result.labels, target, len(class_names))
    return segmentation_metrics(confusion)


def evaluate_linear_probe(
    model,
    processor,
    train_dataset,
    test_dataset,
    shots: int = 10,
    image_column="image",
    label_column="label",
    seed: int = 0,
    batch_size: int = 64,
) -> dict[str, float]:
    """k-shot linear probe: `shots` random training images per class, logistic regression on frozen
    normalised image embeddings, accuracy on the whole test set."""
    labels = np.asarray(train_dataset[label_column])
    rng = np.random.default_rng(seed)
    chosen = sorted(int(i) for c in np.unique(labels) for i in rng.permutation(np.flatnonzero(labels == c))[:shots])
    subset = train_dataset.select(chosen)
    train_features = image_embeddings(model, processor, subset, image_column, batch_size)
    test_features = image_embeddings(model, processor, test_dataset, image_column, batch_size)
    accuracy = linear_probe_accuracy(
        train_features, torch.tensor(subset[label_column]), test_features, torch.tensor(test_dataset[label_column])
    )
    return {f"{shots}_shot_accuracy": accuracy}


@torch.no_grad()
def patch_tokens(model, processor, dataset, image_column: str = "image", batch_size: int = 64) -> torch.Tensor:
    """The image tower's final-normed last-layer patch tokens of every row, `(N, hidden, grid_h, grid_w)`."""
    tower, outputs = model.vision_model, []
    for _, batch in _batches(dataset, batch_size, "patch tokens"):
        pixels = processor.image_processor(
            images=[im.convert("RGB") for im in batch[image_column]], return_tensors="pt"
        )
        pixels = pixels["pixel_values"].to(model.device)
        tokens = tower(pixel_values=pixels).last_hidden_state[:, tower.embeddings.num_prefix_tokens :].float()
        grid = [side // tower.config.patch_size for side in pixels.shape[-2:]]
        outputs.append(tokens.unflatten(1, grid).permute(0, 3, 1, 2).cpu())
    return torch.cat(outputs)


def mask_class_targets(dataset, mask_column: str, num_classes: int, mask_offset: int, ignore_index: int | None):
    """Masks as class indices `(N, H, W)`, -1 where ignored or outside the classes."""
    masks = torch.stack([torch.from_numpy(np.asarray(m).astype(np.int64)) for m in dataset[mask_column]])
    targets = masks - mask_offset
    invalid = (targets < 0) | (targets >= num_classes)
    if ignore_index is not None:
        invalid |= masks == ignore_index
    return torch.where(invalid, -1, targets)


def evaluate_segmentation_probe(
    model,
    processor,
    train_dataset,
    test_dataset,
    class_names: list[str],
    image_column="image",
    mask_column="mask",
    mask_offset: int = 0,
    ignore_index: int | None = None,
    steps: int = 500,
    learning_rate: float = 1e-2,
    seed: int = 0,
    batch_size: int = 64,
) -> dict:
    """How well the frozen patch features segment without any text (DINOv2's linear protocol at this scale): one
    linear layer on each final-normed last-layer patch token, its logits upsampled bilinearly to the mask, trained
    with per-pixel cross-entropy on `train_dataset`'s masks (AdamW, `steps` mini-batches); mIoU on `test_dataset`."""
    train_x, test_x = (
        patch_tokens(model, processor, d, image_column, batch_size) for d in (train_dataset, test_dataset)
    )
    train_y = mask_class_targets(train_dataset, mask_column, len(class_names), mask_offset, ignore_index)
    test_y = mask_class_targets(test_dataset, mask_column, len(class_names), mask_offset, ignore_index)
    mean, std = train_x.mean(dim=(0, 2, 3), keepdim=True), train_x.std(dim=(0, 2, 3), keepdim=True) + 1e-6
    generator = torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        torch.manual_seed(seed)
        linear = torch.nn.Conv2d(train_x.shape[1], len(class_names), kernel_size=1)
        optimizer = torch.optim.AdamW(linear.parameters(), lr=learning_rate, weight_decay=1e-4)
        for _ in range(steps):
            index = torch.randint(0, len(train_x), (batch_size,), generator=generator)
            logits = F.interpolate(linear((train_x[index] - mean) / std), size=train_y.shape[-2:], mode="bilinear")
            loss = F.cross_entropy(logits, train_y[index], ignore_index=-1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    confusion = torch.zeros(len(class_names), len(class_names) + 1, dtype=torch.long)
    for features, target in zip(test_x.split(batch_size), test_y.split(batch_size)):
        logits = F.interpolate(linear((features - mean) / std), size=target.shape[-2:], mode="bilinear")
        confusion += confusion_matrix(logits.argmax(dim=1), target, len(class_names))
    return segmentation_metrics(confusion)


TASKS = {
    "classification": CLASSIFICATION_TASK,
    "retrieval": RETRIEVAL_TASK,
    "segmentation": SEGMENTATION_TASK,
    "linear_probe": LINEAR_PROBE_TASK,
    "segmentation_probe": SEGMENTATION_PROBE_TASK,
}


def class_names_of(dataset, label_column: str) -> list[str] | None:
    """The names of a `ClassLabel` column, if it is one."""
    feature = (dataset.features or {}).get(label_column)
    return list(feature.names) if hasattr(feature, "names") else None


def evaluate(
    model,
    processor,
    dataset,
    tasks=tuple(TASKS),
    class_names: list[str] | None = None,
    dataset_name: str = "dataset",
    split: str | None = None,
    image_column="image",
    text_column="text",
    label_column="label",
    mask_column="mask",
    templates=DEFAULT_PROMPT_TEMPLATES,
    method: str = "value",
    ignore_index: int | None = None,
    mask_offset: int = 0,
    probe_dataset=None,
    shots: int = 10,
    batch_size: int = 64,
    segmentation_class_names: list[str] | None = None,
) -> dict:
    """Run the chosen `tasks` on `dataset` and return `{"results": [results_entry, ...]}` (the model-card format).

    `class_names` default to the label column's `ClassLabel` names; segmentation uses `segmentation_class_names`
    when the masks name more classes than the labels (e.g. stuff besides things), else `class_names`; the linear
    probe trains on `probe_dataset` (e.g. the train split) and tests on `dataset`.
    """
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"Unknown tasks {sorted(unknown)}; choose from {list(TASKS)}.")
    class_names = class_names or class_names_of(dataset, label_column)
    segmentation_class_names = segmentation_class_names or class_names
    segmenting = {"segmentation", "segmentation_probe"} & set(tasks)
    if class_names is None and "classification" in tasks or segmentation_class_names is None and segmenting:
        raise ValueError(f"Pass class_names: the column {label_column!r} is not a ClassLabel with names.")
    model.eval()
    results = []
    for task in tasks:
        if task == "classification":
            metrics = evaluate_zero_shot_classification(
                model, processor, dataset, class_names, image_column, label_column, templates, batch_size
            )
        elif task == "retrieval":
            metrics = evaluate_retrieval(model, processor, dataset, image_column, text_column, batch_size)
        elif task == "segmentation":
            metrics = evaluate_segmentation(
                model,
                processor,
                dataset,
                segmentation_class_names,
                image_column,
                mask_column,
                templates,
                method,
                ignore_index,
                mask_offset,
            )
        elif probe_dataset is None:
            raise ValueError(f"The {task} task needs probe_dataset (the images it trains on).")
        elif task == "linear_probe":
            metrics = evaluate_linear_probe(
                model, processor, probe_dataset, dataset, shots, image_column, label_column, batch_size=batch_size
            )
        else:
            metrics = evaluate_segmentation_probe(
                model,
                processor,
                probe_dataset,
                dataset,
                segmentation_class_names,
                image_column,
                mask_column,
                mask_offset,
                ignore_index,
                batch_size=batch_size,
            )
        results.append(results_entry(TASKS[task], dataset_name, metrics, split=split))
    return {"results": results}


@dataclass
class ZeroShotEvaluator:
    """Zero-shot metrics on a labelled split, for evaluation during training (open_clip's `--zeroshot-frequency`,
    big_vision's evaluators): `SilcTrainer(..., zero_shot_evaluator=...)` adds them to `evaluate()`'s metrics.

    Runs every task the dataset supports, or `tasks`: zero-shot classification (a label column and class names)
    -> `zero_shot_top1`; retrieval (a text column) -> `image_to_text_R@1`, `text_to_image_R@1`; zero-shot
    segmentation (a mask column and class names) -> `segmentation_mIoU`. Class names default to the label
    column's `ClassLabel` names; segmentation's to them too (`segmentation_class_names` when the masks name more
    classes than the labels). Each number is the one the matching `evaluate_*` function returns.
    """

    dataset: Any
    class_names: list[str] | None = None
    segmentation_class_names: list[str] | None = None
    templates: Sequence[str] = DEFAULT_PROMPT_TEMPLATES
    tasks: Sequence[str] | None = None
    image_column: str = "image"
    text_column: str = "text"
    label_column: str = "label"
    mask_column: str = "mask"
    method: str = "value"
    ignore_index: int | None = None
    mask_offset: int = 0
    batch_size: int = 64

    def __post_init__(self):
        columns = set(self.dataset.column_names)
        self.class_names = self.class_names or class_names_of(self.dataset, self.label_column)
        self.segmentation_class_names = self.segmentation_class_names or self.class_names
        supported = {
            "classification": self.label_column in columns and self.class_names is not None,
            "retrieval": self.text_column in columns,
            "segmentation": self.mask_column in columns and self.segmentation_class_names is not None,
        }
        if self.tasks is None:
            self.tasks = [task for task, ok in supported.items() if ok]
        for task in self.tasks:
            if task not in supported:
                raise ValueError(f"Unknown zero-shot task {task!r}; choose from {list(supported)}.")
            if not supported[task]:
                raise ValueError(
                    f"The zero-shot {task} needs columns the dataset lacks or class names (columns: {sorted(columns)}, "
                    f"class_names={self.class_names}); set the column names or pass class_names."
                )
        if not self.tasks:
            raise ValueError(f"The dataset (columns {sorted(columns)}) supports no zero-shot task.")

    @torch.no_grad()
    def __call__(self, model, processor) -> dict[str, float]:
        metrics = {}
        images = None
        if {"classification", "retrieval"} & set(self.tasks):
            images = image_embeddings(model, processor, self.dataset, self.image_column, self.batch_size)
        if "classification" in self.tasks:
            accuracy = evaluate_zero_shot_classification(
                model,
                processor,
                self.dataset,
                self.class_names,
                self.image_column,
                self.label_column,
                self.templates,
                images=images,
            )
            metrics[ZERO_SHOT_TOP1] = accuracy["top1_accuracy"]
        if "retrieval" in self.tasks:
            recall = evaluate_retrieval(
                model, processor, self.dataset, self.image_column, self.text_column, images=images
            )
            metrics[IMAGE_TO_TEXT_R1] = recall[IMAGE_TO_TEXT_R1]
            metrics[TEXT_TO_IMAGE_R1] = recall[TEXT_TO_IMAGE_R1]
        if "segmentation" in self.tasks:
            segmentation = evaluate_segmentation(
                model,
                processor,
                self.dataset,
                self.segmentation_class_names,
                self.image_column,
                self.mask_column,
                self.templates,
                self.method,
                self.ignore_index,
                self.mask_offset,
            )
            metrics[SEGMENTATION_MIOU] = segmentation["mIoU"]
            metrics[SEGMENTATION_TOP_SHARE] = max(segmentation["predicted_share"])
        return metrics
