"""Fine-tuning [`SilcForOpenVocabularySegmentation`] with the `Trainer`: a collator for (image, mask) datasets with
a class-name list, mIoU on seen and unseen classes through `compute_metrics`, a `Trainer` whose evaluation
batches come from their own collator (all classes, no augmentation) while training sees only the seen classes, and
the whole fine-tuning run of `training/train_open_vocab_seg.py` (`train_open_vocab_segmenter`).

Masks hold integer class ids: class `i` of the collator's `class_names` has mask value `mask_ids[i]` (default
`i`; ADE20K's `scene_parse_150` uses 0 for "other" and 1..150 for its classes: `mask_ids=range(1, 151)`); every
other value, including the ids of classes hidden from training, becomes `ignore_index` and carries no loss.

    seen = SilcSegmentationCollator(processor, model.config, seen_names, seen_ids, train=True)
    every = SilcSegmentationCollator(processor, model.config, all_names, all_ids)
    metrics = SegmentationMetrics(all_names, unseen=["flower", "fish"], ignore_index=model.config.ignore_index)
    SilcSegmentationTrainer(model, args, data_collator=seen, eval_data_collator=every, compute_metrics=metrics,
                            preprocess_logits_for_metrics=SegmentationMetrics.predict, ...)
"""

import json
import os

import numpy as np
import torch
from PIL import Image
from transformers import AutoProcessor, Trainer, TrainingArguments, set_seed

from ..data import load_image_text_dataset, to_rgb
from ..modeling_silc_open_vocab_seg import SilcForOpenVocabularySegmentation
from ..tools.plotting import plot_training
from ..zero_shot.evaluation import evaluate_segmentation
from ..zero_shot.metrics import (
    classes_of_mask,
    confusion_matrix,
    mask_value_lookup,
    segmentation_metrics,
    summarize_iou,
)
from ..zero_shot.prompts import tokenize_class_prompts
from .arguments import OpenVocabSegArguments
from .optimization import split_param_groups


class SilcSegmentationCollator:
    """Batches `{image_column: PIL image, mask_column: PIL mask}` examples into `pixel_values` (B, 3, S, S),
    `labels` (B, S, S) and the class set's prompts (`input_ids`, `attention_mask`, the same for every batch).

    Training (`train=True`): a random crop of `min_scale`-1 of each side at any position, resized to S, and a
    horizontal flip with probability 1/2; evaluation: the whole image resized to S. Images are resized
    bicubically, masks by nearest neighbour. `S` is the model's input size unless `size` is given."""

    def __init__(
        self,
        processor,
        config,
        class_names: list[str],
        mask_ids: list[int] | None = None,
        image_column: str = "image",
        mask_column: str = "mask",
        size: int | None = None,
        train: bool = False,
        min_scale: float = 0.5,
        seed: int = 0,
    ):
        self.image_processor = processor.image_processor
        self.image_column, self.mask_column = image_column, mask_column
        self.size = size or config.silc_config.vision_config.image_size
        self.train, self.min_scale = train, min_scale
        self.ignore_index = config.ignore_index
        self.class_names = list(class_names)
        mask_ids = list(range(len(self.class_names)) if mask_ids is None else mask_ids)
        if len(mask_ids) != len(self.class_names) or min(mask_ids) < 0:
            raise ValueError(
                f"mask_ids={mask_ids} must give one non-negative mask value per class of {self.class_names}."
            )
        self.lookup = mask_value_lookup(mask_ids, missing=self.ignore_index)
        self.prompts = tokenize_class_prompts(
            processor.tokenizer, config.silc_config.text_config, self.class_names, config.prompt_templates
        )
        self.rng = np.random.default_rng(seed)

    def labels(self, mask: np.ndarray) -> torch.Tensor:
        """Class indices `(H, W)` from a mask of class ids; values outside the class set -> `ignore_index`."""
        return classes_of_mask(torch.from_numpy(np.asarray(mask, dtype=np.int64)), self.lookup)

    def _view(self, image: Image.Image, mask: Image.Image) -> tuple[Image.Image, Image.Image]:
        if image.size != mask.size:
            raise ValueError(
                f"An image of size {image.size} has a mask of size {mask.size}; masks must have their image's size "
                f"(check the {self.mask_column!r} column)."
            )
        if self.train:
            width, height = image.size
            scale = self.rng.uniform(self.min_scale, 1.0)
            crop_w, crop_h = max(1, round(width * scale)), max(1, round(height * scale))
            left, top = self.rng.integers(0, width - crop_w + 1), self.rng.integers(0, height - crop_h + 1)
            box = (int(left), int(top), int(left + crop_w), int(top + crop_h))
            image, mask = image.crop(box), mask.crop(box)
            if self.rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        target = (self.size, self.size)
        return image.resize(target, Image.Resampling.BICUBIC), mask.resize(target, Image.Resampling.NEAREST)

    def __call__(self, examples: list[dict]) -> dict:
        images, labels = [], []
        for example in examples:
            image, mask = self._view(to_rgb(example[self.image_column]), example[self.mask_column])
            images.append(image)
            labels.append(self.labels(np.asarray(mask)))
        pixel_values = self.image_processor(images=images, return_tensors="pt", do_resize=False, do_center_crop=False)[
            "pixel_values"
        ]
        return {"pixel_values": pixel_values, "labels": torch.stack(labels), **self.prompts}


