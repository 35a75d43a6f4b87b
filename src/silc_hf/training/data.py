"""Image-caption data for SILC pretraining: the bad-sample policy, multi-crop samples, the collator.

Any `datasets` dataset with an image column and a text column works (`silc_hf.data.load_image_text_dataset`:
`imagefolder` + `metadata.jsonl`, webdataset tar shards, Hub datasets, `streaming=True`). Images are decoded
here, not by `datasets`, so that an undecodable file is a skipped sample and not a crash: every bad sample is
skipped with a warning naming it and counted (the count travels with the batch and the trainer logs it), or
raises `BadSampleError` in `strict` mode.
"""

import io
import math
import os
import warnings
import zlib
from dataclasses import dataclass

import datasets
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node
from PIL import Image, UnidentifiedImageError
from transformers.utils import logging

from ..data.loading import BadSampleError, caption_text, to_rgb
from .augmentation import MultiCropTransform

logger = logging.get_logger(__name__)


def undecoded(dataset, image_column: str):
    """Ask `datasets` to hand over the image bytes (so that decoding errors are ours to handle)."""
    features = dataset.features or {}
    if isinstance(features.get(image_column), datasets.Image):
        return dataset.cast_column(image_column, datasets.Image(decode=False))
    return dataset


@dataclass
class SamplePreparer:
    """Validate a raw example, decode its image and cut the multi-crop views; raises `BadSampleError`."""

    transform: MultiCropTransform
    image_column: str = "image"
    text_column: str = "text"
    max_caption_chars: int = 1000
    min_image_size: int = 1
    max_image_pixels: int = 89_478_485

    def caption(self, example: dict) -> str:
        caption = caption_text(example.get(self.text_column))
        if caption is None:
            raise BadSampleError(f"missing caption (no '{self.text_column}' value)")
        if not isinstance(caption, str):
            raise BadSampleError(f"caption is a {type(caption).__name__}, not a string")
        caption = caption.strip()
        if not caption:
            raise BadSampleError("empty caption")
        if len(caption) > self.max_caption_chars:
            raise BadSampleError(
                f"caption has {len(caption)} characters (> max_caption_chars={self.max_caption_chars})"
            )
        return caption

    def image(self, example: dict) -> Image.Image:
        """The example's image in RGB, decoded at full resolution."""
        return self.decode(self.open(example))

    @staticmethod
    def decode(image: Image.Image, reduction: float = 1.0) -> Image.Image:
        """Decode an opened image to RGB. `reduction`: how many times smaller it may be decoded (a JPEG decodes at
        1/2, 1/4 or 1/8 scale in the DCT domain, far cheaper than decoding everything and resizing)."""
        if reduction >= 2:
            factor = 2 ** min(3, int(math.log2(reduction)))
            image.draft("RGB", (math.ceil(image.width / factor), math.ceil(image.height / factor)))  # JPEG only
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as error:
            raise BadSampleError(f"truncated or corrupt image ({type(error).__name__}: {error})") from None
        return to_rgb(image)

    def open(self, example: dict) -> Image.Image:
        """The example's image, opened (header read and checked) but not decoded."""
        value = example.get(self.image_column)
        if isinstance(value, Image.Image):
            image = value
        else:
            if isinstance(value, dict):
                value = value["bytes"] if value.get("bytes") is not None else value.get("path")
            if value is None:
                raise BadSampleError(f"missing image (no '{self.image_column}' value)")
            is_bytes = isinstance(value, (bytes, bytearray))
            if (len(value) if is_bytes else os.path.getsize(value)) == 0:
                raise BadSampleError("zero-size image file")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    image = Image.open(io.BytesIO(value) if is_bytes else value)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
                raise BadSampleError(f"decompression bomb ({error})") from None
            except (UnidentifiedImageError, OSError) as error:
                raise BadSampleError(f"undecodable image ({type(error).__name__}: {error})") from None
        width, height = image.size
        if width == 0 or height == 0:
            raise BadSampleError(f"zero-size image ({width}x{height})")
        if width * height > self.max_image_pixels:
            raise BadSampleError(
                f"decompression bomb: {width}x{height} pixels (> max_image_pixels={self.max_image_pixels})"
            )
        if min(width, height) < self.min_image_size:
            raise BadSampleError(f"image is {width}x{height}, smaller than min_image_size={self.min_image_size}")
        return image

    def key(self, example: dict, fallback: str) -> str:
        """A name for the sample in warnings: its webdataset key or file path, else `fallback`."""
        image = example.get(self.image_column)
        path = image.get("path") if isinstance(image, dict) else None
        return str(example.get("__key__") or path or fallback)

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        caption = self.caption(example)
        image = self.open(example)
        width, height = image.size
        plan = self.transform.plan(width, height, rng)  # the crops first: they say how much resolution is needed
        image = self.decode(image, reduction=self.transform.reduction(plan))
        sample = self.transform.cut(image, plan, scale=(image.width / width, image.height / height))
        if (masks := self.transform.draw_masks(rng)) is not None:
            sample["global_masks"] = masks
        sample["caption"] = caption
        return sample


