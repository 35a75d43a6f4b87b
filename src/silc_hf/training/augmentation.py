"""Multi-crop views for SILC (DINO's recipe: 2 global + N local crops, Caron et al. 2021).

The work is split in two:

- in data workers (`MultiCropTransform`), per image: the crop boxes, one Pillow crop-and-resize per view
  (uint8 output), and every random number of the photometric augmentation (a few scalars per view), all
  drawn from a generator seeded by the sample, so a sample's views do not depend on worker count, rank or
  resumption;
- on the accelerator (`apply_photometric`), per batch: flip, colour jitter (in a per-view random order,
  as torchvision's `ColorJitter`), grayscale, Gaussian blur, solarize and normalisation, as tensor ops.

Written on plain tensors rather than with kornia: kornia's augmentation modules draw their own parameters on
the device, which would tie a sample's views to the device RNG; its functional ops would serve, but the six
ops needed here are a few lines each.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .arguments import MultiCropArguments

# Parameters of one view's photometric augmentation, drawn in the worker (name -> dtype).
AUGMENT_KEYS = {
    "flip": torch.bool,
    "jitter": torch.bool,
    "brightness": torch.float32,
    "contrast": torch.float32,
    "saturation": torch.float32,
    "hue": torch.float32,
    "jitter_order": torch.long,
    "grayscale": torch.bool,
    "blur": torch.bool,
    "blur_sigma": torch.float32,
    "solarize": torch.bool,
}


def random_resized_crop_box(
    rng: np.random.Generator, width: int, height: int, scale: list[float], ratio: list[float]
) -> tuple[int, int, int, int]:
    """A crop box `(left, top, right, bottom)` covering a random area fraction in `scale` with a random aspect
    ratio in `ratio` (log-uniform); after 10 failed draws, the largest centred box within `ratio`.
    Same distribution as torchvision's `RandomResizedCrop`."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def patch_mask(rng: np.random.Generator, height: int, width: int, count: int, block_wise: bool = True) -> np.ndarray:
    """A `(height, width)` boolean mask of exactly `count` patches, drawn from `rng`.

    Block-wise (BEiT's and iBOT's masking generator, DINOv2 `data/masking.py`): rectangles of at least 4 patches, area
    up to what is left (at most a third of the grid) and aspect ratio log-uniform in [0.3, 1 / 0.3], placed until
    `count` is reached; unlike those generators, which stop short when a rectangle no longer fits, the last patches
    grow the mask from its border, so the share is exact and the mask stays in blocks. Otherwise: `count` patches
    uniformly at random.
    """
    total = height * width
    if not 0 <= count <= total:
        raise ValueError(f"count={count} masked patches do not fit a {height}x{width} grid.")
    mask = np.zeros((height, width), dtype=bool)
    if not block_wise:
        mask.flat[rng.choice(total, size=count, replace=False)] = True
        return mask
    max_block, log_ratio = max(4, total // 3), (math.log(0.3), math.log(1 / 0.3))
    for _ in range(10 * count):  # rectangles while they add patches
        missing = count - int(mask.sum())
        if missing < 4:
            break
        area = rng.uniform(4, min(missing, max_block))
        aspect = math.exp(rng.uniform(*log_ratio))
        h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if not (1 <= h <= height and 1 <= w <= width):
            continue
        top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        block = mask[top : top + h, left : left + w]
        if int(mask.sum()) + int((~block).sum()) <= count:
            block[:] = True
    while (missing := count - int(mask.sum())) > 0:  # the rest grows the mask at its border (or starts it)
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        border = np.flatnonzero(grown & ~mask) if mask.any() else np.arange(total)
        mask.flat[rng.choice(border, size=min(missing, len(border)), replace=False)] = True
    return mask


class MultiCropTransform:
    """Worker-side half: crops an RGB image into 2 global and N local uint8 views and draws their
    photometric parameters. `args` may be any object with the `MultiCropArguments` fields (e.g. the run's
    `SilcTrainingArguments`); only those numbers are kept, so data workers receive nothing else.

    With a `patch_size` (masked patch distillation), each sample also gets `global_masks`: `(2, patches)` booleans,
    True where the student sees the mask token (`draw_masks`)."""

    def __init__(self, args: MultiCropArguments, global_crop_size: int, patch_size: int | None = None):
        self.args = MultiCropArguments.of(args)
        self.global_crop_size = global_crop_size
        self.patch_size = patch_size
        if patch_size is not None and global_crop_size % patch_size:
            raise ValueError(f"The global crop size {global_crop_size} is not a multiple of patch_size={patch_size}.")

    def draw_masks(self, rng: np.random.Generator) -> torch.Tensor | None:
        """The two global views' patch masks `(2, grid * grid)` (None without a `patch_size`). Each image masks
        floor(2p) of its two global views and one more with probability 2p - floor(2p) (p = `mask_probability`,
        the views chosen at random): at DINOv2's p = 0.5 exactly one, so every batch masks as many views as it has
        images (a static shape for torch.compile). A masked view hides a share of its patches drawn uniformly in
        `mask_ratio`. Drawn after the crops, so the crops do not change when masking is switched on."""
        if self.patch_size is None:
            return None
        a, grid = self.args, self.global_crop_size // self.patch_size
        expected = 2 * a.mask_probability
        masked_views = int(expected) + int(rng.random() < expected - int(expected))
        chosen = rng.permutation(2)[:masked_views]
        masks = np.zeros((2, grid, grid), dtype=bool)
        for view in sorted(chosen.tolist()):
            count = round(rng.uniform(*a.mask_ratio) * grid * grid)
            masks[view] = patch_mask(rng, grid, grid, count, a.mask_block_wise)
        return torch.from_numpy(masks.reshape(2, grid * grid))

    def _draw_augment(
        self, rng: np.random.Generator, blur_prob: float, solarize_prob: float, photometric: bool = True
    ) -> dict:
        """One view's parameters; without `photometric` only the flip can happen (the same numbers are drawn, so
        that the crops and flips do not depend on the choice)."""
        a = self.args
        augment = {
            "flip": rng.random() < a.flip_prob,
            "jitter": rng.random() < a.color_jitter_prob,
            "brightness": rng.uniform(max(0.0, 1 - a.brightness), 1 + a.brightness),
            "contrast": rng.uniform(max(0.0, 1 - a.contrast), 1 + a.contrast),
            "saturation": rng.uniform(max(0.0, 1 - a.saturation), 1 + a.saturation),
            "hue": rng.uniform(-a.hue, a.hue),
            "jitter_order": rng.permutation(4),
            "grayscale": rng.random() < a.grayscale_prob,
            "blur": rng.random() < blur_prob,
            "blur_sigma": rng.uniform(*a.blur_sigma),
            "solarize": rng.random() < solarize_prob,
        }
        if not photometric:
            augment.update(jitter=False, grayscale=False, blur=False, solarize=False)
        return augment

    def plan(self, width: int, height: int, rng: np.random.Generator) -> list[tuple[tuple, int, dict]]:
        """Every view's (crop box in a `width x height` image, output side, photometric parameters), drawn from
        `rng` in a fixed order: 2 global views, then the local ones. Needs only the image's size, so the
        decoder can be told how much resolution the crops will use before it decodes."""
        a = self.args
        views = []
        for index in range(2):
            box = random_resized_crop_box(rng, width, height, a.global_crop_scale, a.crop_ratio)
            dino = a.global_view_augmentation == "dino"
            augment = self._draw_augment(rng, a.blur_probs[index], a.solarize_probs[index], dino)
            views.append((box, self.global_crop_size, augment))
        for _ in range(a.num_local_crops):
            box = random_resized_crop_box(rng, width, height, a.local_crop_scale, a.crop_ratio)
            views.append((box, a.local_crop_size, self._draw_augment(rng, a.blur_probs[2], a.solarize_probs[2])))
        return views

    @staticmethod
    def reduction(plan: list[tuple[tuple, int, dict]]) -> float:
        """How many times smaller the image could be decoded with every crop box still at least as large as its
        output (so no view loses resolution)."""
        return min(min(right - left, bottom - top) / size for (left, top, right, bottom), size, _ in plan)

    def cut(
        self, image: Image.Image, plan: list[tuple[tuple, int, dict]], scale: tuple[float, float] = (1.0, 1.0)
    ) -> dict:
        """The planned views of an RGB `image`; `scale` maps the plan's boxes onto it when it was decoded smaller
        than the size the plan was drawn for."""
        views = []
        for (left, top, right, bottom), size, _ in plan:
            box = (left * scale[0], top * scale[1], right * scale[0], bottom * scale[1])
            view = image.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
            views.append(torch.from_numpy(np.array(view)).permute(2, 0, 1))  # (3, size, size) uint8
        a = self.args
        empty = torch.empty(0, 3, a.local_crop_size, a.local_crop_size, dtype=torch.uint8)
        return {
            "global_views": torch.stack(views[:2]),
            "local_views": torch.stack(views[2:]) if len(views) > 2 else empty,
            "global_augment": stack_augment([augment for _, _, augment in plan[:2]]),
            "local_augment": stack_augment([augment for _, _, augment in plan[2:]]),
        }

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> dict:
        sample = self.cut(image, self.plan(image.width, image.height, rng))
        if (masks := self.draw_masks(rng)) is not None:
            sample["global_masks"] = masks
        return sample


def stack_augment(per_view: list[dict]) -> dict[str, torch.Tensor]:
    """List of per-view parameter dicts -> dict of tensors with a leading view dimension."""
    return {
        key: torch.as_tensor(np.array([view[key] for view in per_view]), dtype=dtype).reshape(
            len(per_view), *((4,) if key == "jitter_order" else ())
        )
        for key, dtype in AUGMENT_KEYS.items()
    }


# ----------------------------------------------------------------------------------------------------------
# Accelerator-side half: batched photometric ops on float images in [0, 1], shape (n, 3, H, W).


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma (Pillow's "L" conversion), `(n, 1, H, W)`."""
    r, g, b = images.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    factor = factor.view(-1, 1, 1, 1)
    return (factor * images + (1 - factor) * other).clamp(0, 1)


def _rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    r, g, b = images.unbind(1)
    value, _ = images.max(1)
    chroma = value - images.min(1).values
    safe_chroma = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    saturation = torch.where(
        value > 0, chroma / torch.where(value > 0, value, torch.ones_like(value)), torch.zeros_like(value)
    )
    hue = torch.where(
        value == r,
        ((g - b) / safe_chroma) % 6,
        torch.where(value == g, (b - r) / safe_chroma + 2, (r - g) / safe_chroma + 4),
    )
    hue = torch.where(chroma > 0, hue / 6, torch.zeros_like(hue))
    return torch.stack([hue, saturation, value], 1)


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    hue, saturation, value = hsv.unsqueeze(2).unbind(1)  # each (n, 1, H, W)
    k = (torch.tensor([5.0, 3.0, 1.0], device=hsv.device).view(1, 3, 1, 1) + hue * 6) % 6
    return value - value * saturation * torch.minimum(k, 4 - k).clamp(0, 1)


def _adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    hsv = _rgb_to_hsv(images)
    hsv = torch.cat([(hsv[:, :1] + shift.view(-1, 1, 1, 1)) % 1.0, hsv[:, 1:]], dim=1)
    return _hsv_to_rgb(hsv)


_JITTER_OPS = (
    ("brightness", lambda x, f: _blend(x, torch.zeros_like(x), f)),
    ("contrast", lambda x, f: _blend(x, _grayscale(x).mean(dim=(1, 2, 3), keepdim=True), f)),
    ("saturation", lambda x, f: _blend(x, _grayscale(x), f)),
    ("hue", _adjust_hue),
)


def _gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image and reflect padding."""
    n, channels, height, width = images.shape
    offsets = torch.arange(kernel_size, device=images.device, dtype=images.dtype) - kernel_size // 2
    kernel = torch.exp(-(offsets**2) / (2 * sigma.view(-1, 1) ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)  # (n * 3, k)
    x = images.reshape(1, n * channels, height, width)
    pad = kernel_size // 2
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), kernel.view(-1, 1, 1, kernel_size), groups=n * channels)
    x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), kernel.view(-1, 1, kernel_size, 1), groups=n * channels)
    return x.reshape(n, channels, height, width)


def apply_photometric(
    views: torch.Tensor,
    augment: dict[str, torch.Tensor],
    image_mean: list[float],
    image_std: list[float],
    blur_kernel_size: int = 9,
    solarize_threshold: float = 0.5,
) -> torch.Tensor:
    """Flip, colour jitter, grayscale, blur, solarize and normalise uint8 views `(n, 3, H, W)` with their
    per-view parameters (each `augment[key]` has a leading dimension n). Returns float32 pixel values."""
    x = views.float() / 255
    x = torch.where(augment["flip"].view(-1, 1, 1, 1), x.flip(-1), x)
    for slot in range(4):  # each view applies the four jitter ops in its own random order
        for op_index, (name, op) in enumerate(_JITTER_OPS):
            chosen = torch.nonzero(augment["jitter"] & (augment["jitter_order"][:, slot] == op_index)).flatten()
            if chosen.numel():
                x[chosen] = op(x[chosen], augment[name][chosen])
    x = torch.where(augment["grayscale"].view(-1, 1, 1, 1), _grayscale(x).expand_as(x), x)
    blurred = torch.nonzero(augment["blur"]).flatten()
    if blurred.numel():
        x[blurred] = _gaussian_blur(x[blurred], augment["blur_sigma"][blurred], blur_kernel_size)
    x = torch.where(augment["solarize"].view(-1, 1, 1, 1) & (x >= solarize_threshold), 1 - x, x)
    mean = torch.tensor(image_mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(image_std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std
