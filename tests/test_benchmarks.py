"""The published benchmarks and protocols: every preset read from a tiny dataset written here in that dataset's real
layout (file names, folders, split files, PNG formats, id maps, ignore labels), the sliding window, the background
rules, the ImageNet preset, retrieval with a known ranking, and the command that runs them."""

import json
import types

import numpy as np
import pytest
import torch
from PIL import Image

from silc_hf import SilcImageProcessor, SilcModel, SilcProcessor
from silc_hf.zero_shot import benchmarks as bench
from silc_hf.zero_shot.benchmark_names import IMAGENET_CLASSES, IMAGENET_TEMPLATES, SCLIP_CLASS_SYNONYMS
from silc_hf.zero_shot.benchmarks import (
    BENCHMARKS,
    decide_labels,
    evaluate_benchmark,
    read_layout,
    resize_short_side,
)
from silc_hf.zero_shot.evaluation import evaluate_retrieval
from silc_hf.zero_shot.protocols import PROTOCOLS
from silc_hf.zero_shot.segmentation import sliding_window_scores, window_starts

from conftest import REPOSITORY, clip_tokenizer, load_script, tiny_silc_config

# ------------------------------------------------------------------------------------ tiny datasets, real layouts

# each image is 16 x 12 and its mask holds two label values of the dataset plus its ignore label (when it has one)
RAW = {  # benchmark -> (mask values drawn, the classes they mean, in the benchmark's class order; None = not scored)
    "voc20": ((0, 15, 255), (None, 14, None)),  # 0 background not scored, 15 person -> class 14, 255 border
    "voc21": ((0, 15, 255), (0, 15, None)),
    "pc59": ((0, 7, 59), (None, 6, 58)),  # 0 background not scored (reduce_zero_label)
    "pc60": ((0, 7, 59), (0, 7, 59)),
    "ade150": ((0, 1, 150), (None, 0, 149)),  # 0 "other" not scored
    "cityscapes": ((0, 18, 255), (0, 18, None)),  # train ids; 255 not scored
    "cocostuff": ((0, 170, 255), (0, 170, None)),
    "coco_object": ((0, 80, 255), (0, 80, None)),
}


def _mask(values, seed):
    rng = np.random.default_rng(seed)
    return rng.choice(np.array(values, dtype=np.uint8), size=(12, 16))


def _image(seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8))


def _palette_png(mask: np.ndarray, path):
    image = Image.fromarray(mask, mode="P")  # VOC's annotations are palette PNGs: the indices are the labels
    image.putpalette([value for index in range(256) for value in (index, 255 - index, (7 * index) % 256)])
    image.save(path)


