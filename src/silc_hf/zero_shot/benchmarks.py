"""The benchmarks of the SILC paper and its peers as presets: where each dataset lies once downloaded (its original
layout, as mmseg and the Karpathy splits lay them out), its class names and label ids, what is ignored, and how it is
scored under a zero-shot protocol (`silc_hf.zero_shot.protocols`).

    from silc_hf.zero_shot.benchmarks import evaluate_benchmark
    evaluate_benchmark(model, processor, "voc20", "data/VOCdevkit/VOC2012", protocol="tcl")

Nothing is downloaded here: each preset reads the layout its dataset has after the download described in
`docs/evaluation.md` (sources, licences, id maps).
"""

import glob
import json
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, Image
from PIL import Image as PILImage
from tqdm.auto import tqdm

from ..configuration_silc import DEFAULT_PROMPT_TEMPLATES
from .benchmark_names import IMAGENET_CLASSES, IMAGENET_TEMPLATES, TCL_CLASS_NAMES
from .evaluation import evaluate_retrieval, evaluate_zero_shot_classification
from .finite import ensure_finite
from .metrics import (
    CLASSIFICATION_TASK,
    RETRIEVAL_TASK,
    SEGMENTATION_TASK,
    confusion_matrix,
    segmentation_metrics,
)
from .prompts import encode_class_names
from .protocols import SegmentationProtocol, get_protocol
from .segmentation import cosine_scores, sliding_window_scores


@dataclass(frozen=True)
class Benchmark:
    """One evaluation preset. Segmentation masks: value `v` is class `v - mask_offset`; `ignore_index` and values
    outside the classes are not scored. `background`: class 0 is "background", decided by the protocol's rule."""

    name: str
    title: str
    task: str  # "segmentation", "classification" or "retrieval"
    layout: str  # which reader (`read_layout`)
    split: str
    directory: str  # under a data root, where the download lies (mmseg's names)
    class_names: tuple[str, ...] = ()
    background: bool = False
    mask_offset: int = 0
    ignore_index: int | None = 255
    metric: str = "mIoU"


DIRECTORIES = {
    "voc": "VOCdevkit/VOC2012",
    "context": "VOCdevkit/VOC2010",
    "ade": "ADEChallengeData2016",
    "cityscapes": "cityscapes",
    "cocostuff": "coco_stuff164k",
    "coco_object": "coco_stuff164k",
    "imagenet": "imagenet",
    "karpathy_coco": "coco",
    "karpathy_flickr30k": "flickr30k",
}


def _segmentation(name, title, layout, background=False, mask_offset=0, ignore_index=255, split="validation"):
    classes = tuple(n.strip() for n in TCL_CLASS_NAMES[name])  # mmseg's names (ADE's "bed " has a stray space)
    directory = DIRECTORIES[layout]
    return Benchmark(
        name, title, "segmentation", layout, split, directory, classes, background, mask_offset, ignore_index
    )


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        _segmentation("voc20", "PASCAL VOC 2012, 20 classes (background not scored)", "voc", mask_offset=1),
        _segmentation("voc21", "PASCAL VOC 2012, 20 classes + background", "voc", background=True),
        _segmentation("pc59", "PASCAL Context, 59 classes (background not scored)", "context", mask_offset=1),
        _segmentation("pc60", "PASCAL Context, 59 classes + background", "context", background=True),
        _segmentation("ade150", "ADE20K, 150 classes", "ade", mask_offset=1),
        _segmentation("cityscapes", "Cityscapes, 19 classes", "cityscapes"),
        _segmentation("cocostuff", "COCO-Stuff 164k, 171 classes", "cocostuff"),
        _segmentation("coco_object", "COCO-Object, 80 things + background", "coco_object", background=True),
        Benchmark(
            "imagenet1k",
            "ImageNet-1k, 1000 classes",
            "classification",
            "imagenet",
            "validation",
            "imagenet",
            IMAGENET_CLASSES,
            metric="top1_accuracy",
        ),
        Benchmark(
            "coco_5k", "COCO Karpathy test, 5k images", "retrieval", "karpathy_coco", "test", "coco", metric="R@1"
        ),
        Benchmark(
            "flickr30k_1k",
            "Flickr30k Karpathy test, 1k images",
            "retrieval",
            "karpathy_flickr30k",
            "test",
            "flickr30k",
            metric="R@1",
        ),
    )
}


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"benchmark={name!r} is not one of {sorted(BENCHMARKS)}.")
    return BENCHMARKS[name]


# ----------------------------------------------------------------------------------------------- the layouts


def _ids(path: str) -> list[str]:
    with open(path) as file:
        return [line.strip() for line in file if line.strip()]


