"""What the benchmark and study scripts in `benchmarks/` share: one timing helper, the FLOP model of a training step,
random inputs for the pretraining step, photo-like JPEGs, and paired intervals over seeds.

The FLOP model counts what the hardware does, for MFU and for predicted speed ratios: forward = 2 x block
parameters x tokens + 4 x layers x tokens^2 x width (the attention products), backward = 2 x forward.
`SilcTrainer.floating_point_ops` (the Trainer's `total_flos`) follows transformers' convention instead: 6 x
non-embedding parameters x tokens, without the attention products.
"""

import io
import itertools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass
class Timing:
    """Seconds of the first timed call (a compilation or cache warm-up shows here) and the median and mean of the
    calls after it."""

    first: float
    median: float
    mean: float


def time_calls(
    fn: Callable[[], object],
    repeats: int,
    warmup: int = 0,
    clock: Callable[[], float] = time.perf_counter,
    device: str | torch.device = "cpu",
) -> Timing:
    """Call `fn` `warmup` times untimed, then once timed (`first`), then `repeats` times (`median`, `mean`).
    `clock=time.process_time` measures this process's CPU time; on CUDA every call is synchronised."""

    def timed() -> float:
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        start = clock()
        fn()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        return clock() - start

    for _ in range(warmup):
        fn()
    first = timed()
    times = [timed() for _ in range(repeats)]
    return Timing(first=first, median=statistics.median(times), mean=statistics.fmean(times))


def mean_cpu_ms(fn: Callable[[object], object], items: list) -> float:
    """Mean CPU milliseconds of this process per `fn(item)` over `items`, after one untimed call on the first."""
    calls = iter(itertools.chain(items[:1], items))
    return time_calls(lambda: fn(next(calls)), len(items), clock=time.process_time).mean * 1000


def tower_flops(config, tokens: int) -> float:
    """Forward FLOPs of one sequence of `tokens` through a tower's transformer blocks."""
    d, layers = config.hidden_size, config.num_hidden_layers
    block_params = layers * (4 * d * d + 2 * d * config.intermediate_size)
    return 2 * block_params * tokens + 4 * layers * tokens**2 * d


def step_flops(config, num_local: int, local_size: int, head_params: int) -> tuple[float, float]:
    """(CLIP-only, SILC) training FLOPs per image: forward + backward (3x forward) of the trained parts, and the
    teacher's forward on the 2 global views."""
    vision, text = config.vision_config, config.text_config
    prefix = 1 if vision.pooling_type == "cls" else 0
    global_tokens = vision.num_patches + prefix
    local_tokens = (local_size // vision.patch_size) ** 2 + prefix
    image_fwd, local_fwd = tower_flops(vision, global_tokens), tower_flops(vision, local_tokens)
    text_step = 3 * tower_flops(text, text.max_position_embeddings)
    head_fwd = 2 * head_params
    clip = 3 * image_fwd + text_step
    student = 3 * (2 * image_fwd + num_local * local_fwd) + text_step + (2 + num_local) * 3 * head_fwd
    teacher = 2 * image_fwd + 2 * head_fwd
    return clip, student + teacher


def identity_augment(batch: int, views: int, device="cpu") -> dict[str, torch.Tensor]:
    """Per-view photometric parameters that change nothing (no flip, jitter, grayscale, blur or solarize), for
    benchmarks that feed random views straight to the step."""
    flags = ("flip", "jitter", "grayscale", "blur", "solarize")
    augment = {key: torch.zeros(batch, views, dtype=torch.bool, device=device) for key in flags}
    augment.update({k: torch.ones(batch, views, device=device) for k in ("brightness", "contrast", "saturation")})
    augment["blur_sigma"] = torch.ones(batch, views, device=device)
    augment["hue"] = torch.zeros(batch, views, device=device)
    augment["jitter_order"] = torch.arange(4, device=device).expand(batch, views, 4).contiguous()
    return augment


def random_pretraining_batch(config, batch: int, num_local: int, local_size: int, device="cpu") -> dict:
    """A `SilcPretrainingModel` batch of random uint8 views (no photometric change) and random texts ending in EOS."""
    size, length = config.vision_config.image_size, config.text_config.max_position_embeddings
    generator = torch.Generator(device=device).manual_seed(0)

    def views(count: int, side: int) -> torch.Tensor:
        shape = (batch, count, 3, side, side)
        return torch.randint(0, 256, shape, dtype=torch.uint8, device=device, generator=generator)

    text = config.text_config
    input_ids = torch.randint(2, text.vocab_size - 1, (batch, length), device=device, generator=generator)
    if text.eos_token_id is not None:
        input_ids[:, -1] = text.eos_token_id
    return {
        "global_views": views(2, size),
        "global_augment": identity_augment(batch, 2, device),
        "local_views": views(num_local, local_size),
        "local_augment": identity_augment(batch, num_local, device),
        "input_ids": input_ids,
    }


def photo_like_jpeg(width: int, height: int, seed: int = 0) -> bytes:
    """Smooth gradients, soft blobs and grain: closer to a photograph's spectrum than noise or flat shapes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = []
    for _ in range(3):
        value = sum(
            np.sin(2 * np.pi * (rng.uniform(1, 12) * x + rng.uniform(1, 12) * y) + rng.uniform(0, 6)) for _ in range(4)
        )
        for _ in range(6):
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 0.75), rng.uniform(0.02, 0.1)
            value = value + 2 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / r**2)
        channels.append(value)
    pixels = np.stack(channels, -1)
    pixels = (pixels - pixels.min()) / (pixels.max() - pixels.min()) * 230 + rng.normal(0, 3, pixels.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


# Two-sided 95 % quantiles of Student's t with n - 1 degrees of freedom (n = 2..30), for paired intervals over seeds.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045)  # fmt: skip


def paired_interval(treatment: list[float], baseline: list[float]) -> dict:
    """Mean of the paired differences `treatment[i] - baseline[i]` (the same seed i) with its 95 % t-interval; the
    differences themselves are returned too. Needs 2 to 30 pairs."""
    differences = [t - b for t, b in zip(treatment, baseline, strict=True)]
    n = len(differences)
    if not 2 <= n <= len(T_975) + 1:
        raise ValueError(f"paired_interval needs 2 to {len(T_975) + 1} pairs, got {n}.")
    mean = statistics.fmean(differences)
    half = T_975[n - 2] * statistics.stdev(differences) / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "differences": differences}
