"""Training [`SilcForOpenVocabularySegmentation`] with the `Trainer`: a collator for (image, mask) datasets with
a class-name list, mIoU on seen and unseen classes through `compute_metrics`, and a `Trainer` whose evaluation
batches come from their own collator (all classes, no augmentation) while training sees only the seen classes.

Masks hold integer class ids: class `i` of the collator's `class_names` has mask value `mask_ids[i]` (default
`i`; ADE20K's `scene_parse_150` uses 0 for "other" and 1..150 for its classes: `mask_ids=range(1, 151)`); every
other value, including the ids of classes hidden from training, becomes `ignore_index` and carries no loss.

    seen = SilcSegmentationCollator(processor, model.config, seen_names, seen_ids, train=True)
    every = SilcSegmentationCollator(processor, model.config, all_names, all_ids)
    metrics = SegmentationMetrics(all_names, unseen=["flower", "fish"], ignore_index=model.config.ignore_index)
    SilcSegmentationTrainer(model, args, data_collator=seen, eval_data_collator=every, compute_metrics=metrics,
                            preprocess_logits_for_metrics=SegmentationMetrics.predict, ...)
"""

import numpy as np
import torch
from PIL import Image
from transformers import Trainer

from .data import to_rgb
from .evaluation import confusion_matrix, segmentation_metrics
from .segmentation import tokenize_class_prompts


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
        self.lookup = np.full(max(mask_ids) + 2, self.ignore_index, dtype=np.int64)  # last entry: any larger id
        self.lookup[mask_ids] = np.arange(len(mask_ids))
        self.prompts = tokenize_class_prompts(
            processor.tokenizer, config.silc_config.text_config, self.class_names, config.prompt_templates
        )
        self.rng = np.random.default_rng(seed)

    def labels(self, mask: np.ndarray) -> np.ndarray:
        """Class indices `(H, W)` from a mask of class ids; values outside the class set -> `ignore_index`."""
        return self.lookup[np.minimum(mask.astype(np.int64), len(self.lookup) - 1)]

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
            labels.append(torch.from_numpy(self.labels(np.asarray(mask))))
        pixel_values = self.image_processor(
            images=images, return_tensors="pt", do_resize=False, do_center_crop=False
        )["pixel_values"]
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
        tower = {id(p) for p in self.model.silc.parameters()}
        groups = []
        for group in optimizer.param_groups:
            for in_tower in (True, False):
                params = [p for p in group["params"] if (id(p) in tower) == in_tower]
                if params:
                    scale = self.backbone_learning_rate_scale if in_tower else 1.0
                    groups.append({**group, "params": params, "lr": group["lr"] * scale})
        optimizer.param_groups = groups
        return optimizer

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


__all__ = ["SegmentationMetrics", "SilcSegmentationCollator", "SilcSegmentationTrainer", "summarize_iou"]
