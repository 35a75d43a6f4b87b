"""Captioned scenes: a procedural image-caption-mask dataset that ships with the package.

Each image has a textured background, one large main object and up to two small ones, of five classes (tree,
house, car, flower, fish), each drawn from parts (a tree is a crown on a trunk, a car a body, a window and two
wheels, ...) in a colour. It comes with a natural-language caption naming every object and the background (an
object's colour is named half of the time: "a large red car" or "a large car"), a pixel mask (0 = background,
k = the k-th class, every part of an object carrying its class) and a class label (the class with the most visible
pixels). Everything is a deterministic function of the seed; splits use disjoint seeds. Export as `imagefolder` +
`metadata.jsonl` or as webdataset shards, so that the training and evaluation scripts run on it exactly as on real data:

    python -m silc_hf.data.scenes --output-dir data/scenes                      # imagefolder splits
    python -m silc_hf.data.scenes --output-dir data/scenes-wds --format webdataset

Why the scenes look as they do, and what was measured on them: `docs/scenes.md`.
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

from ..tools.cli import ArgumentParser

CLASSES = ("tree", "house", "car", "flower", "fish")
PALETTE = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (45, 85, 215),
    "yellow": (235, 210, 50),
    "purple": (140, 60, 180),
    "white": (240, 240, 240),
    "orange": (240, 140, 30),
    "pink": (240, 130, 190),
    "brown": (120, 75, 35),
    "black": (25, 25, 25),
}
WINDOW = (170, 210, 240)
# The colour word of each class's main part (tree crown, house wall, car body, flower petals, fish body).
CLASS_COLORS = {
    "tree": ("green", "orange", "yellow"),
    "house": ("white", "yellow", "blue", "pink"),
    "car": ("red", "blue", "yellow", "white", "green"),
    "flower": ("red", "purple", "pink", "white", "yellow"),
    "fish": ("orange", "blue", "yellow", "red", "purple"),
}
SIZES = {"large": (0.6, 0.8), "small": (0.28, 0.36)}  # object box side as a fraction of the image side
MAX_OBJECTS = 3  # one large main object, then up to two small ones
COLOR_WORD_PROB = 0.5  # each object's colour is named in the caption half of the time
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
    mask: np.ndarray  # (H, W) uint8: 0 background, k = 1 + index in CLASSES
    caption: str
    label: int  # index in CLASSES of the object with the most visible pixels
    objects: list[dict]


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
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


class _Painter:
    """Draws an object's parts in box coordinates (u, v in [0, 1], u mirrored when `flip`) on the image and,
    with the object's class id, on the mask."""

    def __init__(self, image: ImageDraw.ImageDraw, mask: ImageDraw.ImageDraw, class_id: int, box, flip: bool):
        self.image, self.mask, self.class_id = image, mask, class_id
        self.left, self.top, self.side, self.flip = *box, flip

    def point(self, u: float, v: float) -> tuple[float, float]:
        return self.left + self.side * (1 - u if self.flip else u), self.top + self.side * v

    def _box(self, u0, v0, u1, v1) -> tuple[float, float, float, float]:
        (x0, y0), (x1, y1) = self.point(u0, v0), self.point(u1, v1)
        return min(x0, x1), y0, max(x0, x1), y1

    def rectangle(self, u0, v0, u1, v1, color) -> None:
        self.image.rectangle(self._box(u0, v0, u1, v1), fill=color)
        self.mask.rectangle(self._box(u0, v0, u1, v1), fill=self.class_id)

    def ellipse(self, u0, v0, u1, v1, color) -> None:
        self.image.ellipse(self._box(u0, v0, u1, v1), fill=color)
        self.mask.ellipse(self._box(u0, v0, u1, v1), fill=self.class_id)

    def polygon(self, points, color) -> None:
        self.image.polygon([self.point(u, v) for u, v in points], fill=color)
        self.mask.polygon([self.point(u, v) for u, v in points], fill=self.class_id)