def _skip(key: str, error: BadSampleError, strict: bool) -> None:
    if strict:
        raise BadSampleError(f"Bad sample {key}: {error} (strict mode; set strict=False to skip bad samples)") from None
    logger.warning(f"Skipping bad sample {key}: {error}")


class MultiCropDataset(torch.utils.data.Dataset):
    """Map-style multi-crop samples. A bad sample is replaced by the next good one (so batches keep their
    size, which the cross-rank feature gather needs) and counted once, when its own index comes up.
    Sample i's crops are drawn from a generator seeded by (seed, epoch, i)."""

    def __init__(self, dataset, preparer: SamplePreparer, seed: int = 0, strict: bool = False, max_attempts: int = 100):
        self.dataset = undecoded(dataset, preparer.image_column)
        self.preparer, self.seed, self.strict, self.max_attempts = preparer, seed, strict, max_attempts
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        for attempt in range(self.max_attempts):
            position = (index + attempt) % len(self.dataset)
            example = self.dataset[position]
            try:
                sample = self.preparer(example, np.random.default_rng([self.seed, self.epoch, position]))
            except BadSampleError as error:
                if attempt == 0:  # reported (and counted) when its own index comes up, not when probed
                    _skip(self.preparer.key(example, f"#{position}"), error, self.strict)
                continue
            sample["skipped_samples"] = int(attempt > 0)
            return sample
        raise RuntimeError(f"{self.max_attempts} consecutive bad samples from index {index}; check the dataset.")


class StreamingMultiCropDataset(torch.utils.data.IterableDataset):
    """Iterable multi-crop samples from a streaming (or any iterable) `datasets` dataset, split by rank
    (`datasets.distributed.split_dataset_by_node`) and by data worker. Bad samples are dropped and counted
    on the next good sample. A sample's crops are seeded by (seed, epoch, its key or position)."""

    def __init__(
        self, dataset, preparer: SamplePreparer, seed: int = 0, strict: bool = False, rank: int = 0, world_size: int = 1
    ):
        dataset = undecoded(dataset, preparer.image_column)
        if world_size > 1:
            dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
        self.dataset, self.preparer, self.seed, self.strict, self.rank = dataset, preparer, seed, strict, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __iter__(self):
        skipped = 0
        for position, example in enumerate(self.dataset):
            key = self.preparer.key(example, f"rank{self.rank}:{position}")
            rng = np.random.default_rng([self.seed, self.epoch, zlib.crc32(key.encode())])
            try:
                sample = self.preparer(example, rng)
            except BadSampleError as error:
                _skip(key, error, self.strict)
                skipped += 1
                continue
            sample["skipped_samples"], skipped = skipped, 0
            yield sample


class SilcMultiCropCollator:
    """Stacks multi-crop samples and tokenises their captions with the model's processor.

    Yields `global_views` (batch, 2, 3, S, S) and `local_views` (batch, N, 3, s, s) as uint8, their
    `global_augment` / `local_augment` parameters, `input_ids`, `attention_mask` and `skipped_samples` (and
    `global_masks` (batch, 2, patches) for masked patch distillation)."""

    def __init__(self, processor, max_length: int):
        self.processor, self.max_length = processor, max_length

    def __call__(self, samples: list[dict]) -> dict:
        text = self.processor(
            text=[s["caption"] for s in samples], truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        batch = {key: torch.stack([s[key] for s in samples]) for key in ("global_views", "local_views")}
        for key in ("global_augment", "local_augment"):
            batch[key] = {name: torch.stack([s[key][name] for s in samples]) for name in samples[0][key]}
        batch["input_ids"] = text["input_ids"]
        batch["attention_mask"] = text.get("attention_mask", torch.ones_like(text["input_ids"]))
        if "global_masks" in samples[0]:
            batch["global_masks"] = torch.stack([s["global_masks"] for s in samples])
        batch["skipped_samples"] = torch.tensor([s["skipped_samples"] for s in samples])
        return batch
