"""Captioned scenes (v3): a procedural image-caption-mask world that ships with the package.

Each scene is one or two regions of *stuff* (sky, grass, water, sand, wall, each a procedural texture) with one to
four *things* in front of them, drawn from 20 classes in 5 super-categories (vehicles, animals, plants, buildings,
household objects). A thing is recognisable by its shape and the layout of its parts (a car is a body, a cabin, a
window and two wheels); its two colours are drawn from one palette independently of its class, so colour does not
name the class. Every instance varies: box proportions, part proportions, size, mirror flip, position, and partial
occlusion by later things. Each scene comes with a caption in natural language that names its things and stuff
(sometimes only some of them, sometimes with colour, size or position words, in several phrasings), a mask with a
value for every pixel (1 + the index in `LABELS` of the thing or stuff drawn there), and a class label (the thing
with the most visible pixels). Everything is a deterministic function of the seed; splits use disjoint seeds.

    python -m silc_hf.data.scenes --output_dir data/scenes                      # imagefolder splits
    python -m silc_hf.data.scenes --output_dir data/scenes-wds --format webdataset

`OPEN_VOCABULARY_SPLITS` fixes which names an open-vocabulary segmenter may train on. What the scenes are for and
what was measured on them: `docs/scenes.md`.
"""

import io
import json
import math
import os
import tarfile
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..tools.cli import ArgumentParser, run_script

SUPER_CATEGORIES = {
    "vehicle": ("car", "bus", "boat", "plane"),
    "animal": ("fish", "bird", "snail", "butterfly"),
    "plant": ("tree", "flower", "cactus", "mushroom"),
    "building": ("house", "tower", "tent", "windmill"),
    "household": ("cup", "bottle", "chair", "umbrella"),
}
THINGS = tuple(name for names in SUPER_CATEGORIES.values() for name in names)
STUFF = ("sky", "grass", "water", "sand", "wall")
LABELS = THINGS + STUFF  # mask value v > 0 is LABELS[v - 1]; 0 is never drawn
CLASSES = THINGS  # the classification label is a thing

# Names an open-vocabulary segmenter never trains on: a quarter of the things, one per super-category, and one stuff.
# They still appear in the captions that pretraining reads (as in CLIP, then CAT-Seg on COCO-Stuff).
OPEN_VOCABULARY_SPLITS = {
    "A": ("bus", "snail", "cactus", "tent", "bottle", "sand"),
    "B": ("plane", "butterfly", "mushroom", "windmill", "chair", "wall"),
}


def open_vocabulary_split(name: str = "A") -> tuple[list[str], list[str]]:
    """(seen, unseen) label names of an open-vocabulary split: a segmenter trains on `seen` only."""
    if name not in OPEN_VOCABULARY_SPLITS:
        raise ValueError(f"open-vocabulary split {name!r} is not one of {list(OPEN_VOCABULARY_SPLITS)}.")
    unseen = list(OPEN_VOCABULARY_SPLITS[name])
    return [label for label in LABELS if label not in unseen], unseen


# Things' colours: any two different ones per thing, whatever its class.
PALETTE = {
    "red": (215, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (235, 210, 50),
    "green": (40, 160, 60),
    "blue": (45, 85, 215),
    "purple": (140, 60, 180),
    "pink": (240, 130, 190),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
    "brown": (120, 75, 35),
}
# The geometry below was chosen so that the demo's image tower learns the things' classes, supervised, in the
# demo's budget (`benchmarks/probe_scenes.py`, docs/scenes.md): a main thing near the centre, smaller ones around it.
MAX_THINGS = 4
THING_COUNT_PROBS = (0.4, 0.3, 0.2, 0.1)  # of 1, 2, 3, 4 things in a scene
MAIN_SIZE = (0.6, 0.8)  # box side of the main thing, as a fraction of the image side
MAIN_SHIFT = 0.05  # the main thing's centre moves up to this fraction of the side from the image's centre
OTHER_SIZE = (0.22, 0.32)
ASPECT_JITTER = 0.08  # log of a thing's box aspect ratio varies within +-this
PART_JITTER = 0.03  # of a part's proportions, as a fraction of the box
OUTLINE = (20, 20, 20)  # every part is outlined, as in a cartoon
STUFF_CONTRAST = 0.35  # of the stuff textures (1: the full pattern)
MIN_VISIBLE = 12  # pixels a thing must show to be named in the caption
COLOR_WORD_PROB = 0.5
SIZE_WORD_PROB = 0.3
POSITION_WORD_PROB = 0.3  # of the smaller things: "on the left" / "on the right"
OTHER_THING_WORD_PROB = 0.7  # each visible thing besides the main one is named with this probability
GROUND_WORD_PROB = 0.85  # the ground (or the one stuff) is named with this probability
TOP_WORD_PROB = 0.6  # the sky or wall above it
SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}


