"""The embedded captioned-scenes dataset: deterministic, masks match the drawn objects, captions name them."""

import numpy as np
import pytest

from silc_hf.data import load_image_text_dataset
from silc_hf.data.scenes import CLASS_COLORS, CLASSES, PALETTE, WINDOW, export, generate


def test_generation_is_deterministic_for_a_seed_and_splits_differ():
    first, again = list(generate("train", 5, seed=3)), list(generate("train", 5, seed=3))
    for a, b in zip(first, again):
        assert a.caption == b.caption and np.array_equal(a.mask, b.mask)
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    other_seed, test_split = list(generate("train", 5, seed=4)), list(generate("test", 5, seed=3))
    assert [s.caption for s in other_seed] != [s.caption for s in first]
    assert [s.caption for s in test_split] != [s.caption for s in first]
    with pytest.raises(ValueError, match="split='dev' is not one of"):
        next(generate("dev", 1))


PART_COLORS = {  # colours an object's parts may have besides its main colour
    "tree": {"brown"},
    "house": {"red", "brown"},
    "car": {"black"},
    "flower": {"green", "yellow", "orange"},
    "fish": {"black"},
}


def test_masks_match_the_drawn_objects_and_label_the_dominant_one():
    for scene in generate("validation", 40, seed=0, image_size=64):
        pixels = np.asarray(scene.image)
        for class_id in np.unique(scene.mask)[1:]:
            kind = CLASSES[class_id - 1]
            names = {o["color"] for o in scene.objects if o["class"] == kind} | PART_COLORS[kind]
            colours = {PALETTE[name] for name in names} | ({WINDOW} if kind == "car" else set())
            region = pixels[scene.mask == class_id]
            assert len(region) and all(tuple(p) in colours for p in region[:: max(1, len(region) // 50)]), kind
        drawn = {CLASSES.index(o["class"]) + 1 for o in scene.objects}
        assert set(np.unique(scene.mask)[1:]) <= drawn
        visible = np.bincount(scene.mask.ravel(), minlength=len(CLASSES) + 1)[1:]
        assert scene.label == int(np.argmax(visible))


def test_captions_mention_every_drawn_object_and_the_background():
    named_colours = 0
    for scene in generate("train", 40, seed=1):
        for o in scene.objects:
            with_colour = f"{o['size']} {o['color']} {o['class']}" in scene.caption
            assert with_colour or f"{o['size']} {o['class']}" in scene.caption
            assert o["color"] in CLASS_COLORS[o["class"]]
            named_colours += with_colour
        assert 1 <= len(scene.objects) <= 3
        assert [o["size"] for o in scene.objects] == ["large"] + ["small"] * (len(scene.objects) - 1)
        assert any(kind in scene.caption for kind in ("plain", "noisy", "striped", "checkered", "gradient"))
    total = sum(len(scene.objects) for scene in generate("train", 40, seed=1))
    assert 0.3 < named_colours / total < 0.7  # colours are named about half of the time


@pytest.mark.parametrize("fmt", ["imagefolder", "webdataset"])
def test_exports_load_with_datasets(tmp_path, fmt):
    export(str(tmp_path), {"train": 6, "test": 3}, seed=0, image_size=32, fmt=fmt, shard_size=4)
    train = load_image_text_dataset(str(tmp_path / "train"))
    assert len(train) == 6
    scenes = list(generate("train", 6, seed=0, image_size=32))
    if fmt == "imagefolder":
        assert sorted(train["text"]) == sorted(s.caption for s in scenes)
        row = train[0]
        assert row["image"].size == (32, 32) and np.asarray(row["mask"]).max() <= len(CLASSES)
        assert set(train.column_names) >= {"image", "mask", "text", "label"}
    else:
        assert sorted(train["txt"]) == sorted(s.caption for s in scenes)
        assert len(list((tmp_path / "train").glob("*.tar"))) == 2
        assert {"png", "mask.png", "txt", "json"} <= set(train.column_names)
    assert len(load_image_text_dataset("synthetic:test:7")) == 7