def write_layout(root, name, count=2):
    """`count` images of benchmark `name` in its original layout under `root`; returns the masks written."""
    values, _ = RAW[name]
    masks = [_mask(values, seed) for seed in range(count)]
    if name in ("voc20", "voc21", "pc59", "pc60"):
        year, masks_dir, split_dir = (
            ("VOC2012", "SegmentationClass", "Segmentation")
            if name.startswith("voc")
            else ("VOC2010", "SegmentationClassContext", "SegmentationContext")
        )
        base = root / "VOCdevkit" / year
        for folder in ("JPEGImages", masks_dir, f"ImageSets/{split_dir}"):
            (base / folder).mkdir(parents=True, exist_ok=True)
        ids = [f"2008_00{index:04d}" for index in range(count)]
        (base / f"ImageSets/{split_dir}/val.txt").write_text("\n".join(ids) + "\n")
        for index, mask in zip(ids, masks):
            _image(hash(index) % 1000).save(base / "JPEGImages" / f"{index}.jpg")
            if name.startswith("voc"):
                _palette_png(mask, base / masks_dir / f"{index}.png")
            else:
                Image.fromarray(mask, mode="L").save(base / masks_dir / f"{index}.png")
    elif name == "ade150":
        base = root / "ADEChallengeData2016"
        (base / "images/validation").mkdir(parents=True)
        (base / "annotations/validation").mkdir(parents=True)
        for index, mask in enumerate(masks):
            _image(index).save(base / f"images/validation/ADE_val_{index + 1:08d}.jpg")
            Image.fromarray(mask, mode="L").save(base / f"annotations/validation/ADE_val_{index + 1:08d}.png")
    elif name == "cityscapes":
        base = root / "cityscapes"
        for index, mask in enumerate(masks):
            city = ("frankfurt", "lindau")[index % 2]
            (base / "leftImg8bit/val" / city).mkdir(parents=True, exist_ok=True)
            (base / "gtFine/val" / city).mkdir(parents=True, exist_ok=True)
            stem = f"{city}_000000_{index:06d}"
            _image(index).save(base / "leftImg8bit/val" / city / f"{stem}_leftImg8bit.png")
            Image.fromarray(mask, mode="L").save(base / "gtFine/val" / city / f"{stem}_gtFine_labelTrainIds.png")
            Image.fromarray(mask + 1, mode="L").save(base / "gtFine/val" / city / f"{stem}_gtFine_labelIds.png")
    else:
        base = root / "coco_stuff164k"
        (base / "images/val2017").mkdir(parents=True, exist_ok=True)
        (base / "annotations/val2017").mkdir(parents=True, exist_ok=True)
        suffix = "_labelTrainIds.png" if name == "cocostuff" else "_instanceTrainIds.png"
        for index, mask in enumerate(masks):
            stem = f"{139 + index:012d}"
            _image(index).save(base / f"images/val2017/{stem}.jpg")
            Image.fromarray(mask, mode="L").save(base / f"annotations/val2017/{stem}{suffix}")
    return masks


@pytest.mark.parametrize("name", sorted(RAW))
def test_each_segmentation_preset_reads_its_layout_and_scores_with_its_id_map(name, tmp_path, monkeypatch):
    """Read from the real layout, every scored pixel predicted as its class gives mIoU 1 whatever is predicted on
    the pixels the benchmark does not score; one scored pixel predicted wrong lowers it."""
    masks = write_layout(tmp_path, name)
    preset = BENCHMARKS[name]
    dataset = read_layout(preset, str(tmp_path / preset.directory))
    assert len(dataset) == 2 and set(dataset.column_names) == {"image", "mask"}
    values, classes = RAW[name]
    lookup = dict(zip(values, classes))
    expected = [np.vectorize(lambda v: -1 if lookup[v] is None else lookup[v])(mask) for mask in masks]
    for example, mask in zip(dataset, masks):
        assert np.array_equal(np.asarray(example["mask"]), mask)  # palette indices / grey levels, as written

    def stub_labels(truths, wrong_pixel=False):
        calls = iter(truths)

        def labels(model, processor, image, *args, **kwargs):
            truth = torch.from_numpy(next(calls))
            label = torch.where(truth < 0, torch.tensor(len(preset.class_names) - 1), truth)  # unscored: anything
            if wrong_pixel:
                scored = (truth >= 0).nonzero()[0]
                label[scored[0], scored[1]] = (label[scored[0], scored[1]] + 1) % len(preset.class_names)
            return label

        return labels

    model = types.SimpleNamespace(config=types.SimpleNamespace(zero_shot_templates=None))
    monkeypatch.setattr(bench, "encode_class_names", lambda *args: torch.zeros(1, 1))
    monkeypatch.setattr(bench, "protocol_segmentation", stub_labels(expected))
    processor = types.SimpleNamespace(tokenizer=None)
    metrics = bench.evaluate_segmentation_benchmark(model, processor, dataset, name, "default")
    assert metrics["mIoU"] == 1.0 and metrics["pixel_accuracy"] == 1.0
    present = {c for c in classes if c is not None}
    assert {k for k, v in metrics["per_class_IoU"].items() if v is not None} == {preset.class_names[c] for c in present}
    monkeypatch.setattr(bench, "protocol_segmentation", stub_labels(expected, wrong_pixel=True))
    assert bench.evaluate_segmentation_benchmark(model, processor, dataset, name, "default")["mIoU"] < 1.0


