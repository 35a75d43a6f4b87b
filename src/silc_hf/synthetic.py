"""Captioned scenes: a procedural image-caption-mask dataset that ships with the package.

Each image has a textured background and 1-4 coloured shapes of two sizes; it comes with a natural-language
caption naming every object and the background, a pixel mask (0 = background, k = the k-th shape class),
and a class label (the shape of the object with the most visible pixels). Everything is a deterministic
function of the seed. Splits use disjoint seeds. Export as `imagefolder` + `metadata.jsonl` or as
webdataset shards, so that the training and evaluation scripts run on it exactly as on real data:

    python -m silc_hf.synthetic --output-dir data/scenes                      # imagefolder splits
    python -m silc_hf.synthetic --output-dir data/scenes-wds --format webdataset
"""

import argparse
import io
import json
import math
import os
import tarfile
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 50),
    "purple": (140, 60, 180),
    "white": (245, 245, 245),
}
SIZES = {"small": (0.18, 0.26), "large": (0.34, 0.46)}  # object side as a fraction of the image side
BACKGROUNDS = ("plain", "noisy", "striped", "checkered", "gradient")
SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}
TEMPLATES = (
    "{objects} on a {background} background",
    "a picture of {objects} over a {background} background",
    "a {background} background with {objects}",
    "{objects}, {background} background",
)


@dataclass
class Scene:
    """One generated example."""

    image: Image.Image
    mask: np.ndarray  # (H, W) uint8: 0 background, k = 1 + index in SHAPES
    caption: str
    label: int  # index in SHAPES of the dominant object
    objects: list[dict]


