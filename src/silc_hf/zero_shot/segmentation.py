"""Zero-shot semantic segmentation with SILC dense features (and inference of a trained open-vocabulary segmenter).

Every patch embedding (`SilcModel.get_dense_image_features`, "plain" or MaskCLIP "value" path) is compared
with the prompt-ensembled text embedding of each class name; the patch scores are upsampled bilinearly to
the image. Images larger than the model input are covered by overlapping windows at their own resolution
(scores averaged where windows overlap); smaller ones are resized to the input. Scores are a softmax over
the classes for softmax-trained models and a per-class sigmoid for sigmoid-trained ones; pixels whose best
score is below `background_threshold` are labelled background.

    import silc_hf
    from transformers import pipeline
    segmenter = pipeline("zero-shot-image-segmentation", model="path/to/silc")
    segmenter(image, candidate_labels=["cat", "grass", "sky"])   # [{"label", "score", "mask"}, ...]
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..configuration_silc import DEFAULT_PROMPT_TEMPLATES
from ..modeling_silc_open_vocab_seg import SilcForOpenVocabularySegmentation
from .finite import ensure_finite
from .prompts import encode_class_names, tokenize_class_prompts

BACKGROUND = -1  # label of pixels below the background threshold


@dataclass
class SegmentationResult:
    """`labels` (H, W): class index, or -1 for background; `scores` (C, H, W): per-class probabilities."""

    labels: torch.Tensor
    scores: torch.Tensor
    class_names: list[str]


@torch.no_grad()
def cosine_scores(model, pixels: torch.Tensor, text_embeds: torch.Tensor, method: str = "value") -> torch.Tensor:
    """Cosine similarity of each patch's embedding with each text embedding, `(batch, Q, grid_h, grid_w)`; inputs
    of another size than the model's run with interpolated position embeddings."""
    size = model.config.vision_config.image_size
    interpolate = tuple(pixels.shape[-2:]) != (size, size)
    dense = model.get_dense_image_features(
        pixels.to(model.device, model.dtype), method, interpolate_pos_encoding=interpolate
    )
    return (F.normalize(dense.float(), dim=-1) @ text_embeds.t()).permute(0, 3, 1, 2)


def _patch_scores(model, pixel_values: torch.Tensor, text_embeds: torch.Tensor, method: str) -> torch.Tensor:
    """Class logits per patch `(batch, C, grid_h, grid_w)`: scaled cosine similarity plus bias."""
    cosines = cosine_scores(model, pixel_values, text_embeds, method)
    return cosines * model.logit_scale.float().exp() + model.logit_bias.float()


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of `window` pixels every `stride` over `length`, the last one flush with the end
    (mmseg's `slide` grid); one window at 0 when `length <= window`."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def sliding_window_scores(score_window, pixels: torch.Tensor, window: int, stride: int) -> torch.Tensor:
    """Per-class scores `(C, H, W)` of an image `pixels` `(1, 3, H, W)`, from windows of `window x window` pixels
    (smaller where the image is) every `stride` pixels: `score_window(crop)` gives each window's patch scores
    `(1, C, h, w)`, which are upsampled bilinearly to the window's pixels and averaged where windows overlap (the
    sliding-window inference of mmseg's `slide` mode, used by TCL and SCLIP)."""
    height, width = pixels.shape[-2:]
    total, count = None, torch.zeros(1, height, width)
    for top in window_starts(height, window, stride):
        for left in window_starts(width, window, stride):
            crop = pixels[..., top : top + window, left : left + window]
            scores = score_window(crop)
            scores = F.interpolate(scores, size=crop.shape[-2:], mode="bilinear", align_corners=False)[0].cpu()
            if total is None:
                total = torch.zeros(scores.shape[0], height, width)
            total[:, top : top + crop.shape[-2], left : left + crop.shape[-1]] += scores
            count[:, top : top + crop.shape[-2], left : left + crop.shape[-1]] += 1
    return total / count


@torch.no_grad()
def segment_pixels(
    model,
    resized: torch.Tensor,
    full: torch.Tensor,
    text_embeds: torch.Tensor,
    method: str = "value",
    sliding_window: bool = True,
    stride_fraction: float = 2 / 3,
    name: str = "the image",
) -> torch.Tensor:
    """Class logits `(C, H, W)` for one image (`name` in the error if they are not finite).

    `resized` is the image at the model's input size `(1, 3, S, S)`; `full` the same image normalised at
    its own size `(1, 3, H, W)`. With `sliding_window` and `full` at least S in both sides and larger in one,
    S x S windows slide over `full` (stride `stride_fraction * S`) and their upsampled logits are averaged;
    otherwise the logits of `resized` are upsampled to `(H, W)`.
    """
    size = model.config.vision_config.image_size
    height, width = full.shape[-2:]
    if not sliding_window or min(height, width) < size or (height, width) == (size, size):
        logits = _patch_scores(model, resized, text_embeds, method)
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)[0].cpu()
        return ensure_finite(logits[None], [name], "segmentation scores")[0]
    stride = max(1, int(size * stride_fraction))
    logits = sliding_window_scores(lambda crop: _patch_scores(model, crop, text_embeds, method), full, size, stride)
    return ensure_finite(logits[None], [name], "segmentation scores")[0]