def _pairs(root: str, images: str, masks: str, names: list[str], image_suffix: str, mask_suffix: str):
    rows = {"image": [], "mask": []}
    for name in names:
        rows["image"].append(os.path.join(root, images, name + image_suffix))
        rows["mask"].append(os.path.join(root, masks, name + mask_suffix))
    return rows


def _globbed_pairs(root: str, images: str, masks: str, image_suffix: str, mask_suffix: str):
    found = sorted(glob.glob(os.path.join(root, images, "**", "*" + image_suffix), recursive=True))
    names = [os.path.relpath(path, os.path.join(root, images))[: -len(image_suffix)] for path in found]
    return _pairs(root, images, masks, names, image_suffix, mask_suffix)


def _karpathy(root: str, split_file: str, image_dir: str) -> dict:
    with open(os.path.join(root, split_file)) as file:
        images = [entry for entry in json.load(file)["images"] if entry["split"] == "test"]
    paths = [os.path.join(root, image_dir, entry.get("filepath", ""), entry["filename"]) for entry in images]
    # five captions per image, as CLIP and clip_benchmark score them (a few COCO images have six or seven)
    return {"image": paths, "text": [[s["raw"] for s in entry["sentences"]][:5] for entry in images]}


def _imagenet(root: str) -> dict:
    folders = sorted(d for d in os.listdir(os.path.join(root, "val")) if os.path.isdir(os.path.join(root, "val", d)))
    if len(folders) != len(IMAGENET_CLASSES):
        raise ValueError(
            f"{os.path.join(root, 'val')} has {len(folders)} class folders; ImageNet-1k's validation split needs "
            f"{len(IMAGENET_CLASSES)} (one per WordNet id, e.g. n01440764, as the valprep script lays them out)."
        )
    rows = {"image": [], "label": []}
    for label, folder in enumerate(folders):  # sorted WordNet ids = the standard class order
        for path in sorted(glob.glob(os.path.join(root, "val", folder, "*"))):
            rows["image"].append(path)
            rows["label"].append(label)
    return rows


LAYOUTS = {
    # mmseg's layouts of the original archives (docs/evaluation.md says how to get each)
    "voc": lambda root: _pairs(
        root,
        "JPEGImages",
        "SegmentationClass",
        _ids(os.path.join(root, "ImageSets/Segmentation/val.txt")),
        ".jpg",
        ".png",
    ),
    "context": lambda root: _pairs(
        root,
        "JPEGImages",
        "SegmentationClassContext",
        _ids(os.path.join(root, "ImageSets/SegmentationContext/val.txt")),
        ".jpg",
        ".png",
    ),
    "ade": lambda root: _globbed_pairs(root, "images/validation", "annotations/validation", ".jpg", ".png"),
    "cityscapes": lambda root: _globbed_pairs(
        root, "leftImg8bit/val", "gtFine/val", "_leftImg8bit.png", "_gtFine_labelTrainIds.png"
    ),
    "cocostuff": lambda root: _globbed_pairs(
        root, "images/val2017", "annotations/val2017", ".jpg", "_labelTrainIds.png"
    ),
    "coco_object": lambda root: _globbed_pairs(
        root, "images/val2017", "annotations/val2017", ".jpg", "_instanceTrainIds.png"
    ),
    "imagenet": _imagenet,
    "karpathy_coco": lambda root: _karpathy(root, "dataset_coco.json", "images"),
    "karpathy_flickr30k": lambda root: _karpathy(root, "dataset_flickr30k.json", "images"),
}


def read_layout(benchmark: Benchmark | str, root: str, max_images: int | None = None) -> Dataset:
    """The benchmark's evaluation split read from `root` in its original layout, as a `datasets.Dataset` with an
    `image` column and `mask`, `label` or `text` (a list of captions per image); `max_images`: the first N only."""
    benchmark = get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
    if not os.path.isdir(root):
        raise ValueError(f"{benchmark.name}: {root} is not a directory; see docs/evaluation.md for its layout.")
    try:
        rows = LAYOUTS[benchmark.layout](root)
    except FileNotFoundError as error:
        raise ValueError(
            f"{benchmark.name}: {error.filename} is missing under {root}; see docs/evaluation.md for the layout "
            f"({benchmark.layout}) this benchmark reads."
        ) from None
    missing = [path for key in ("image", "mask") for path in rows.get(key, []) if not os.path.isfile(path)]
    if missing:
        raise ValueError(f"{benchmark.name}: {len(missing)} files listed by the split are missing, e.g. {missing[0]}.")
    if not rows["image"]:
        raise ValueError(f"{benchmark.name}: no images found under {root} (layout {benchmark.layout}).")
    if max_images is not None:
        rows = {key: values[:max_images] for key, values in rows.items()}
    dataset = Dataset.from_dict(rows)
    for column in ("image", "mask"):
        if column in rows:
            dataset = dataset.cast_column(column, Image())
    return dataset