@dataclass
class Scene:
    """One generated example."""

    image: Image.Image
    mask: np.ndarray  # (H, W) uint8: 1 + index in LABELS
    caption: str
    label: int  # index in THINGS of the thing with the most visible pixels
    things: list[dict]
    stuff: list[str]


# ------------------------------------------------------------------------------------------------------ stuff


def _noise(rng: np.random.Generator, shape, scale: float) -> np.ndarray:
    return rng.normal(0, scale, shape)


def _stuff_pixels(name: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A procedural texture for a stuff class, `(height, width, 3)` float RGB: each stuff has its own hue range and
    pattern, in low contrast, so that the things in front stand out."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    contrast = STUFF_CONTRAST
    if name == "sky":
        top, bottom = np.array([110, 160, 230]) + rng.integers(-15, 15, 3), np.array([175, 210, 240])
        t = (y / max(height - 1, 1))[..., None]
        pixels = top * (1 - t) + bottom * t
        for _ in range(int(rng.integers(0, 3))):  # clouds
            cx, cy, rx, ry = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(6, 14), rng.uniform(3, 6)
            cloud = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1
            pixels[cloud] = (1 - contrast) * pixels[cloud] + contrast * 245
        return pixels
    if name == "grass":
        base = np.array([80, 155, 70]) + rng.integers(-15, 15, 3)
        blades = (np.sin(x * rng.uniform(1.5, 2.5) + rng.uniform(0, 6)) > 0.6)[..., None] * -30
        return base + contrast * (blades + _noise(rng, (height, width, 3), 12))
    if name == "water":
        base = np.array([50, 115, 175]) + rng.integers(-15, 15, 3)
        period, phase = rng.uniform(4, 7), rng.uniform(0, 6)
        waves = np.sin((y + 2 * np.sin(x / 5 + phase)) * 2 * math.pi / period)[..., None] * 25
        return base + contrast * waves
    if name == "sand":
        base = np.array([215, 190, 135]) + rng.integers(-15, 15, 3)
        return base + contrast * _noise(rng, (height, width, 3), 14)
    # wall: bricks with mortar lines
    brick = np.array([165, 90, 70]) + rng.integers(-20, 20, 3)
    rows, columns = rng.integers(5, 8), rng.integers(9, 14)
    row = (y // rows).astype(int)
    mortar = (y % rows < 1) | ((x + (row % 2) * columns / 2) % columns < 1)
    pixels = np.broadcast_to(brick, (height, width, 3)).copy()
    pixels[mortar] = (1 - contrast) * brick + contrast * np.array([215, 205, 195])
    return pixels


def _draw_stuff(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The scene's stuff: one region, or a top region (sky or wall) over a ground (grass, water, sand) split at a
    horizon. Returns pixels `(size, size, 3)` uint8, the mask and the stuff names, top first."""
    choice = rng.random()
    if choice < 0.25:
        names = [STUFF[rng.integers(1, len(STUFF))]]  # one of grass, water, sand, wall fills the scene
    else:
        top = "sky" if rng.random() < 0.7 else "wall"
        ground = ("grass", "water", "sand")[rng.integers(3)]
        names = [top, ground]
    pixels = np.zeros((size, size, 3))
    mask = np.zeros((size, size), dtype=np.uint8)
    horizon = size if len(names) == 1 else int(size * rng.uniform(0.3, 0.6))
    for name, (start, stop) in zip(names, ((0, horizon), (horizon, size))):
        if stop > start:
            pixels[start:stop] = _stuff_pixels(name, rng, stop - start, size)
            mask[start:stop] = LABELS.index(name) + 1
    return np.clip(pixels, 0, 255).astype(np.uint8), mask, names


# ------------------------------------------------------------------------------------------------------ things


class _Painter:
    """Draws a thing's parts in box coordinates (u, v in [0, 1], u mirrored when `flip`), outlined, on the image and,
    with the thing's mask value, on exactly the same pixels of the mask."""

    def __init__(self, image, mask, value: int, box, flip: bool):
        self.image, self.mask, self.value = image, mask, value
        self.left, self.top, self.width, self.height = box
        self.flip = flip

    def point(self, u: float, v: float) -> tuple[float, float]:
        return self.left + self.width * (1 - u if self.flip else u), self.top + self.height * v

    def _box(self, u0, v0, u1, v1):
        (x0, y0), (x1, y1) = self.point(u0, v0), self.point(u1, v1)
        return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)

    def _draw(self, shape: str, where, color, **options) -> None:
        getattr(self.image, shape)(where, fill=color, outline=OUTLINE, **options)
        # Pillow skips an outline of the fill's own value, and a polygon's outline can leave its fill: two calls
        getattr(self.mask, shape)(where, fill=self.value, **options)
        getattr(self.mask, shape)(where, outline=self.value, **options)

    def rectangle(self, u0, v0, u1, v1, color) -> None:
        self._draw("rectangle", self._box(u0, v0, u1, v1), color)

    def ellipse(self, u0, v0, u1, v1, color) -> None:
        self._draw("ellipse", self._box(u0, v0, u1, v1), color)

    def pieslice(self, u0, v0, u1, v1, start, end, color) -> None:
        if self.flip:  # mirror the angles with the box
            start, end = 180 - end, 180 - start
        self._draw("pieslice", self._box(u0, v0, u1, v1), color, start=start, end=end)

    def polygon(self, points, color) -> None:
        self._draw("polygon", [self.point(u, v) for u, v in points], color)

    def ring(self, u0, v0, u1, v1, color, width: float = 0.1) -> None:
        pixels = max(1, round(width * min(self.width, self.height)))
        self.image.ellipse(self._box(u0, v0, u1, v1), outline=color, width=pixels)
        self.mask.ellipse(self._box(u0, v0, u1, v1), outline=self.value, width=pixels)

    def line(self, u0, v0, u1, v1, color, width: float = 0.06) -> None:
        pixels = max(1, round(width * min(self.width, self.height)))
        self.image.line([self.point(u0, v0), self.point(u1, v1)], fill=color, width=pixels)
        self.mask.line([self.point(u0, v0), self.point(u1, v1)], fill=self.value, width=pixels)


def _draw_thing(paint: _Painter, kind: str, main, second, rng: np.random.Generator) -> None:
    """The parts of one thing in its two colours; `j(x)` jitters a proportion for this instance."""

    def j(value: float, amount: float = PART_JITTER) -> float:
        return value + rng.uniform(-amount, amount)

    p = paint
    if kind == "car":
        body = j(0.45)
        p.rectangle(0.0, body, 1.0, 0.8, main)
        p.polygon([(0.18, body + 0.02), (0.3, j(0.18)), (0.68, 0.18), (0.8, body + 0.02)], main)  # cabin
        p.rectangle(0.33, 0.26, 0.65, body - 0.02, second)  # window
        p.ellipse(0.08, 0.64, 0.34, 0.92, second)  # wheels
        p.ellipse(0.66, 0.64, 0.92, 0.92, second)
    elif kind == "bus":
        p.rectangle(0.0, j(0.12), 1.0, 0.82, main)
        for k in range(4):  # a row of windows
            p.rectangle(0.06 + 0.23 * k, 0.25, 0.22 + 0.23 * k, 0.45, second)
        p.ellipse(0.1, 0.7, 0.3, 0.95, second)
        p.ellipse(0.7, 0.7, 0.9, 0.95, second)
    elif kind == "boat":
        deck = j(0.6)
        p.polygon([(0.0, deck), (1.0, deck), (0.82, 0.95), (0.18, 0.95)], main)  # hull
        p.rectangle(0.46, 0.05, 0.54, deck, second)  # mast
        p.polygon([(0.56, 0.08), (0.56, deck - 0.05), (j(0.95), deck - 0.05)], second)  # sail
    elif kind == "plane":
        p.ellipse(0.0, 0.4, 1.0, 0.62, main)  # fuselage
        p.polygon([(0.35, 0.5), (0.6, 0.5), (0.45, j(0.95)), (0.3, 0.95)], second)  # wing
        p.polygon([(0.82, 0.45), (1.0, 0.45), (1.0, j(0.12))], second)  # tail fin
    elif kind == "fish":
        p.ellipse(0.0, j(0.25), 0.72, j(0.75), main)
        p.polygon([(0.62, 0.5), (1.0, j(0.18)), (1.0, j(0.82))], second)  # tail
        p.ellipse(0.12, 0.4, 0.22, 0.5, second)  # eye
    elif kind == "bird":
        p.ellipse(0.12, 0.4, 0.75, 0.75, main)  # body
        p.ellipse(0.58, j(0.15), 0.86, 0.45, main)  # head
        p.polygon([(0.84, 0.26), (1.0, 0.32), (0.84, 0.38)], second)  # beak
        p.ellipse(0.22, 0.47, 0.58, 0.66, second)  # wing
        p.line(0.4, 0.72, 0.38, 0.98, second)  # legs
        p.line(0.52, 0.72, 0.54, 0.98, second)
    elif kind == "snail":
        p.ellipse(0.0, 0.68, 1.0, 0.92, second)  # foot
        p.ellipse(0.3, j(0.12), 0.9, 0.78, main)  # shell
        p.ellipse(0.45, 0.3, 0.75, 0.6, second)  # spiral
        p.ellipse(0.53, 0.38, 0.67, 0.52, main)
        p.line(0.08, 0.72, 0.02, 0.45, second, 0.05)  # feelers
        p.line(0.14, 0.72, 0.16, 0.45, second, 0.05)
    elif kind == "butterfly":
        top = j(0.5)
        p.ellipse(0.0, 0.0, 0.48, top, main)  # wings
        p.ellipse(0.52, 0.0, 1.0, top, main)
        p.ellipse(0.08, top - 0.05, 0.46, 0.92, main)
        p.ellipse(0.54, top - 0.05, 0.92, 0.92, main)
        p.ellipse(0.15, 0.12, 0.32, 0.3, second)  # spots
        p.ellipse(0.68, 0.12, 0.85, 0.3, second)
        p.ellipse(0.44, 0.08, 0.56, 0.95, second)  # body
    elif kind == "tree":
        crown = j(0.65)
        p.rectangle(0.4, crown - 0.1, 0.6, 1.0, second)  # trunk
        p.ellipse(j(0.08), 0.0, j(0.92), crown, main)
    elif kind == "flower":
        p.rectangle(0.46, 0.5, 0.54, 1.0, second)  # stem
        p.ellipse(0.54, 0.68, 0.78, 0.8, second)  # leaf
        for k in range(6):  # petals
            u, v = 0.5 + 0.26 * math.cos(k * math.pi / 3), 0.32 + 0.26 * math.sin(k * math.pi / 3)
            p.ellipse(u - 0.15, v - 0.15, u + 0.15, v + 0.15, main)
        p.ellipse(0.38, 0.2, 0.62, 0.44, second)  # heart
    elif kind == "cactus":
        arm = j(0.45)
        p.ellipse(0.36, 0.0, 0.64, 0.2, main)
        p.rectangle(0.36, 0.1, 0.64, 0.85, main)  # column
        p.rectangle(0.1, arm, 0.4, arm + 0.1, main)  # arms
        p.rectangle(0.1, arm - 0.25, 0.2, arm + 0.1, main)
        p.rectangle(0.6, arm + 0.1, 0.9, arm + 0.2, main)
        p.rectangle(0.8, arm - 0.1, 0.9, arm + 0.2, main)
        p.polygon([(0.25, 0.8), (0.75, 0.8), (0.68, 1.0), (0.32, 1.0)], second)  # pot
    elif kind == "mushroom":
        p.rectangle(0.32, 0.45, 0.68, 1.0, second)  # thick stem
        p.pieslice(0.0, 0.05, 1.0, j(0.95), 180, 360, main)  # domed cap, flat underneath
        p.ellipse(0.18, 0.25, 0.34, 0.4, second)  # spots
        p.ellipse(0.55, 0.15, 0.72, 0.31, second)
    elif kind == "house":
        eave = j(0.45)
        p.rectangle(0.66, 0.08, 0.78, eave, main)  # chimney
        p.rectangle(0.15, eave, 0.85, 1.0, main)  # wall
        p.polygon([(0.02, eave + 0.03), (0.5, j(0.05)), (0.98, eave + 0.03)], second)  # roof
        p.rectangle(0.42, 0.68, 0.58, 1.0, second)  # door
        p.rectangle(0.22, eave + 0.1, 0.36, eave + 0.24, second)  # window
    elif kind == "tower":
        p.rectangle(0.3, 0.18, 0.7, 1.0, main)
        for k in range(3):  # battlements
            p.rectangle(0.3 + 0.15 * k, 0.05, 0.4 + 0.15 * k, 0.2, main)
        p.rectangle(0.46, 0.3, 0.54, 0.5, second)  # slit
        p.pieslice(0.4, 0.7, 0.6, 0.9, 180, 360, second)  # arched door
        p.rectangle(0.4, 0.8, 0.6, 1.0, second)
    elif kind == "tent":
        peak = j(0.5)
        p.polygon([(0.0, 1.0), (peak, j(0.08)), (1.0, 1.0)], main)
        p.polygon([(peak - 0.14, 1.0), (peak, 0.5), (peak + 0.14, 1.0)], second)  # door
    elif kind == "windmill":
        p.polygon([(0.38, 0.42), (0.62, 0.42), (0.72, 1.0), (0.28, 1.0)], main)  # tower
        angle = rng.uniform(0, math.pi / 2)
        for k in range(4):  # blades
            a = angle + k * math.pi / 2
            tip = (0.5 + 0.48 * math.cos(a), 0.38 + 0.36 * math.sin(a))
            side = (0.06 * math.cos(a + math.pi / 2), 0.06 * math.sin(a + math.pi / 2))
            p.polygon([(0.5, 0.38), (tip[0] + side[0], tip[1] + side[1]), tip], second)
        p.ellipse(0.45, 0.33, 0.55, 0.43, second)  # hub
    elif kind == "cup":
        p.ring(0.5, j(0.3), 0.98, 0.78, second, 0.13)  # handle
        p.rectangle(0.05, 0.15, 0.68, 1.0, main)  # body
        p.rectangle(0.05, 0.15, 0.68, 0.27, second)  # rim
    elif kind == "bottle":
        p.rectangle(0.28, 0.42, 0.72, 1.0, main)  # body
        p.ellipse(0.28, 0.3, 0.72, 0.55, main)  # shoulders
        p.rectangle(0.42, 0.1, 0.58, 0.4, main)  # neck
        p.rectangle(0.39, 0.0, 0.61, 0.12, second)  # cap
        p.rectangle(0.28, j(0.6), 0.72, 0.82, second)  # label
    elif kind == "chair":
        seat = j(0.52)
        p.rectangle(0.12, 0.0, 0.26, seat, main)  # back
        p.rectangle(0.12, seat, 0.88, seat + 0.1, main)  # seat
        p.rectangle(0.14, seat + 0.1, 0.22, 1.0, second)  # legs
        p.rectangle(0.78, seat + 0.1, 0.86, 1.0, second)
    else:  # umbrella: a scalloped canopy on a long shaft with a hook
        edge = j(0.4)
        scallops = [(u / 6, edge + (0.08 if u % 2 else 0.0)) for u in range(6, -1, -1)]
        p.polygon([(0.0, edge), (0.12, 0.12), (0.5, 0.0), (0.88, 0.12), (1.0, edge), *scallops[1:-1]], main)
        p.rectangle(0.47, edge, 0.53, 0.9, second)  # shaft
        p.ring(0.3, 0.78, 0.53, 1.0, second, 0.06)  # hook


def _place(rng: np.random.Generator, size: int, width: float, height: float, boxes: list) -> tuple[float, float]:
    """Top-left corner for a `width x height` box: the least-overlapping of 30 random candidates."""
    best, best_overlap = (0.0, 0.0), math.inf
    for _attempt in range(30):
        left, top = rng.uniform(0, size - width), rng.uniform(0, size - height)
        overlap = max(
            (
                max(0.0, min(left + width, x + w) - max(left, x)) * max(0.0, min(top + height, y + h) - max(top, y))
                for x, y, w, h in boxes
            ),
            default=0.0,
        )
        if overlap < best_overlap:
            best, best_overlap = (left, top), overlap
        if overlap == 0:
            break
    return best


# ------------------------------------------------------------------------------------------------------ captions

POSITIONS = ("on the left", "on the right")
STUFF_PHRASES = {
    "sky": ("under a blue sky", "under the sky", "against the sky"),
    "grass": ("on the grass", "on green grass"),
    "water": ("on the water", "in the water"),
    "sand": ("on the sand", "on sand"),
    "wall": ("in front of a wall", "by a brick wall"),
}
TEMPLATES = (
    "{things} {stuff}",
    "a photo of {things} {stuff}",
    "a picture of {things} {stuff}",
    "{things}",
    "there is {things} {stuff}",
)


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _thing_phrase(thing: dict, rng: np.random.Generator) -> str:
    words = []
    if rng.random() < SIZE_WORD_PROB:
        words.append(("big", "large")[rng.integers(2)] if thing["main"] else ("small", "little")[rng.integers(2)])
    if rng.random() < COLOR_WORD_PROB:
        words.append(thing["color"])
    words.append(thing["class"])
    phrase = _article(" ".join(words))
    if not thing["main"] and rng.random() < POSITION_WORD_PROB:  # the main thing is near the centre
        phrase += " " + POSITIONS[int(thing["center"] > 0.5)]
    return phrase


def _caption(things: list[dict], stuff: list[str], rng: np.random.Generator) -> str:
    """Names the main thing always, each other visible thing with probability `OTHER_THING_WORD_PROB`, and the stuff
    (the ground with `GROUND_WORD_PROB`, the sky or wall above it with `TOP_WORD_PROB`)."""
    visible = [t for t in sorted(things, key=lambda t: -t["visible"]) if t["visible"] >= MIN_VISIBLE]
    named = [t for t in visible if t["main"] or rng.random() < OTHER_THING_WORD_PROB]
    phrases = [_thing_phrase(t, rng) for t in named]
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    stuff_words = []
    ground = stuff[-1]
    if rng.random() < GROUND_WORD_PROB:
        stuff_words.append(STUFF_PHRASES[ground][rng.integers(len(STUFF_PHRASES[ground]))])
    if len(stuff) == 2 and rng.random() < TOP_WORD_PROB:
        top = stuff[0]
        stuff_words.append(STUFF_PHRASES[top][rng.integers(len(STUFF_PHRASES[top]))])
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    if not stuff_words:
        template = "{things}" if rng.random() < 0.5 else "a photo of {things}"
    elif template == "{things}":
        template = "{things} {stuff}"
    return template.format(things=listed, stuff=" ".join(stuff_words)).strip()


# ------------------------------------------------------------------------------------------------------ scenes


def draw_scene(rng: np.random.Generator, size: int = 64) -> Scene:
    """Draw one scene from `rng`: stuff, then up to three small things placed to overlap little, then the main thing
    near the centre, in front of them (it may hide parts of them)."""
    pixels, mask, stuff = _draw_stuff(rng, size)
    image, mask_image = Image.fromarray(pixels), Image.fromarray(mask)
    draw, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask_image)
    count = 1 + int(rng.choice(MAX_THINGS, p=THING_COUNT_PROBS))
    kinds = [THINGS[k] for k in rng.integers(len(THINGS), size=count)]
    names = list(PALETTE)
    boxes = []
    side = size * rng.uniform(*MAIN_SIZE)
    aspect = math.exp(rng.uniform(-ASPECT_JITTER, ASPECT_JITTER))
    width, height = min(size, side * aspect), min(size, side / aspect)
    shift = MAIN_SHIFT * size
    left = min(max((size - width) / 2 + rng.uniform(-shift, shift), 0), size - width)
    top = min(max((size - height) / 2 + rng.uniform(-shift, shift), 0), size - height)
    boxes.append((left, top, width, height))
    for _ in kinds[1:]:
        side = size * rng.uniform(*OTHER_SIZE)
        aspect = math.exp(rng.uniform(-ASPECT_JITTER, ASPECT_JITTER))
        width, height = side * aspect, side / aspect
        boxes.append((*_place(rng, size, width, height, boxes), width, height))
    things = []
    for index in [*range(1, count), 0]:  # the main thing last: in front
        kind, (left, top, width, height) = kinds[index], boxes[index]
        main, second = rng.choice(len(names), size=2, replace=False)
        paint = _Painter(draw, draw_mask, LABELS.index(kind) + 1, boxes[index], rng.random() < 0.5)
        _draw_thing(paint, kind, PALETTE[names[main]], PALETTE[names[second]], rng)
        things.append(
            {
                "class": kind,
                "color": names[main],  # the colour a caption may name
                "second_color": names[second],
                "main": index == 0,
                "center": (left + width / 2) / size,
            }
        )
    mask = np.asarray(mask_image).copy()
    counts = np.bincount(mask.ravel(), minlength=len(LABELS) + 1)
    for thing in things:
        thing["visible"] = int(counts[LABELS.index(thing["class"]) + 1])
    label = int(np.argmax(counts[1 : len(THINGS) + 1]))
    caption = _caption(things, stuff, rng)
    return Scene(image=image, mask=mask, caption=caption, label=label, things=things, stuff=stuff)


def generate(split: str, num_examples: int, seed: int = 0, image_size: int = 64):
    """Yield the scenes of a split (`train`, `validation`, `test`): example i is drawn from (seed, split, i)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split={split!r} is not one of {list(SPLIT_SEEDS)}.")
    for index in range(num_examples):
        yield draw_scene(np.random.default_rng([seed, SPLIT_SEEDS[split], index, 3]), image_size)


def as_dataset(split: str, num_examples: int, seed: int = 0, image_size: int = 64):
    """The split as an in-memory `datasets.Dataset` with columns image, mask, text, label."""
    import datasets

    scenes = list(generate(split, num_examples, seed, image_size))
    features = datasets.Features(
        image=datasets.Image(),
        mask=datasets.Image(),
        text=datasets.Value("string"),
        label=datasets.ClassLabel(names=list(THINGS)),
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
            meta = {"text": scene.caption, "label": scene.label, "label_name": THINGS[scene.label]}
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


def preview(path: str, count: int = 8, seed: int = 0, image_size: int = 64) -> None:
    """A picture of the first `count` test scenes: each image with its caption, its mask and a legend."""
    from ..tools.plotting import plot_segmentation_gallery

    scenes = list(generate("test", count, seed, image_size))
    rows = [(scene.image.resize((4 * image_size,) * 2, Image.NEAREST), scene.mask) for scene in scenes]
    plot_segmentation_gallery(rows, list(LABELS), path, ("scene", "mask"), captions=[s.caption for s in scenes])


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m silc_hf.data.scenes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", help="where the splits are written (one folder each)")
    parser.add_argument("--preview", metavar="PNG", help="draw the first test scenes, their captions and masks here")
    parser.add_argument("--format", choices=["imagefolder", "webdataset"], default="imagefolder")
    parser.add_argument("--train", type=int, default=2000, help="scenes in the train split")
    parser.add_argument("--validation", type=int, default=200, help="scenes in the validation split")
    parser.add_argument("--test", type=int, default=200, help="scenes in the test split")
    parser.add_argument("--image_size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="base seed (splits use disjoint seeds)")
    parser.add_argument(
        "--shard_size",
        type=int,
        default=1000,
        help="scenes per webdataset shard (streaming wants at least ranks x workers shards)",
    )
    args = parser.parse(argv)
    if args.preview:
        preview(args.preview, seed=args.seed, image_size=args.image_size)
        print(f"Drew test scenes to {args.preview}")
    if not args.output_dir:
        if args.preview:
            return
        parser.error("--output_dir is required (or --preview alone to draw a few scenes)")
    sizes = {"train": args.train, "validation": args.validation, "test": args.test}
    if args.shard_size < 1:
        parser.error(f"--shard_size {args.shard_size} must be at least 1")
    export(args.output_dir, sizes, args.seed, args.image_size, args.format, args.shard_size)
    print(f"Wrote {sizes} captioned scenes ({args.format}) to {args.output_dir}")


if __name__ == "__main__":
    run_script(main)
