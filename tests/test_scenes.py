"""The embedded captioned scenes (v3): deterministic, masks exactly where things and stuff are drawn, captions in
the class names' words, colour independent of class, and open-vocabulary splits that do not leak."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from silc_hf.data import load_image_text_dataset
from silc_hf.data.scenes import (
    LABELS,
    OPEN_VOCABULARY_SPLITS,
    OUTLINE,
    PALETTE,
    STUFF,
    STUFF_PHRASES,
    SUPER_CATEGORIES,
    TEMPLATES,
    THINGS,
    export,
    generate,
    open_vocabulary_split,
)
from silc_hf.zero_shot.metrics import linear_probe_accuracy


def test_generation_is_deterministic_for_a_seed_and_the_splits_are_disjoint():
    first, again = list(generate("train", 5, seed=3)), list(generate("train", 5, seed=3))
    for a, b in zip(first, again):
        assert a.caption == b.caption and np.array_equal(a.mask, b.mask)
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    other_seed = list(generate("train", 5, seed=4))
    assert [s.caption for s in other_seed] != [s.caption for s in first]
    images = {split: {np.asarray(s.image).tobytes() for s in generate(split, 200)} for split in ("train", "test")}
    assert not images["train"] & images["test"]
    with pytest.raises(ValueError, match="split='dev' is not one of"):
        next(generate("dev", 1))


def test_the_world_has_enough_things_stuff_and_super_categories():
    assert len(THINGS) >= 16 and len(STUFF) >= 4 and len(SUPER_CATEGORIES) >= 4
    assert len(set(LABELS)) == len(LABELS) == len(THINGS) + len(STUFF)


def test_masks_cover_exactly_the_drawn_pixels_of_each_class():
    counts = np.zeros(len(LABELS) + 1, dtype=int)
    for scene in generate("validation", 60, image_size=64):
        pixels = np.asarray(scene.image)
        counts += np.bincount(scene.mask.ravel(), minlength=len(LABELS) + 1)
        assert scene.mask.min() >= 1  # every pixel is a thing or stuff
        outline = np.all(pixels == OUTLINE, axis=-1)
        in_things = scene.mask <= len(THINGS)
        assert not (outline & ~in_things).any()  # no thing's pixel outside the things' masks
        for value in np.unique(scene.mask):
            name = LABELS[value - 1]
            region = pixels[scene.mask == value]
            if name in STUFF:
                assert name in scene.stuff
                continue
            drawn = [t for t in scene.things if t["class"] == name]
            colours = {OUTLINE} | {PALETTE[t["color"]] for t in drawn} | {PALETTE[t["second_color"]] for t in drawn}
            assert drawn and {tuple(p) for p in region} <= colours, name
        thing_pixels = np.bincount(scene.mask.ravel(), minlength=len(LABELS) + 1)[1 : len(THINGS) + 1]
        assert scene.label == int(np.argmax(thing_pixels))  # the thing with the most visible pixels
        assert 1 <= len(scene.things) <= 4
    assert (counts[1:] > 0).all()  # every thing and stuff class appears


CAPTION_WORDS = (
    {word for template in TEMPLATES for word in re.findall(r"[a-z]+", template)}
    | {word for phrases in STUFF_PHRASES.values() for phrase in phrases for word in phrase.split()}
    | set(PALETTE)
    | {"a", "an", "and", "big", "large", "small", "little", "on", "the", "left", "right", "of"}
)


def test_captions_name_things_and_stuff_in_the_class_names_words():
    named_colours = mentions = 0
    for scene in generate("train", 200):
        words = re.findall(r"[a-z]+", scene.caption)
        assert set(words) <= CAPTION_WORDS | set(LABELS), set(words) - CAPTION_WORDS - set(LABELS)
        named = {word for word in words if word in THINGS}
        drawn = {t["class"] for t in scene.things}
        assert named <= drawn and THINGS[scene.label] in named  # only drawn things, the main one always
        assert {word for word in words if word in STUFF} <= set(scene.stuff)
        for thing in scene.things:
            if thing["class"] in named:
                mentions += 1
                named_colours += f"{thing['color']} {thing['class']}" in scene.caption
    assert 0.35 < named_colours / mentions < 0.65  # colours are named about half of the time


def test_a_colour_only_classifier_is_near_chance():
    """Logistic regression on the main thing's mean colour: the things' colours are drawn whatever their class."""

    def features(split, count):
        colours, labels = [], []
        for scene in generate(split, count):
            pixels = np.asarray(scene.image, dtype=np.float64)
            colours.append(pixels[scene.mask == scene.label + 1].mean(axis=0))
            labels.append(scene.label)
        return torch.tensor(np.stack(colours)), torch.tensor(labels)

    accuracy = linear_probe_accuracy(*features("train", 600), *features("test", 400), normalize="standardize")
    assert accuracy < 2.5 / len(THINGS)  # chance is 5 %; on 20000 scenes it measures 7.6 %


def test_open_vocabulary_splits_hold_out_a_quarter_of_the_things_across_super_categories_and_one_stuff():
    for name, held_out in OPEN_VOCABULARY_SPLITS.items():
        seen, unseen = open_vocabulary_split(name)
        assert unseen == list(held_out) and not set(seen) & set(unseen) and set(seen) | set(unseen) == set(LABELS)
        things = [label for label in unseen if label in THINGS]
        assert len(things) >= len(THINGS) / 4 and sum(label in STUFF for label in unseen) == 1
        assert all(any(thing in names for thing in things) for names in SUPER_CATEGORIES.values())
    with pytest.raises(ValueError, match="open-vocabulary split 'C' is not one of"):
        open_vocabulary_split("C")


@pytest.mark.parametrize("fmt", ["imagefolder", "webdataset"])
def test_exports_load_with_datasets(tmp_path, fmt):
    export(str(tmp_path), {"train": 6, "test": 3}, seed=0, image_size=32, fmt=fmt, shard_size=4)
    train = load_image_text_dataset(str(tmp_path / "train"))
    assert len(train) == 6
    scenes = list(generate("train", 6, seed=0, image_size=32))
    if fmt == "imagefolder":
        assert sorted(train["text"]) == sorted(s.caption for s in scenes)
        row = train[0]
        assert row["image"].size == (32, 32) and np.asarray(row["mask"]).max() <= len(LABELS)
        assert set(train.column_names) >= {"image", "mask", "text", "label"}
    else:
        assert sorted(train["txt"]) == sorted(s.caption for s in scenes)
        assert len(list((tmp_path / "train").glob("*.tar"))) == 2
        assert {"png", "mask.png", "txt", "json"} <= set(train.column_names)
    assert len(load_image_text_dataset("synthetic:test:7")) == 7


def test_the_generator_writes_shards_of_the_given_size(tmp_path):
    from silc_hf.data.scenes import main

    main(["--output_dir", str(tmp_path), "--format", "webdataset", "--train", "5", "--shard_size", "2", "--test", "1"])
    shards = sorted((tmp_path / "train").glob("*.tar"))
    assert [shard.name for shard in shards] == ["00000.tar", "00001.tar", "00002.tar"]  # 2 + 2 + 1 scenes
    assert len(load_image_text_dataset(str(tmp_path / "train"))) == 5


def test_shipped_scene_configs_name_the_scenes_classes():
    configs = Path(__file__).parent.parent / "training" / "configs"
    finetune = json.loads((configs / "finetune_scenes.json").read_text())
    open_vocab = json.loads((configs / "open_vocab_seg_scenes.json").read_text())
    assert finetune["class_names"] == list(THINGS)
    assert open_vocab["class_names"] == list(LABELS) and open_vocab["mask_offset"] == 1
    assert open_vocab["unseen_classes"] == open_vocabulary_split("A")[1]  # the default split