# ------------------------------------------------------------------------------------------ scoring with a protocol


def resize_short_side(image: PILImage.Image, short_side: int | None, max_long_side: int = 2048) -> PILImage.Image:
    """mmseg's `Resize(scale=(max_long_side, short_side), keep_ratio=True)`: the largest scale at which the shorter
    side is at most `short_side` and the longer at most `max_long_side` (up or down)."""
    if short_side is None:
        return image
    width, height = image.size
    scale = min(short_side / min(width, height), max_long_side / max(width, height))
    size = (int(width * scale + 0.5), int(height * scale + 0.5))
    return image if size == image.size else image.resize(size, PILImage.Resampling.BILINEAR)


def class_probabilities(
    cosines: torch.Tensor, query_class: torch.Tensor, num_classes: int, scale: float, bias: float, loss_type: str
) -> torch.Tensor:
    """Per-class probabilities `(C, H, W)` from query cosines `(Q, H, W)`: softmax (or, for sigmoid models, a
    sigmoid) of `scale * cosine + bias` over the queries, then each class the best of its queries (its synonyms)."""
    logits = cosines * scale + bias
    probs = logits.softmax(dim=0) if loss_type == "softmax" else logits.sigmoid()
    classes = torch.full((num_classes, *probs.shape[1:]), -1.0)
    for query, owner in enumerate(query_class.tolist()):
        classes[owner] = torch.maximum(classes[owner], probs[query])
    return classes


def decide_labels(
    probs: torch.Tensor, background: bool, threshold: float | None, area_threshold: float | None = None
) -> torch.Tensor:
    """Labels `(H, W)` from class probabilities `(C, H, W)`. With `background` (class 0), a pixel whose best
    probability is below `threshold` is background; SCLIP's `area_threshold` first drops every non-background class
    predicted on fewer than that share of the non-background predictions."""
    probs = probs.clone()
    if background and area_threshold is not None:
        predicted = probs.argmax(dim=0)
        area = torch.bincount(predicted.flatten(), minlength=probs.shape[0])[1:].float()
        keep = area > area_threshold * area.sum()
        probs[1:] *= keep.view(-1, 1, 1).to(probs.dtype)
    labels = probs.argmax(dim=0)
    if background and threshold is not None:
        labels = torch.where(probs.max(dim=0).values < threshold, torch.zeros_like(labels), labels)
    return labels


def _queries(benchmark: Benchmark, protocol: SegmentationProtocol) -> tuple[list[str], list[int]]:
    """What is prompted: the query names and the class of each (the protocol's names or synonyms, else the
    benchmark's). The background class of a benchmark is prompted only where the protocol says so (SCLIP); otherwise
    its probability stays below every other and the protocol's threshold decides it."""
    queries = (protocol.class_queries or {}).get(benchmark.name) or tuple((n,) for n in benchmark.class_names)
    names, owners = [], []
    for index, synonyms in enumerate(queries):
        if benchmark.background and index == 0 and not protocol.background_query:
            continue
        names += list(synonyms)
        owners += [index] * len(synonyms)
    return names, owners


@torch.no_grad()
def protocol_segmentation(
    model,
    processor,
    image: PILImage.Image,
    text_embeds: torch.Tensor,
    query_class: torch.Tensor,
    benchmark: Benchmark,
    protocol: SegmentationProtocol,
    method: str = "value",
    name: str = "the image",
) -> torch.Tensor:
    """Labels `(H, W)` of one image at its own size under `protocol` (resize, windows, scale, background rule)."""
    image = image.convert("RGB")
    resized = resize_short_side(image, protocol.short_side, protocol.max_long_side)
    no_resize = dict(return_tensors="pt", do_resize=False, do_center_crop=False)
    pixels = processor.image_processor(images=resized, **no_resize)["pixel_values"]
    size = model.config.vision_config.image_size
    window = protocol.window or size
    stride = protocol.stride or max(1, int(window * 2 / 3))
    cosines = sliding_window_scores(
        lambda crop: cosine_scores(model, crop, text_embeds, method), pixels, window, stride
    )
    cosines = F.interpolate(cosines[None], size=(image.height, image.width), mode="bilinear", align_corners=False)[0]
    ensure_finite(cosines[None], [name], "segmentation scores")
    scale = protocol.logit_scale if protocol.logit_scale is not None else model.logit_scale.float().exp().item()
    bias = 0.0 if protocol.logit_scale is not None else model.logit_bias.float().item()
    probs = class_probabilities(cosines, query_class, len(benchmark.class_names), scale, bias, model.config.loss_type)
    return decide_labels(probs, benchmark.background, protocol.background_threshold, protocol.area_threshold)