def _background(rng: np.random.Generator, size: int, backgrounds=BACKGROUNDS) -> tuple[np.ndarray, str]:
    kind = backgrounds[rng.integers(len(backgrounds))]
    base = rng.integers(70, 170, 3).astype(np.float64)  # muted tones, distinct from the object colours
    other = np.clip(base + rng.integers(-60, 60, 3), 0, 255)
    y, x = np.mgrid[0:size, 0:size]
    if kind == "plain":
        pixels = np.broadcast_to(base, (size, size, 3)).copy()
    elif kind == "noisy":
        pixels = base + rng.normal(0, 25, (size, size, 3))
    elif kind == "striped":
        period = rng.integers(4, 10)
        angle = rng.uniform(0, math.pi)
        phase = (x * math.cos(angle) + y * math.sin(angle)) // period % 2
        pixels = np.where(phase[..., None] == 0, base, other)
    elif kind == "checkered":
        cell = rng.integers(4, 12)
        pixels = np.where(((x // cell + y // cell) % 2)[..., None] == 0, base, other)
    else:
        t = (x if rng.random() < 0.5 else y)[..., None] / (size - 1)
        pixels = base * (1 - t) + other * t
    return np.clip(pixels, 0, 255).astype(np.uint8), kind


def _polygon(shape: str, cx: float, cy: float, half: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        return [(cx + half * u, cy + half * v) for u, v in corners]
    angle -= math.pi / 2  # angle 0: triangle and star point up
    if shape == "triangle":
        points = [(math.cos(angle + k * 2 * math.pi / 3), math.sin(angle + k * 2 * math.pi / 3)) for k in range(3)]
    elif shape == "star":
        points = [
            (
                (1.0 if k % 2 == 0 else 0.45) * math.cos(angle + k * math.pi / 5),
                (1.0 if k % 2 == 0 else 0.45) * math.sin(angle + k * math.pi / 5),
            )
            for k in range(10)
        ]
    else:  # cross
        arm = 0.35
        outline = [
            (-arm, -1),
            (arm, -1),
            (arm, -arm),
            (1, -arm),
            (1, arm),
            (arm, arm),
            (arm, 1),
            (-arm, 1),
            (-arm, arm),
            (-1, arm),
            (-1, -arm),
            (-arm, -arm),
        ]
        c, s = math.cos(angle), math.sin(angle)
        points = [(u * c - v * s, u * s + v * c) for u, v in outline]
    return [(cx + half * u, cy + half * v) for u, v in points]


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def draw_scene(
    rng: np.random.Generator,
    size: int = 64,
    num_objects=(1, 4),
    sizes=None,
    max_rotation: float = 180.0,
    backgrounds=BACKGROUNDS,
) -> Scene:
    """Draw one scene from `rng`."""
    sizes = sizes or SIZES
    pixels, background = _background(rng, size, backgrounds)
    image = Image.fromarray(pixels)
    mask_image = Image.new("L", (size, size), 0)
    draw, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask_image)
    objects, boxes = [], []
    for _ in range(int(rng.integers(num_objects[0], num_objects[1] + 1))):
        shape = SHAPES[rng.integers(len(SHAPES))]
        color = list(COLORS)[rng.integers(len(COLORS))]
        size_name = list(sizes)[rng.integers(len(sizes))]
        half = size * rng.uniform(*sizes[size_name]) / 2
        for _attempt in range(20):  # keep objects mostly apart, so that each stays visible
            cx, cy = rng.uniform(half, size - half, 2)
            if all(abs(cx - bx) > 0.8 * (half + bh) or abs(cy - by) > 0.8 * (half + bh) for bx, by, bh in boxes):
                break
        boxes.append((cx, cy, half))
        class_id = SHAPES.index(shape) + 1
        if shape == "circle":
            box = (cx - half, cy - half, cx + half, cy + half)
            draw.ellipse(box, fill=COLORS[color])
            draw_mask.ellipse(box, fill=class_id)
        else:
            polygon = _polygon(shape, cx, cy, half, math.radians(rng.uniform(-max_rotation, max_rotation)))
            draw.polygon(polygon, fill=COLORS[color])
            draw_mask.polygon(polygon, fill=class_id)
        objects.append({"shape": shape, "color": color, "size": size_name, "area": half * half})
    mask = np.asarray(mask_image).copy()
    # Later objects may cover earlier ones: the label is the shape with the most visible pixels.
    visible = np.bincount(mask.ravel(), minlength=len(SHAPES) + 1)[1:]
    label = int(np.argmax(visible))
    ordered = sorted(objects, key=lambda o: -o["area"])
    phrases = [_article(f"{o['size']} {o['color']} {o['shape']}") for o in ordered]
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    caption = TEMPLATES[rng.integers(len(TEMPLATES))].format(objects=listed, background=background)
    return Scene(image=image, mask=mask, caption=caption, label=label, objects=objects)


def generate(split: str, num_examples: int, seed: int = 0, image_size: int = 64, **style):
    """Yield the scenes of a split (`train`, `validation`, `test`): example i is drawn from (seed, split, i)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split={split!r} is not one of {list(SPLIT_SEEDS)}.")
    for index in range(num_examples):
        yield draw_scene(np.random.default_rng([seed, SPLIT_SEEDS[split], index]), image_size, **style)


def as_dataset(split: str, num_examples: int, seed: int = 0, image_size: int = 64):
    """The split as an in-memory `datasets.Dataset` with columns image, mask, text, label."""
    import datasets

    scenes = list(generate(split, num_examples, seed, image_size))
    features = datasets.Features(
        image=datasets.Image(),
        mask=datasets.Image(),
        text=datasets.Value("string"),
        label=datasets.ClassLabel(names=list(SHAPES)),
    )
    return datasets.Dataset.from_dict(
        {
            "image": [s.image for s in scenes],
            "mask": [Image.fromarray(s.mask) for s in scenes],
            "text": [s.caption for s in scenes],
            "label": [s.label for s in scenes],
        },
        features=features,
    )


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def export(
    output_dir: str,
    sizes: dict[str, int],
    seed: int = 0,
    image_size: int = 64,
    fmt: str = "imagefolder",
    shard_size: int = 1000,
) -> None:
    """Write the splits under `output_dir/<split>` as an imagefolder (image, mask, metadata.jsonl) or as
    webdataset shards (`<key>.png`, `<key>.mask.png`, `<key>.txt`, `<key>.json`)."""
    if fmt not in ("imagefolder", "webdataset"):
        raise ValueError(f"format={fmt!r} is not supported; use 'imagefolder' or 'webdataset'.")
    for split, count in sizes.items():
        folder = os.path.join(output_dir, split)
        os.makedirs(folder, exist_ok=True)
        rows, tar = [], None
        for index, scene in enumerate(generate(split, count, seed, image_size)):
            key = f"{index:06d}"  # no split name in file names: `datasets` would read it as a split pattern
            meta = {"text": scene.caption, "label": scene.label, "label_name": SHAPES[scene.label]}
            if fmt == "imagefolder":
                scene.image.save(os.path.join(folder, f"{key}.png"))
                Image.fromarray(scene.mask).save(os.path.join(folder, f"{key}_mask.png"))
                rows.append({"file_name": f"{key}.png", "mask_file_name": f"{key}_mask.png", **meta})
                continue
            if index % shard_size == 0:
                if tar is not None:
                    tar.close()
                tar = tarfile.open(os.path.join(folder, f"{index // shard_size:05d}.tar"), "w")
            members = {
                "png": _png(scene.image),
                "mask.png": _png(Image.fromarray(scene.mask)),
                "txt": scene.caption.encode(),
                "json": json.dumps(meta).encode(),
            }
            for suffix, data in members.items():
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        if tar is not None:
            tar.close()
        if fmt == "imagefolder":
            with open(os.path.join(folder, "metadata.jsonl"), "w") as file:
                file.write("\n".join(json.dumps(row) for row in rows) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m silc_hf.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--format", choices=["imagefolder", "webdataset"], default="imagefolder")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--validation", type=int, default=200)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = {"train": args.train, "validation": args.validation, "test": args.test}
    export(args.output_dir, sizes, args.seed, args.image_size, args.format)
    print(f"Wrote {sizes} captioned scenes ({args.format}) to {args.output_dir}")


if __name__ == "__main__":
    main()