class SegmentationMetrics:
    """`compute_metrics` for the `Trainer`: mIoU over all classes, over the `unseen` ones (hidden from training)
    and over the seen ones, pixel accuracy and every class's IoU. Accumulates a confusion matrix, so it works
    with `batch_eval_metrics=True` (memory of one batch) as well as on the whole evaluation at once; pass
    `SegmentationMetrics.predict` as `preprocess_logits_for_metrics` so that only label maps are gathered."""

    def __init__(self, class_names: list[str], unseen: list[str] = (), ignore_index: int = 255):
        missing = sorted(set(unseen) - set(class_names))
        if missing:
            raise ValueError(f"unseen classes {missing} are not among the class names {list(class_names)}.")
        self.class_names, self.unseen, self.ignore_index = list(class_names), set(unseen), ignore_index
        self.confusion = torch.zeros(len(class_names), len(class_names) + 1, dtype=torch.long)

    @staticmethod
    def predict(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-pixel class indices `(B, H, W)` from logits `(B, C, H, W)`."""
        return logits.argmax(dim=1)

    def __call__(self, eval_prediction, compute_result: bool = True) -> dict:
        predictions, labels = (_cpu_tensor(x) for x in (eval_prediction.predictions, eval_prediction.label_ids))
        labels = torch.where(labels == self.ignore_index, torch.full_like(labels, -1), labels)
        self.confusion += confusion_matrix(predictions, labels, len(self.class_names))
        if not compute_result:
            return {}
        metrics = segmentation_metrics(self.confusion)
        self.confusion.zero_()
        return summarize_iou(metrics, self.class_names, self.unseen)


class SilcSegmentationTrainer(Trainer):
    """`Trainer` with a second collator for evaluation (`eval_data_collator`): training batches carry the seen
    classes' prompts and augmentation, evaluation batches every class and the whole image. The towers' weights
    that train get `backbone_learning_rate_scale` times the learning rate (CAT-Seg: 0.01)."""

    def __init__(self, *args, eval_data_collator=None, backbone_learning_rate_scale: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator or self.data_collator
        self.backbone_learning_rate_scale = backbone_learning_rate_scale

    def create_optimizer(self, model=None):
        """The `Trainer`'s optimizer, its groups split into tower and decoder weights before the learning-rate
        schedule reads their base rates."""
        optimizer = super().create_optimizer(model)
        if self.backbone_learning_rate_scale == 1.0:
            return optimizer
        scale = self.backbone_learning_rate_scale
        return split_param_groups(optimizer, self.model.silc.parameters(), lambda lr: lr * scale)

    def _with_eval_collator(self, make_dataloader, dataset):
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return make_dataloader(dataset)
        finally:
            self.data_collator = train_collator

    def get_eval_dataloader(self, eval_dataset=None):
        return self._with_eval_collator(super().get_eval_dataloader, eval_dataset)

    def get_test_dataloader(self, test_dataset):
        return self._with_eval_collator(super().get_test_dataloader, test_dataset)


def _cpu_tensor(values) -> torch.Tensor:
    """The Trainer hands numpy arrays (whole evaluation) or device tensors (`batch_eval_metrics`)."""
    return values.cpu() if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))


DECODER_FIELDS = (
    "prompt_templates",
    "decoder_hidden_size",
    "guidance_size",
    "num_aggregation_layers",
    "upsampling_sizes",
)


def segmentation_collators(args: OpenVocabSegArguments, processor, config, seed: int = 0):
    """(training collator, evaluation collator): training offers the seen classes only (`args.unseen_classes` are
    never candidates, and their pixels are ignored), evaluation every class of `args.class_names`."""
    names, unseen, mask_ids = list(args.class_names), set(args.unseen_classes), args.class_mask_ids()
    seen = [name for name in names if name not in unseen]
    columns = dict(image_column=args.image_column, mask_column=args.mask_column)
    train = SilcSegmentationCollator(
        processor, config, seen, [mask_ids[n] for n in seen], train=True, min_scale=args.min_scale, seed=seed, **columns
    )
    return train, SilcSegmentationCollator(processor, config, names, list(mask_ids.values()), **columns)


def train_open_vocab_segmenter(args: OpenVocabSegArguments, training_args: TrainingArguments) -> dict:
    """`training/train_open_vocab_seg.py`: a new decoder on the towers of `args.model`, trained on the seen classes,
    evaluated on all of them next to the same towers used training-free. Writes the segmenter and its processor,
    `open_vocab_seg_results.json` and `training_curve.png` to `training_args.output_dir`; returns the results."""
    training_args.remove_unused_columns = False  # the collator reads the image and mask columns
    set_seed(training_args.seed)  # the decoder's initialisation (the Trainer seeds only after the model exists)
    decoder = {name: getattr(args, name) for name in DECODER_FIELDS if getattr(args, name) is not None}
    model = SilcForOpenVocabularySegmentation.from_silc_pretrained(args.model, args.trainable_backbone, **decoder)
    processor = AutoProcessor.from_pretrained(args.model)
    train = load_image_text_dataset(args.train_data)
    evaluation = load_image_text_dataset(args.eval_data) if args.eval_data else None
    names, unseen, mask_ids = list(args.class_names), list(args.unseen_classes), args.class_mask_ids()
    columns = dict(image_column=args.image_column, mask_column=args.mask_column)
    train_collator, eval_collator = segmentation_collators(args, processor, model.config, training_args.seed)
    results = {"model": args.model, "class_names": names, "unseen_classes": unseen}
    if evaluation is not None:  # the baseline: the same towers, training-free, on the same classes and pixels
        zero_shot = evaluate_segmentation(
            model.silc.eval(), processor, evaluation, names, templates=model.config.prompt_templates,
            mask_ids=list(mask_ids.values()), **columns,
        )  # fmt: skip
        results["zero_shot"] = summarize_iou(zero_shot, names, set(unseen))
        print("zero-shot " + " ".join(f"{k}={v:.4f}" for k, v in results["zero_shot"].items() if k.startswith("mIoU")))

    trainer = SilcSegmentationTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=train_collator,
        eval_data_collator=eval_collator,
        backbone_learning_rate_scale=args.backbone_learning_rate_scale,
        compute_metrics=SegmentationMetrics(names, unseen, model.config.ignore_index),
        preprocess_logits_for_metrics=SegmentationMetrics.predict,
        processing_class=processor,
    )
    trainer.train()
    trainer.save_model()
    if evaluation is not None:
        metrics = trainer.evaluate()
        trainer.save_metrics("eval", metrics)
        results["trained"] = {k[len("eval_") :]: v for k, v in metrics.items() if "IoU" in k or "accuracy" in k}
        print("trained   " + " ".join(f"{k}={v:.4f}" for k, v in results["trained"].items() if k.startswith("mIoU")))
    results["log_history"] = trainer.state.log_history
    with open(os.path.join(training_args.output_dir, "open_vocab_seg_results.json"), "w") as file:
        json.dump(results, file, indent=2)
    panels = (
        ({"loss": "training loss", "eval_loss": "evaluation loss (every class)"}, "cross-entropy", "losses", None),
        (
            {"eval_mIoU_seen": "mIoU seen", "eval_mIoU_unseen": "mIoU unseen", "eval_mIoU": "mIoU"},
            "mIoU",
            "evaluation during training",
            (0, 1),
        ),
    )
    try:
        plot_training(
            trainer.state.log_history, os.path.join(training_args.output_dir, "training_curve.png"), panels=panels
        )
    except ImportError as error:
        print(f"No training_curve.png: {error}")
    return results


__all__ = [
    "SegmentationMetrics",
    "SilcSegmentationCollator",
    "SilcSegmentationTrainer",
    "train_open_vocab_segmenter",
]