def evaluate_segmentation_benchmark(
    model,
    processor,
    dataset,
    benchmark: Benchmark | str,
    protocol: SegmentationProtocol | str = "default",
    method: str = "value",
    templates=None,
) -> dict:
    """mIoU (mmseg's: the mean over classes present in the prediction or the ground truth), pixel accuracy and
    per-class IoU of `benchmark` under `protocol`, over every image of `dataset` (a progress bar)."""
    benchmark = get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
    protocol = (get_protocol(protocol) if isinstance(protocol, str) else protocol).for_benchmark(benchmark.name)
    templates = templates or protocol.templates or model.config.zero_shot_templates or DEFAULT_PROMPT_TEMPLATES
    names, owners = _queries(benchmark, protocol)
    text_embeds = encode_class_names(model, processor.tokenizer, names, tuple(templates))
    query_class = torch.tensor(owners)
    num_classes = len(benchmark.class_names)
    confusion = torch.zeros(num_classes, num_classes + 1, dtype=torch.long)
    for row in tqdm(range(len(dataset)), desc=f"{benchmark.name} ({protocol.name})"):
        example = dataset[row]
        labels = protocol_segmentation(
            model, processor, example["image"], text_embeds, query_class, benchmark, protocol, method, f"row {row}"
        )
        mask = torch.from_numpy(np.asarray(example["mask"]).astype(np.int64))
        target = mask - benchmark.mask_offset
        if benchmark.ignore_index is not None:
            target = torch.where(mask == benchmark.ignore_index, -1, target)
        confusion += confusion_matrix(labels, target, num_classes)
    metrics = segmentation_metrics(confusion)
    metrics["per_class_IoU"] = dict(zip(benchmark.class_names, metrics["per_class_IoU"]))
    return metrics


def evaluate_benchmark(
    model,
    processor,
    benchmark: str,
    root: str,
    protocol: str = "default",
    method: str = "value",
    max_images: int | None = None,
    batch_size: int = 64,
) -> dict:
    """Run one benchmark preset on the data under `root`; returns a results entry (`task`, `dataset`,
    `dataset_name`, `split`, `metrics`, `protocol`) for the results JSON and the model card."""
    preset = get_benchmark(benchmark)
    dataset = read_layout(preset, root, max_images)
    if preset.task == "segmentation":
        metrics = evaluate_segmentation_benchmark(model, processor, dataset, preset, protocol, method)
        task = SEGMENTATION_TASK
    elif preset.task == "classification":  # CLIP's protocol: 1000 names, 80 templates, top-1 of the ensemble
        metrics = evaluate_zero_shot_classification(
            model, processor, dataset, list(preset.class_names), templates=IMAGENET_TEMPLATES, batch_size=batch_size
        )
        task, protocol = CLASSIFICATION_TASK, "clip"
    else:
        metrics = evaluate_retrieval(model, processor, dataset, batch_size=batch_size)
        task, protocol = RETRIEVAL_TASK, "karpathy"
    entry = {
        "task": task,
        "dataset": preset.name,
        "dataset_name": preset.title,
        "split": preset.split,
        "protocol": protocol if isinstance(protocol, str) else protocol.name,
        "num_images": len(dataset),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
    }
    if "per_class_IoU" in metrics:
        entry["per_class_IoU"] = metrics["per_class_IoU"]
    return entry


def results_table(entries: list[dict]) -> str:
    """A Markdown table of results entries: benchmark, protocol, images, the headline metric (in %)."""
    headline = {"segmentation": "mIoU", "classification": "top1_accuracy", "retrieval": "image_to_text_R@1"}
    lines = ["| benchmark | protocol | images | metric | value |", "|---|---|---|---|---|"]
    for entry in entries:
        preset = get_benchmark(entry["dataset"])
        metric = headline[preset.task]
        value = entry["metrics"].get(metric)
        shown = f"{100 * value:.1f}" if value is not None else "—"
        lines.append(f"| {preset.title} | {entry['protocol']} | {entry['num_images']} | {metric} | {shown} |")
        if preset.task == "retrieval":
            other = entry["metrics"].get("text_to_image_R@1")
            lines.append(f"| | | | text_to_image_R@1 | {100 * other:.1f} |")
    return "\n".join(lines) + "\n"


__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "class_probabilities",
    "decide_labels",
    "evaluate_benchmark",
    "evaluate_segmentation_benchmark",
    "get_benchmark",
    "read_layout",
    "resize_short_side",
    "results_table",
]