def test_the_class_lists_have_their_published_sizes_and_each_protocol_its_names():
    classes = {name: BENCHMARKS[name].class_names for name in RAW}
    assert {name: len(names) for name, names in classes.items()} == {
        "voc20": 20, "voc21": 21, "pc59": 59, "pc60": 60, "ade150": 150, "cityscapes": 19, "cocostuff": 171,
        "coco_object": 81,
    }  # fmt: skip
    for name in ("voc21", "pc60", "coco_object"):
        assert classes[name][0] == "background" and BENCHMARKS[name].background
    assert classes["voc21"][1:] == classes["voc20"] and classes["pc60"][1:] == classes["pc59"]
    assert (
        classes["voc20"][14] == "person" and classes["ade150"][-1] == "flag" and classes["cityscapes"][-1] == "bicycle"
    )
    # SCLIP prompts its own names, background by 26 stuff words; TCL mmseg's, background never
    sclip, tcl = PROTOCOLS["sclip"], PROTOCOLS["tcl"]
    assert [len(q) for q in SCLIP_CLASS_SYNONYMS["voc21"][:2]] == [26, 1]
    names, owners = bench._queries(BENCHMARKS["voc21"], sclip)
    assert len(names) == sum(map(len, SCLIP_CLASS_SYNONYMS["voc21"])) and owners[:26] == [0] * 26
    assert sorted(set(owners)) == list(range(21)) and owners == sorted(owners)
    names, owners = bench._queries(BENCHMARKS["voc21"], tcl)
    assert names == list(classes["voc20"]) and owners == list(range(1, 21))


def test_the_imagenet_preset_has_1000_names_and_80_templates(tmp_path):
    assert len(IMAGENET_CLASSES) == 1000 and len(set(IMAGENET_CLASSES)) > 990
    assert len(IMAGENET_TEMPLATES) == 80 and all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    assert IMAGENET_CLASSES[0] == "tench" and IMAGENET_CLASSES[-1] == "toilet paper"
    val = tmp_path / "imagenet" / "val"
    wnids = [f"n{index:08d}" for index in range(1000)]
    for wnid in wnids:
        (val / wnid).mkdir(parents=True)
    _image(0).save(val / wnids[3] / "ILSVRC2012_val_00000001.JPEG")
    _image(1).save(val / wnids[999] / "ILSVRC2012_val_00000002.JPEG")
    dataset = read_layout("imagenet1k", str(tmp_path / "imagenet"))
    assert dataset["label"] == [3, 999]  # sorted WordNet ids = class order
    (val / wnids[0]).rmdir()
    with pytest.raises(ValueError, match="has 999 class folders; ImageNet-1k's validation split needs 1000"):
        read_layout("imagenet1k", str(tmp_path / "imagenet"))


# ------------------------------------------------------------------------------------------------ sliding window


def test_a_window_the_size_of_the_image_is_one_forward_pass():
    calls = []

    def scores(crop):
        calls.append(crop.shape)
        return crop.mean(dim=1, keepdim=True)[..., ::4, ::4]  # a coarse map, as patch scores are

    pixels = torch.randn(1, 3, 24, 32)
    window = sliding_window_scores(scores, pixels, window=32, stride=16)
    assert calls == [(1, 3, 24, 32)]
    one = torch.nn.functional.interpolate(scores(pixels), size=(24, 32), mode="bilinear", align_corners=False)[0]
    assert torch.equal(window, one)


def test_a_window_covering_the_image_is_the_models_forward_on_the_whole_image():
    torch.manual_seed(0)
    model = SilcModel(tiny_silc_config()).eval()  # 32 px input, 8 px patches
    text = torch.nn.functional.normalize(torch.randn(3, 32), dim=-1)
    pixels = torch.randn(1, 3, 48, 40)

    def scores(crop):
        return bench.cosine_scores(model, crop, text, "value")

    whole = torch.nn.functional.interpolate(scores(pixels), size=(48, 40), mode="bilinear", align_corners=False)[0]
    assert torch.equal(sliding_window_scores(scores, pixels, window=48, stride=24), whole)
    assert not torch.allclose(sliding_window_scores(scores, pixels, window=32, stride=16), whole)  # 6 windows