def _draw_object(paint: _Painter, kind: str, color: str, rng: np.random.Generator) -> None:
    main = PALETTE[color]
    if kind == "tree":
        paint.rectangle(0.42, 0.55, 0.58, 1.0, PALETTE["brown"])  # trunk
        paint.ellipse(0.12, 0.0, 0.88, 0.7, main)  # crown
    elif kind == "house":
        paint.rectangle(0.15, 0.45, 0.85, 1.0, main)  # wall
        roof = PALETTE[("red", "brown")[rng.integers(2)]]
        paint.polygon([(0.05, 0.48), (0.5, 0.08), (0.95, 0.48)], roof)
        paint.rectangle(0.42, 0.68, 0.58, 1.0, PALETTE["brown"])  # door
    elif kind == "car":
        paint.rectangle(0.0, 0.45, 1.0, 0.8, main)  # body
        paint.rectangle(0.2, 0.22, 0.72, 0.47, main)  # cabin
        paint.rectangle(0.28, 0.27, 0.64, 0.44, WINDOW)
        paint.ellipse(0.1, 0.66, 0.34, 0.9, PALETTE["black"])  # wheels
        paint.ellipse(0.66, 0.66, 0.9, 0.9, PALETTE["black"])
    elif kind == "flower":
        paint.rectangle(0.46, 0.5, 0.54, 1.0, PALETTE["green"])  # stem
        for k in range(6):  # petals
            u, v = 0.5 + 0.25 * math.cos(k * math.pi / 3), 0.32 + 0.25 * math.sin(k * math.pi / 3)
            paint.ellipse(u - 0.15, v - 0.15, u + 0.15, v + 0.15, main)
        paint.ellipse(0.38, 0.2, 0.62, 0.44, PALETTE["orange" if color == "yellow" else "yellow"])  # heart
    else:  # fish
        paint.ellipse(0.0, 0.25, 0.72, 0.75, main)  # body
        paint.polygon([(0.62, 0.5), (1.0, 0.22), (1.0, 0.78)], main)  # tail
        paint.ellipse(0.14, 0.4, 0.24, 0.5, PALETTE["black"])  # eye


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _place(rng: np.random.Generator, size: int, side: float, boxes: list) -> tuple[float, float]:
    """Top-left corner for a box of `side`: the least-overlapping of 30 random candidates (objects stay visible)."""
    best, best_overlap = None, math.inf
    for _attempt in range(30):
        left, top = rng.uniform(0, size - side, 2)
        overlap = max(
            (
                max(0.0, min(left + side, x + s) - max(left, x))
                * max(0.0, min(top + side, y + s) - max(top, y))
                / side**2
                for x, y, s in boxes
            ),
            default=0.0,
        )
        if overlap < best_overlap:
            best, best_overlap = (left, top), overlap
        if overlap == 0:
            break
    return best


def draw_scene(rng: np.random.Generator, size: int = 64) -> Scene:
    """Draw one scene from `rng`: a large main object and up to two small ones, placed to overlap little."""
    pixels, background = _background(rng, size)
    image = Image.fromarray(pixels)
    mask_image = Image.new("L", (size, size), 0)
    draw, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask_image)
    objects, boxes = [], []
    for index in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        kind = CLASSES[rng.integers(len(CLASSES))]
        color = CLASS_COLORS[kind][rng.integers(len(CLASS_COLORS[kind]))]
        size_name = "large" if index == 0 else "small"
        side = size * rng.uniform(*SIZES[size_name])
        left, top = _place(rng, size, side, boxes)
        boxes.append((left, top, side))
        paint = _Painter(draw, draw_mask, CLASSES.index(kind) + 1, (left, top, side), flip=rng.random() < 0.5)
        _draw_object(paint, kind, color, rng)
        objects.append({"class": kind, "color": color, "size": size_name, "area": side * side})
    mask = np.asarray(mask_image).copy()
    # Later objects may cover earlier ones: the label is the class with the most visible pixels.
    visible = np.bincount(mask.ravel(), minlength=len(CLASSES) + 1)[1:]
    label = int(np.argmax(visible))
    phrases = [
        _article(
            f"{o['size']} {o['color']} {o['class']}" if rng.random() < COLOR_WORD_PROB else f"{o['size']} {o['class']}"
        )
        for o in sorted(objects, key=lambda o: -o["area"])
    ]
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    caption = TEMPLATES[rng.integers(len(TEMPLATES))].format(objects=listed, background=background)
    return Scene(image=image, mask=mask, caption=caption, label=label, objects=objects)


def generate(split: str, num_examples: int, seed: int = 0, image_size: int = 64):
    """Yield the scenes of a split (`train`, `validation`, `test`): example i is drawn from (seed, split, i)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split={split!r} is not one of {list(SPLIT_SEEDS)}.")
    for index in range(num_examples):
        yield draw_scene(np.random.default_rng([seed, SPLIT_SEEDS[split], index]), image_size)


def as_dataset(split: str, num_examples: int, seed: int = 0, image_size: int = 64):
    """The split as an in-memory `datasets.Dataset` with columns image, mask, text, label."""
    import datasets

    scenes = list(generate(split, num_examples, seed, image_size))
    features = datasets.Features(
        image=datasets.Image(),
        mask=datasets.Image(),
        text=datasets.Value("string"),
        label=datasets.ClassLabel(names=list(CLASSES)),
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
            meta = {"text": scene.caption, "label": scene.label, "label_name": CLASSES[scene.label]}
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
    parser = ArgumentParser(
        prog="python -m silc_hf.data.scenes",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--output-dir", required=True, help="where the splits are written (one folder each)")
    parser.add_argument(
        "--format",
        choices=["imagefolder", "webdataset"],
        default="imagefolder",
        help="imagefolder + metadata.jsonl, or .tar shards",
    )
    parser.add_argument("--train", type=int, default=2000, help="scenes in the train split")
    parser.add_argument("--validation", type=int, default=200, help="scenes in the validation split")
    parser.add_argument("--test", type=int, default=200, help="scenes in the test split")
    parser.add_argument("--image-size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="base seed (splits use disjoint seeds)")
    args = parser.parse_args(argv)
    sizes = {"train": args.train, "validation": args.validation, "test": args.test}
    export(args.output_dir, sizes, args.seed, args.image_size, args.format)
    print(f"Wrote {sizes} captioned scenes ({args.format}) to {args.output_dir}")


if __name__ == "__main__":
    main()
