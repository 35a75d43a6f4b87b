"""Zero-shot semantic segmentation with SILC dense features, and its pipeline.

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
from transformers import Pipeline
from transformers.utils import logging

logger = logging.get_logger(__name__)

DEFAULT_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.", "a {}.")
BACKGROUND = -1  # label of pixels below the background threshold


@dataclass
class SegmentationResult:
    """`labels` (H, W): class index, or -1 for background; `scores` (C, H, W): per-class probabilities."""

    labels: torch.Tensor
    scores: torch.Tensor
    class_names: list[str]


def check_labels_and_templates(candidate_labels, templates) -> tuple[list[str], list[str]]:
    """Zero-shot inputs as lists, or a `ValueError` that says what to pass (the pipelines' common checks)."""
    if isinstance(candidate_labels, str):
        raise ValueError(
            f"candidate_labels={candidate_labels!r} is a string; pass a list of labels, e.g. "
            f"{[label.strip() for label in candidate_labels.split(',')]}."
        )
    labels = list(candidate_labels or [])
    if not labels:
        raise ValueError("candidate_labels is empty; pass at least one label, e.g. ['cat', 'grass', 'sky'].")
    templates = [templates] if isinstance(templates, str) else list(templates)
    for template in templates:
        if "{}" not in template:
            raise ValueError(
                f"hypothesis_template={template!r} has no '{{}}' for the label, so every label would get the same "
                "prompt; use e.g. 'a photo of a {}.'"
            )
    return labels, templates


def warn_if_truncated(tokenizer, prompts: list[str], labels: list[str], max_length: int) -> None:
    """Name the labels whose prompts do not fit the text tower (they are truncated to `max_length` tokens)."""
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    too_long = sorted({label for label, length in zip(labels, lengths) if length > max_length})
    if too_long:
        logger.warning(
            f"Prompts for {too_long} are longer than the text tower's {max_length} tokens and are truncated to it."
        )


def tokenize_class_prompts(tokenizer, text_config, class_names: list[str], templates=DEFAULT_TEMPLATES) -> dict:
    """`input_ids` and `attention_mask` of every class name in every template, class-major
    `(num_classes * num_templates, seq)`, padded as the text tower was trained; prompts longer than the tower
    are truncated, with a warning naming the class."""
    class_names, templates = check_labels_and_templates(class_names, templates)
    max_length = text_config.max_position_embeddings
    padding = "max_length" if text_config.fixed_length_padding else True
    prompts = [template.format(name) for name in class_names for template in templates]
    warn_if_truncated(tokenizer, prompts, [name for name in class_names for _ in templates], max_length)
    tokens = tokenizer(prompts, padding=padding, truncation=True, max_length=max_length, return_tensors="pt")
    return {key: value for key, value in tokens.items() if key in ("input_ids", "attention_mask")}


@torch.no_grad()
def encode_class_names(model, tokenizer, class_names: list[str], templates=DEFAULT_TEMPLATES) -> torch.Tensor:
    """One L2-normalised embedding per class: the mean of its prompts' normalised embeddings, renormalised
    (CLIP's prompt ensembling); prompts longer than the text tower are truncated, with a warning naming the
    class. Returns `(num_classes, embed_dim)`."""
    templates = check_labels_and_templates(class_names, templates)[1]
    tokens = tokenize_class_prompts(tokenizer, model.config.text_config, class_names, templates)
    tokens = {key: value.to(model.device) for key, value in tokens.items()}
    embeds = F.normalize(model.get_text_features(**tokens).text_embeds.float(), dim=-1)
    embeds = embeds.view(len(class_names), len(templates), -1).mean(dim=1)
    return F.normalize(embeds, dim=-1)


def _patch_scores(
    model, pixel_values: torch.Tensor, text_embeds: torch.Tensor, method: str, interpolate: bool
) -> torch.Tensor:
    """Class logits per patch `(batch, C, grid_h, grid_w)`: scaled cosine similarity plus bias."""
    dense = model.get_dense_image_features(
        pixel_values.to(model.device, model.dtype), method, interpolate_pos_encoding=interpolate
    )
    dense = F.normalize(dense.float(), dim=-1)  # (batch, grid_h, grid_w, dim)
    logits = dense @ text_embeds.t() * model.logit_scale.float().exp() + model.logit_bias.float()
    return logits.permute(0, 3, 1, 2)


def _windows(length: int, window: int, stride: int) -> list[int]:
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


@torch.no_grad()
def segment_pixels(
    model,
    resized: torch.Tensor,
    full: torch.Tensor,
    text_embeds: torch.Tensor,
    method: str = "value",
    sliding_window: bool = True,
    stride_fraction: float = 2 / 3,
) -> torch.Tensor:
    """Class logits `(C, H, W)` for one image.

    `resized` is the image at the model's input size `(1, 3, S, S)`; `full` the same image normalised at
    its own size `(1, 3, H, W)`. With `sliding_window` and `full` at least S in both sides and larger in one,
    S x S windows slide over `full` (stride `stride_fraction * S`) and their upsampled logits are averaged;
    otherwise the logits of `resized` are upsampled to `(H, W)`.
    """
    size = model.config.vision_config.image_size
    height, width = full.shape[-2:]
    if not sliding_window or min(height, width) < size or (height, width) == (size, size):
        logits = _patch_scores(model, resized, text_embeds, method, interpolate=False)
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)[0].cpu()
    stride = max(1, int(size * stride_fraction))
    total = torch.zeros(text_embeds.shape[0], height, width)
    count = torch.zeros(1, height, width)
    for top in _windows(height, size, stride):
        for left in _windows(width, size, stride):
            crop = full[..., top : top + size, left : left + size]
            logits = _patch_scores(model, crop, text_embeds, method, interpolate=False)
            total[:, top : top + size, left : left + size] += F.interpolate(
                logits, size=(size, size), mode="bilinear", align_corners=False
            )[0].cpu()
            count[:, top : top + size, left : left + size] += 1
    return total / count