def test_overlapping_windows_average_their_scores_at_full_resolution():
    """Width 6, window 4, stride 2: windows at 0 and 2; each window scores a constant (its left edge + 1), so
    columns 0-1 get 1, columns 2-3 the mean of 1 and 3, columns 4-5 get 3."""
    pixels = torch.arange(6.0).expand(1, 3, 4, 6).clone()
    window = sliding_window_scores(lambda crop: crop[:, :1, :1, :1] + 1, pixels, window=4, stride=2)
    assert torch.equal(window[0], torch.tensor([1.0, 1.0, 2.0, 2.0, 3.0, 3.0]).expand(4, 6))
    starts = [window_starts(10, 4, 3), window_starts(3, 4, 2)]
    assert starts == [[0, 3, 6], [0]]  # the last flush with the end; one window when the image is smaller


def test_short_side_resize_follows_mmseg_keep_ratio():
    assert resize_short_side(Image.new("RGB", (500, 375)), 448).size == (597, 448)
    assert resize_short_side(Image.new("RGB", (3000, 100)), 448).size == (2048, 68)  # the long side caps it
    assert resize_short_side(Image.new("RGB", (200, 100)), None).size == (200, 100)


# ------------------------------------------------------------------------------------------------ background rule


def test_background_is_every_pixel_whose_best_probability_is_below_the_threshold():
    probs = torch.tensor(
        [
            [[0.0, 0.0], [0.0, 0.0]],  # background, not prompted (TCL)
            [[0.9, 0.3], [0.2, 0.1]],
            [[0.1, 0.35], [0.8, 0.05]],
        ]
    )
    assert decide_labels(probs, background=True, threshold=0.4).tolist() == [[1, 0], [2, 0]]
    assert decide_labels(probs, background=False, threshold=0.4).tolist() == [[1, 2], [2, 1]]
    assert decide_labels(probs, background=True, threshold=None).tolist() == [[1, 2], [2, 1]]


def test_sclip_area_rule_drops_classes_predicted_on_too_few_pixels():
    probs = torch.zeros(3, 1, 10)
    probs[1, 0, :9] = 0.9  # class 1 wins 9 pixels
    probs[2, 0, 9] = 0.9  # class 2 wins 1 pixel: 10 % of the non-background predictions
    probs[0] = 0.05
    assert decide_labels(probs, True, 0.1, area_threshold=0.1)[0].tolist() == [1] * 9 + [0]
    assert decide_labels(probs, True, 0.1, area_threshold=0.05)[0].tolist() == [1] * 9 + [2]


def test_protocol_presets_carry_their_published_settings():
    tcl, sclip = PROTOCOLS["tcl"], PROTOCOLS["sclip"]
    assert (tcl.short_side, tcl.window, tcl.stride) == (448, 448, 224)
    assert (sclip.short_side, sclip.window, sclip.stride) == (336, 224, 112)
    assert sclip.templates == tuple(IMAGENET_TEMPLATES) and sclip.background_query
    voc21 = sclip.for_benchmark("voc21")
    assert (voc21.logit_scale, voc21.background_threshold, voc21.area_threshold) == (65, 0.1, 0.1)
    assert sclip.for_benchmark("cityscapes").short_side == 560


# ----------------------------------------------------------------------------------------------------- retrieval

COLOURS = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230), "navy": (20, 20, 200)}


class _ColourModel:
    """Image embedding = mean colour; text embedding = the colour its first word names: a known ranking."""

    device = torch.device("cpu")
    config = types.SimpleNamespace(text_config=types.SimpleNamespace(max_position_embeddings=16))

    def get_image_features(self, pixel_values):
        return types.SimpleNamespace(image_embeds=pixel_values.mean(dim=(2, 3)))

    def get_text_features(self, input_ids, **kwargs):
        return types.SimpleNamespace(image_embeds=None, text_embeds=input_ids.float())


