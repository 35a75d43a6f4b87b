"""Using SILC models zero-shot: prompts, segmentation, the pipelines, metrics and evaluation. Inference only: nothing
here imports the training package."""

from .evaluation import (
    ZeroShotEvaluator,
    evaluate,
    evaluate_linear_probe,
    evaluate_retrieval,
    evaluate_segmentation,
    evaluate_zero_shot_classification,
    image_embeddings,
    results_entry,
    text_embeddings,
)
from .pipelines import SilcZeroShotImageClassificationPipeline, SilcZeroShotImageSegmentationPipeline
from .prompts import encode_class_names, tokenize_class_prompts
from .segmentation import SegmentationResult, class_logits, segment_pixels, zero_shot_segmentation

__all__ = [
    "SegmentationResult",
    "SilcZeroShotImageClassificationPipeline",
    "SilcZeroShotImageSegmentationPipeline",
    "ZeroShotEvaluator",
    "class_logits",
    "encode_class_names",
    "evaluate",
    "evaluate_linear_probe",
    "evaluate_retrieval",
    "evaluate_segmentation",
    "evaluate_zero_shot_classification",
    "image_embeddings",
    "results_entry",
    "segment_pixels",
    "text_embeddings",
    "tokenize_class_prompts",
    "zero_shot_segmentation",
]