@torch.no_grad()
def open_vocabulary_logits(model, tokenizer, resized: torch.Tensor, class_names: list[str], size) -> torch.Tensor:
    """Class logits `(C, H, W)` of a [`SilcForOpenVocabularySegmentation`] for one image at the model's input
    size `(1, 3, S, S)`, upsampled bilinearly to `size = (H, W)`; the prompts are the model's own templates."""
    tokens = tokenize_class_prompts(
        tokenizer, model.config.silc_config.text_config, class_names, model.config.prompt_templates
    )
    tokens = {key: value.to(model.device) for key, value in tokens.items()}
    logits = model(pixel_values=resized.to(model.device, model.dtype), **tokens).logits.float()
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)[0].cpu()


def is_open_vocabulary_segmenter(model) -> bool:
    """A trained segmenter (its own decoder and templates) rather than an image-text model used zero-shot."""
    return hasattr(model, "get_class_embeddings")


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
    templates=DEFAULT_TEMPLATES,
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


class SilcZeroShotImageSegmentationPipeline(Pipeline):
    """`pipeline("zero-shot-image-segmentation", model=...)` for SILC models: a `SilcModel` segments
    training-free from its dense features, a `SilcForOpenVocabularySegmentation` with its trained decoder.

    Call with an image (path, URL or PIL image) and `candidate_labels`; options: `hypothesis_template` (one
    template or a list, for prompt ensembling; a trained segmenter uses the templates it was trained with),
    `method` ("value" or "plain" dense features) and `sliding_window` (default True) for a `SilcModel`,
    `background_threshold`, `return_label_map` (also return the per-pixel class indices as a tensor under
    "label_map").
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = True

    def _sanitize_parameters(
        self,
        candidate_labels=None,
        hypothesis_template=None,
        method=None,
        background_threshold=None,
        sliding_window=None,
        return_label_map=None,
        timeout=None,
        **kwargs,
    ):
        preprocess = {}
        if candidate_labels is not None:
            preprocess["candidate_labels"] = candidate_labels
        if hypothesis_template is not None:
            preprocess["templates"] = (
                [hypothesis_template] if isinstance(hypothesis_template, str) else list(hypothesis_template)
            )
        if timeout is not None:
            preprocess["timeout"] = timeout
        forward = {
            key: value for key, value in (("method", method), ("sliding_window", sliding_window)) if value is not None
        }
        postprocess = {}
        if background_threshold is not None:
            postprocess["background_threshold"] = background_threshold
        if return_label_map is not None:
            postprocess["return_label_map"] = return_label_map
        return preprocess, forward, postprocess

    def __call__(self, image, candidate_labels=None, **kwargs):
        candidate_labels, _ = check_labels_and_templates(candidate_labels, kwargs.get("hypothesis_template", "{}"))
        if is_open_vocabulary_segmenter(self.model) and "hypothesis_template" in kwargs:
            raise ValueError(
                "This segmenter was trained with the prompts in its config.prompt_templates "
                f"({self.model.config.prompt_templates}); drop hypothesis_template."
            )
        return super().__call__(image, candidate_labels=candidate_labels, **kwargs)

    def preprocess(self, image, candidate_labels=None, templates=DEFAULT_TEMPLATES, timeout=None):
        from transformers.image_utils import load_image

        image = load_image(image, timeout=timeout)
        config = self.model.config
        vision_config = config.silc_config.vision_config if is_open_vocabulary_segmenter(self.model) else config.vision_config
        resized, full = segmentation_inputs(self.image_processor, image, vision_config.image_size)
        return {
            "resized": resized,
            "full": full,
            "candidate_labels": list(candidate_labels),
            "templates": tuple(templates),
        }

    def _forward(self, inputs, method="value", sliding_window=True):
        labels = inputs["candidate_labels"]
        if is_open_vocabulary_segmenter(self.model):
            logits = open_vocabulary_logits(self.model, self.tokenizer, inputs["resized"], labels, inputs["full"].shape[-2:])
        else:
            text_embeds = encode_class_names(self.model, self.tokenizer, labels, inputs["templates"])
            logits = segment_pixels(self.model, inputs["resized"], inputs["full"], text_embeds, method, sliding_window)
        return {"logits": logits, "candidate_labels": labels}

    def postprocess(self, outputs, background_threshold=None, return_label_map=False):
        loss_type = getattr(self.model.config, "loss_type", "softmax")  # a trained segmenter: cross-entropy
        result = logits_to_result(outputs["logits"], outputs["candidate_labels"], loss_type, background_threshold)
        segments = result_to_pipeline_output(result)
        if return_label_map:
            return {"segments": segments, "label_map": result.labels}
        return segments


__all__ = [
    "DEFAULT_TEMPLATES",
    "SegmentationResult",
    "SilcZeroShotImageSegmentationPipeline",
    "encode_class_names",
    "open_vocabulary_logits",
    "result_to_pipeline_output",
    "segment_pixels",
    "tokenize_class_prompts",
    "zero_shot_segmentation",
]