class _ColourProcessor:
    def __init__(self):
        self.image_processor = self

    def __call__(self, images=None, text=None, return_tensors=None, **kwargs):
        if images is not None:
            arrays = [np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255 for image in images]
            return {"pixel_values": torch.tensor(np.stack(arrays))}
        return {"input_ids": torch.tensor([COLOURS[t.split()[0]] for t in text], dtype=torch.float32) / 255}


@pytest.mark.parametrize("name", ["flickr30k_1k", "coco_5k"])
def test_retrieval_presets_read_the_karpathy_test_split_and_rank_as_constructed(name, tmp_path):
    root = tmp_path / BENCHMARKS[name].directory
    folder = "val2014" if name == "coco_5k" else ""  # COCO's entries name their folder ("filepath"), Flickr's do not
    (root / "images" / folder).mkdir(parents=True)
    images = []
    for index, colour in enumerate(["red", "green", "blue", "red"]):
        Image.new("RGB", (8, 8), COLOURS[colour]).save(root / "images" / folder / f"{index}.jpg")
        split = "test" if index < 3 else "train"  # the train image must not be read
        sentences = [{"raw": f"{colour} picture"}, {"raw": "navy sky" if colour == "red" else f"{colour} thing"}]
        sentences += [{"raw": f"{colour} {n}"} for n in range(3)] + [{"raw": "red sixth caption"}]  # 6: 5 are kept
        entry = {"filename": f"{index}.jpg", "split": split, "sentences": sentences}
        images.append({**entry, "filepath": folder} if folder else entry)
    split_file = "dataset_coco.json" if name == "coco_5k" else "dataset_flickr30k.json"
    (root / split_file).write_text(json.dumps({"images": images}))
    dataset = read_layout(name, str(root))
    assert len(dataset) == 3 and dataset["text"][0] == ["red picture", "navy sky", "red 0", "red 1", "red 2"]
    metrics = evaluate_retrieval(_ColourModel(), _ColourProcessor(), dataset)
    # every image finds one of its captions first; of the 15 texts, "navy sky" (the red image's) finds the blue image
    assert metrics["image_to_text_R@1"] == 1.0
    assert metrics["text_to_image_R@1"] == pytest.approx(14 / 15)


# ---------------------------------------------------------------------------------------------------- the command


def test_the_benchmark_command_writes_json_markdown_and_a_model_card(tmp_path):
    tokenizer = clip_tokenizer()
    config = tiny_silc_config(
        text_config=dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    )
    torch.manual_seed(0)
    SilcModel(config).save_pretrained(tmp_path / "model")
    SilcProcessor(SilcImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(tmp_path / "model")
    write_layout(tmp_path / "data", "voc21")
    script = load_script(str(REPOSITORY / "training/evaluate_silc.py"))
    results = script.main(
        [
            "--model", str(tmp_path / "model"), "--benchmark", "voc21", "--data_root", str(tmp_path / "data"),
            "--protocol", "tcl", "--results", str(tmp_path / "results.json"), "--markdown", str(tmp_path / "table.md"),
            "--model_card", str(tmp_path / "card"),
        ]
    )  # fmt: skip
    entry = results["results"][0]
    assert (entry["dataset"], entry["protocol"], entry["num_images"]) == ("voc21", "tcl", 2)
    assert 0 <= entry["metrics"]["mIoU"] <= 1
    assert json.loads((tmp_path / "results.json").read_text())["results"][0]["metrics"] == entry["metrics"]
    assert (
        f"| {BENCHMARKS['voc21'].title} | tcl | 2 | mIoU | {100 * entry['metrics']['mIoU']:.1f} |"
        in (tmp_path / "table.md").read_text()
    )
    card = (tmp_path / "card" / "README.md").read_text()
    assert "model-index" in card and f"value: {entry['metrics']['mIoU']}" in card
    with pytest.raises(ValueError, match="--benchmark needs --data_root"):
        script.main(["--model", str(tmp_path / "model"), "--benchmark", "voc21"])
    with pytest.raises(ValueError, match="voc20: .* is not a directory; see docs/evaluation.md"):
        evaluate_benchmark(None, None, "voc20", str(tmp_path / "nowhere"))