@torch.no_grad()
def open_vocabulary_logits(
    model, tokenizer, resized: torch.Tensor, class_names: list[str], size, name: str = "the image"
) -> torch.Tensor:
    """Class logits `(C, H, W)` of a [`SilcForOpenVocabularySegmentation`] for one image at the model's input
    size `(1, 3, S, S)`, upsampled bilinearly to `size = (H, W)`; the prompts are the model's own templates."""
    tokens = tokenize_class_prompts(
        tokenizer, model.config.silc_config.text_config, class_names, model.config.prompt_templates
    )
    tokens = {key: value.to(model.device) for key, value in tokens.items()}
    logits = model(pixel_values=resized.to(model.device, model.dtype), **tokens).logits.float()
    logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False).cpu()
    return ensure_finite(logits, [name], "segmentation scores")[0]


def class_logits(
    model,
    tokenizer,
    resized: torch.Tensor,
    full: torch.Tensor,
    class_names: list[str],
    templates=DEFAULT_PROMPT_TEMPLATES,
    method: str = "value",
    sliding_window: bool = True,
    name: str = "the image",
) -> torch.Tensor:
    """Class logits `(C, H, W)` of one image (`segmentation_inputs`) from either kind of model: a trained
    [`SilcForOpenVocabularySegmentation`] with its own decoder and prompts (`templates`, `method` and
    `sliding_window` do not apply), or a `SilcModel` used training-free."""
    if isinstance(model, SilcForOpenVocabularySegmentation):
        return open_vocabulary_logits(model, tokenizer, resized, class_names, full.shape[-2:], name)
    text_embeds = encode_class_names(model, tokenizer, class_names, templates)
    return segment_pixels(model, resized, full, text_embeds, method, sliding_window, name=name)


def logits_to_result(
    logits: torch.Tensor, class_names: list[str], loss_type: str, background_threshold: float | None
) -> SegmentationResult:
    """Per-pixel probabilities (softmax or sigmoid, as the model was trained) and labels."""
    scores = logits.softmax(dim=0) if loss_type == "softmax" else logits.sigmoid()
    best, labels = scores.max(dim=0)
    if background_threshold is not None:
        labels = torch.where(best < background_threshold, torch.full_like(labels, BACKGROUND), labels)
    return SegmentationResult(labels=labels, scores=scores, class_names=list(class_names))


def segmentation_inputs(image_processor, image: Image.Image, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole image squashed to the model input `(1, 3, S, S)` (never center-cropped: every pixel needs a
    label), and the image normalised at its own size `(1, 3, H, W)`."""
    image = image.convert("RGB")
    no_resize = dict(return_tensors="pt", do_resize=False, do_center_crop=False)
    resized = image_processor(images=image.resize((size, size), Image.Resampling.BICUBIC), **no_resize)["pixel_values"]
    full = image_processor(images=image, **no_resize)["pixel_values"]
    return resized, full


@torch.no_grad()
def zero_shot_segmentation(
    model,
    processor,
    image: Image.Image,
    class_names: list[str],
    templates=DEFAULT_PROMPT_TEMPLATES,
    method: str = "value",
    background_threshold: float | None = None,
    sliding_window: bool = True,
) -> SegmentationResult:
    """Segment `image` into `class_names` with a `SilcModel` and its `SilcProcessor` (see the module doc)."""
    size = model.config.vision_config.image_size
    text_embeds = encode_class_names(model, processor.tokenizer, class_names, templates)
    resized, full = segmentation_inputs(processor.image_processor, image, size)
    logits = segment_pixels(model, resized, full, text_embeds, method, sliding_window)
    return logits_to_result(logits, class_names, model.config.loss_type, background_threshold)


def result_to_pipeline_output(result: SegmentationResult, background_label: str = "background") -> list[dict]:
    """transformers' image-segmentation output: one `{"score", "label", "mask"}` per label present, `mask` a
    PIL "L" image (255 inside), `score` the label's mean probability over its mask."""
    outputs = []
    for index in torch.unique(result.labels).tolist():
        mask = result.labels == index
        if index == BACKGROUND:
            score, label = None, background_label
        else:
            score, label = result.scores[index][mask].mean().item(), result.class_names[index]
        outputs.append({"score": score, "label": label, "mask": Image.fromarray(mask.numpy().astype(np.uint8) * 255)})
    return sorted(outputs, key=lambda o: -(o["score"] if o["score"] is not None else -1))


__all__ = [
    "BACKGROUND",
    "SegmentationResult",
    "class_logits",
    "cosine_scores",
    "logits_to_result",
    "open_vocabulary_logits",
    "result_to_pipeline_output",
    "segment_pixels",
    "segmentation_inputs",
    "sliding_window_scores",
    "window_starts",
    "zero_shot_segmentation",
]
