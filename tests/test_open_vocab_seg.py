"""SilcForOpenVocabularySegmentation: class-order equivariance, save/load and remote code, which weights train,
the collator and metrics on hand-made masks, the pipeline, and a tiny end-to-end training run."""

import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel, pipeline

from silc_hf import (
    SilcForOpenVocabularySegmentation,
    SilcImageProcessor,
    SilcModel,
    SilcOpenVocabularySegmentationConfig,
    SilcProcessor,
)
from silc_hf.data.scenes import LABELS, OPEN_VOCABULARY_SPLITS, generate, open_vocabulary_split
from silc_hf.training.arguments import OpenVocabSegArguments
from silc_hf.training.open_vocab import SegmentationMetrics, SilcSegmentationCollator, segmentation_collators
from silc_hf.zero_shot.prompts import tokenize_class_prompts

from conftest import clip_tokenizer, load_script, run_in_fresh_python, tiny_silc_config

TEMPLATES = ["a {}", "a photo of a {}"]
CLASSES = ["cat", "dog", "red bird", "blue circle", "square"]
DECODER = dict(decoder_hidden_size=16, guidance_size=8, num_attention_heads=4, upsampling_sizes=[8, 8])
# One tokenizer for the module: two in-memory BPE trainings may break ties between merges differently.
TOKENIZER = clip_tokenizer()


def tiny_segmenter(seed: int = 0, pooling: str = "map", **overrides) -> SilcForOpenVocabularySegmentation:
    torch.manual_seed(seed)
    config = SilcOpenVocabularySegmentationConfig(
        silc_config=tiny_silc_config(loss_type="softmax", vision_config={"pooling_type": pooling}).to_dict(),
        prompt_templates=TEMPLATES,
        **{**DECODER, **overrides},
    )
    return SilcForOpenVocabularySegmentation(config).eval()


def prompts(model, names):
    return tokenize_class_prompts(TOKENIZER, model.config.silc_config.text_config, names, TEMPLATES)


def test_permuting_the_classes_permutes_the_logits():
    model = tiny_segmenter()
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(pixel_values, **prompts(model, CLASSES)).logits
        order = [3, 0, 4, 2, 1]
        permuted = model(pixel_values, **prompts(model, [CLASSES[i] for i in order])).logits
        fewer = model(pixel_values, **prompts(model, CLASSES[:2])).logits
    assert logits.shape == (2, 5, 32, 32) and fewer.shape == (2, 2, 32, 32)
    torch.testing.assert_close(permuted, logits[:, order], atol=1e-5, rtol=1e-5)
    # the classes interact (class aggregation): two classes alone score differently than among five
    assert not torch.allclose(fewer, logits[:, :2], atol=1e-3)


def test_input_ids_must_cover_every_template():
    model = tiny_segmenter()
    tokens = prompts(model, CLASSES)
    with pytest.raises(ValueError, match=r"input_ids has shape \(9, \d+\); pass \(num_classes \* 2, seq\)"):
        model(torch.randn(1, 3, 32, 32), input_ids=tokens["input_ids"][:9])


def test_class_embeddings_are_cached_only_while_they_cannot_change():
    model = tiny_segmenter()
    tokens = prompts(model, CLASSES)
    model.set_trainable_backbone("attention")  # the text tower's attention trains
    with torch.no_grad():
        first = model.get_class_embeddings(**tokens)
        assert model.get_class_embeddings(**tokens) is first  # same class set, no gradient: cached
    with torch.no_grad():
        model.silc.text_model.encoder.layers[0].self_attn.v_proj.weight.add_(0.5)  # a training step
    model.train()  # what the Trainer calls before training steps: clears the cache
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model.get_class_embeddings(**tokens), first)
    assert model.get_class_embeddings(**tokens).requires_grad  # with gradient: computed, never cached


def test_save_and_load_are_bit_exact(tmp_path):
    model = tiny_segmenter()
    with torch.no_grad():  # make every weight non-default, so that a skipped weight would show
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is SilcForOpenVocabularySegmentation
    reference, restored = model.state_dict(), loaded.state_dict()
    assert reference.keys() == restored.keys()
    for key in reference:
        assert torch.equal(reference[key], restored[key]), key
    pixel_values = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(
            model(pixel_values, **prompts(model, CLASSES)).logits,
            loaded(pixel_values, **prompts(model, CLASSES)).logits,
        )


CHILD = r"""
import json, sys
sys.modules["silc_hf"] = None  # `import silc_hf` now raises ImportError
import torch
from transformers import AutoModel
folder = sys.argv[1]
inputs = torch.load(sys.argv[2])
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    logits = model(**inputs).logits
print(json.dumps({"class": type(model).__module__ + "." + type(model).__name__, "logits": logits.flatten().tolist()}))
"""


def test_folder_loads_as_remote_code_without_the_package(tmp_path):
    model = tiny_segmenter(seed=1)
    folder = tmp_path / "segmenter"
    model.save_pretrained(folder)
    inputs = {"pixel_values": torch.randn(1, 3, 32, 32), **prompts(model, CLASSES[:3])}
    torch.save(inputs, tmp_path / "inputs.pt")
    child = run_in_fresh_python(CHILD, str(folder), str(tmp_path / "inputs.pt"), workdir=tmp_path)
    assert child["class"].startswith("transformers_modules.")
    assert child["class"].endswith("SilcForOpenVocabularySegmentation")
    with torch.no_grad():
        expected = model(**inputs).logits.flatten()
    torch.testing.assert_close(torch.tensor(child["logits"]), expected, atol=1e-6, rtol=1e-6)


# The tower weights each setting trains, written independently of the code: CAT-Seg fine-tunes the attention's
# query and value projections of every block of both towers.
ATTENTION = re.compile(r"^silc\.(text|vision)_model\.encoder\.layers\.\d+\.self_attn\.(q|v)_proj\.")


@pytest.mark.parametrize("parts", ["none", "attention", "all"])
@pytest.mark.parametrize("pooling", ["map", "cls"])
def test_gradient_reaches_exactly_the_parts_said_to_train(parts, pooling):
    model = tiny_segmenter(pooling=pooling)
    model.set_trainable_backbone(parts)
    model.train()
    labels = torch.randint(0, 3, (2, 32, 32))
    model(torch.randn(2, 3, 32, 32), **prompts(model, CLASSES[:3]), labels=labels).loss.backward()
    reached = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert reached == trainable  # nothing trainable is left without gradient (DDP needs this), nothing frozen moves
    tower = {name for name in reached if name.startswith("silc.")}
    decoder = {name for name, _ in model.named_parameters() if not name.startswith("silc.")}
    assert decoder <= reached
    if parts == "none":
        assert tower == set()
    elif parts == "attention":
        expected = {name for name, _ in model.named_parameters() if ATTENTION.match(name)}
        if pooling == "cls":  # the value path replaces the last image block's attention: its query is unused
            expected -= {n for n in expected if n.startswith("silc.vision_model.encoder.layers.1.self_attn.q_proj")}
        assert tower == expected
    else:  # every block's norms and MLPs and the text embeddings train; the unused logit scale and bias do not
        blocks = re.compile(r"^silc\.(text|vision)_model\.(encoder\.layers\.\d+\.(mlp|layer_norm)|embeddings)")
        assert {n for n, _ in model.named_parameters() if blocks.match(n)} <= tower
        assert not any("logit_" in n for n in tower)


def test_unknown_trainable_parts_are_refused():
    with pytest.raises(
        ValueError, match=r"trainable_backbone='heads' is not supported; use one of \['none', 'attention', 'all'\]"
    ):
        tiny_segmenter().set_trainable_backbone("heads")


def tiny_processor():
    return SilcProcessor(SilcImageProcessor(size={"height": 32, "width": 32}), TOKENIZER)


def test_collator_maps_mask_ids_to_the_class_set_and_ignores_the_rest():
    model = tiny_segmenter()
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[:, 8:16], mask[:, 16:24], mask[:, 24:] = 3, 5, 200  # left 8 columns keep id 0
    example = {"image": Image.new("RGB", (32, 32), (200, 10, 10)), "mask": Image.fromarray(mask)}
    # classes "dog" (mask id 3) and "cat" (id 0) are trained; id 5 is a hidden class, 200 is "other"
    collator = SilcSegmentationCollator(tiny_processor(), model.config, ["dog", "cat"], mask_ids=[3, 0])
    batch = collator([example, example])
    labels = batch["labels"]
    assert labels.shape == (2, 32, 32) and batch["pixel_values"].shape == (2, 3, 32, 32)
    assert (labels[:, :, :8] == 1).all() and (labels[:, :, 8:16] == 0).all()
    assert (labels[:, :, 16:] == 255).all()
    assert batch["input_ids"].shape[0] == 2 * len(TEMPLATES)
    with pytest.raises(ValueError, match=r"has a mask of size \(16, 16\)"):
        collator([{"image": Image.new("RGB", (32, 32)), "mask": Image.new("L", (16, 16))}])


@pytest.mark.parametrize("split", sorted(OPEN_VOCABULARY_SPLITS))
def test_unseen_scene_classes_are_never_training_candidates(split):
    seen, unseen = open_vocabulary_split(split)
    args = OpenVocabSegArguments(
        model="towers", train_data="scenes", class_names=list(LABELS), mask_offset=1, unseen_classes=unseen
    )
    model = tiny_segmenter()
    train, evaluation = segmentation_collators(args, tiny_processor(), model.config)
    assert train.class_names == seen and not set(unseen) & set(train.class_names)
    assert evaluation.class_names == list(LABELS)
    blank = {"image": Image.new("RGB", (32, 32)), "mask": Image.new("L", (32, 32), 1)}
    assert train([blank])["input_ids"].shape[0] == len(seen) * len(model.config.prompt_templates)
    # a scene's pixels of unseen classes are ignored in training, and every other pixel names a seen class
    train.train = False  # the whole image, so that pixels can be compared with the scene's mask
    for scene in generate("train", 20, image_size=32):
        example = {"image": scene.image, "mask": Image.fromarray(scene.mask)}
        labels = train([example])["labels"][0]
        names = np.asarray(LABELS)[scene.mask - 1]
        hidden = torch.from_numpy(np.isin(names, unseen))
        assert (labels[hidden] == model.config.ignore_index).all()
        assert [seen[k] for k in labels[~hidden].tolist()] == names[~hidden.numpy()].tolist()


def test_training_views_crop_image_and_mask_together():
    model = tiny_segmenter()
    # mask id = column index // 4: a crop or flip that moved the image without the mask would break this
    columns = np.repeat(np.arange(32)[None] // 4, 32, axis=0).astype(np.uint8)
    image = np.stack([columns * 30, columns * 30, columns * 30], axis=-1).astype(np.uint8)
    example = {"image": Image.fromarray(image), "mask": Image.fromarray(columns)}
    collator = SilcSegmentationCollator(
        tiny_processor(), model.config, [str(i) for i in range(8)], train=True, min_scale=0.5, seed=3
    )
    processor = tiny_processor().image_processor
    for _ in range(5):
        batch = collator([example])
        pixels = batch["pixel_values"][0, 0] * processor.image_std[0] + processor.image_mean[0]  # back to [0, 1]
        labels = batch["labels"][0].float()
        inside = (labels[:, 1:] == labels[:, :-1]) & (labels[:, 2:].shape[1] > 0)  # away from label borders
        brightness = pixels[:, 1:][inside] * 255 / 30
        assert torch.allclose(brightness, labels[:, 1:][inside], atol=0.6)


def test_metrics_on_hand_made_predictions():
    names = ["background", "cat", "dog"]
    labels = np.array([[[0, 0, 1, 1], [2, 2, 255, 1]]])  # one image, 2x4 pixels, one ignored
    predicted = np.array([[[0, 1, 1, 1], [2, 0, 2, 2]]])
    metrics = SegmentationMetrics(names, unseen=["dog"])

    class Prediction:
        predictions, label_ids = predicted, labels

    result = metrics(Prediction())
    # by hand: background TP 1, FP 1 (pred 0 at a dog pixel), FN 1 -> 1/3; cat TP 2, FP 1, FN 1 -> 2/4;
    # dog TP 1, FP 1 (the last pixel, labelled cat), FN 1 -> 1/3; the ignored pixel counts nowhere
    assert result["IoU_background"] == pytest.approx(1 / 3) and result["IoU_cat"] == pytest.approx(0.5)
    assert result["IoU_dog"] == pytest.approx(1 / 3)
    assert result["mIoU_seen"] == pytest.approx((1 / 3 + 0.5) / 2) and result["mIoU_unseen"] == pytest.approx(1 / 3)
    assert result["pixel_accuracy"] == pytest.approx(4 / 7)
    # batch by batch (batch_eval_metrics): the same numbers
    half_a, half_b = Prediction(), Prediction()
    half_a.predictions, half_a.label_ids = predicted[:, :1], labels[:, :1]
    half_b.predictions, half_b.label_ids = predicted[:, 1:], labels[:, 1:]
    assert metrics(half_a, compute_result=False) == {}
    assert metrics(half_b, compute_result=True) == result
    with pytest.raises(ValueError, match=r"unseen classes \['cow'\] are not among the class names"):
        SegmentationMetrics(names, unseen=["cow"])


def test_pipeline_reads_the_segmenter(tmp_path):
    model = tiny_segmenter(seed=2)
    model.save_pretrained(tmp_path)
    tiny_processor().save_pretrained(tmp_path)
    segmenter = pipeline("zero-shot-image-segmentation", model=str(tmp_path))
    assert type(segmenter.model) is SilcForOpenVocabularySegmentation
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    output = segmenter(image, candidate_labels=CLASSES[:3], return_label_map=True)
    # the reference: the model on the processor's 32 px image, logits upsampled to the image, argmax
    pixel_values = tiny_processor().image_processor(
        images=image.resize((32, 32), Image.Resampling.BICUBIC), return_tensors="pt", do_resize=False
    )["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values, **prompts(model, CLASSES[:3])).logits
    expected = torch.nn.functional.interpolate(logits, size=(40, 48), mode="bilinear").argmax(dim=1)[0]
    assert torch.equal(output["label_map"], expected)
    assert {s["label"] for s in output["segments"]} == {CLASSES[i] for i in expected.unique().tolist()}
    with pytest.raises(ValueError, match="trained with the prompts in its config.prompt_templates"):
        segmenter(image, candidate_labels=CLASSES[:3], hypothesis_template="a photo of {}")


def test_from_silc_pretrained_keeps_the_towers(tmp_path):
    torch.manual_seed(0)
    silc = SilcModel(tiny_silc_config(loss_type="softmax"))
    silc.config.zero_shot_templates = TEMPLATES
    silc.save_pretrained(tmp_path)
    model = SilcForOpenVocabularySegmentation.from_silc_pretrained(tmp_path, "none", **DECODER)
    assert model.config.prompt_templates == TEMPLATES
    for key, value in silc.state_dict().items():
        assert torch.equal(model.silc.state_dict()[key], value), key
    assert not any(p.requires_grad for p in model.silc.parameters())


COLOURS = {1: (220, 30, 30), 2: (30, 200, 30), 3: (30, 30, 220), 4: (230, 220, 30)}


def write_colour_rectangles(folder, count: int, seed: int) -> None:
    """An imagefolder with masks: two rectangles of the classes 1-4 (each its own colour) on a noisy grey
    background (0); learnable in a few dozen steps even by randomly initialised towers."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder)
    rows = []
    for index in range(count):
        image = np.full((32, 32, 3), 128, np.uint8) + rng.integers(0, 20, (32, 32, 3), dtype=np.uint8)
        mask = np.zeros((32, 32), np.uint8)
        for class_id in rng.choice([1, 2, 3, 4], size=2, replace=False):
            (left, top), (width, height) = rng.integers(0, 20, 2), rng.integers(8, 16, 2)
            image[top : top + height, left : left + width] = COLOURS[int(class_id)]
            mask[top : top + height, left : left + width] = class_id
        Image.fromarray(image).save(os.path.join(folder, f"{index:04d}.png"))
        Image.fromarray(mask).save(os.path.join(folder, f"{index:04d}_mask.png"))
        rows.append({"file_name": f"{index:04d}.png", "mask_file_name": f"{index:04d}_mask.png"})
    with open(os.path.join(folder, "metadata.jsonl"), "w") as file:
        file.write("\n".join(json.dumps(row) for row in rows) + "\n")


def test_tiny_training_lowers_the_loss_and_improves_seen_miou(tmp_path):
    """training/train_open_vocab_seg.py end to end: a tiny SILC folder, coloured rectangles with "yellow" hidden
    from training; evaluation before the first step and at the end."""
    train_open_vocab_seg = load_script("training/train_open_vocab_seg.py")
    torch.manual_seed(0)
    silc = SilcModel(tiny_silc_config(loss_type="softmax"))
    silc.save_pretrained(tmp_path / "silc")
    tiny_processor().save_pretrained(tmp_path / "silc")
    write_colour_rectangles(tmp_path / "train", 96, seed=0)
    write_colour_rectangles(tmp_path / "test", 24, seed=1)
    results = train_open_vocab_seg.main(
        [
            "--model",
            str(tmp_path / "silc"),
            "--train_data",
            str(tmp_path / "train"),
            "--eval_data",
            str(tmp_path / "test"),
            "--class_names",
            "background",
            "red",
            "green",
            "blue",
            "yellow",
            "--unseen_classes",
            "yellow",
            "--prompt_templates",
            *TEMPLATES,
            "--decoder_hidden_size",
            "16",
            "--guidance_size",
            "8",
            "--upsampling_sizes",
            "8",
            "8",
            "--output_dir",
            str(tmp_path / "out"),
            "--max_steps",
            "40",
            "--per_device_train_batch_size",
            "16",
            "--learning_rate",
            "3e-3",
            "--logging_steps",
            "10",
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "40",
            "--eval_on_start",
            "true",
            "--report_to",
            "none",
            "--save_strategy",
            "no",
            "--use_cpu",
            "true",
            "--seed",
            "0",
        ]
    )
    history = results["log_history"]
    losses = [e["loss"] for e in history if "loss" in e]
    evaluations = [e for e in history if "eval_mIoU_seen" in e]
    assert losses[-1] < 0.5 * losses[0]  # measured: 1.31 -> 0.43
    assert evaluations[0]["step"] == 0 and evaluations[-1]["step"] == 40
    assert evaluations[-1]["eval_mIoU_seen"] > evaluations[0]["eval_mIoU_seen"] + 0.08  # measured: 0.07 -> 0.21
    assert results["trained"]["mIoU_unseen"] == evaluations[-1]["eval_mIoU_unseen"]
    assert "mIoU_unseen" in results["zero_shot"]
    # the folder is a segmenter the pipeline reads
    segmenter = pipeline("zero-shot-image-segmentation", model=str(tmp_path / "out"))
    assert type(segmenter.model) is SilcForOpenVocabularySegmentation
    assert (tmp_path / "out" / "training_curve.png").exists()


def test_tower_weights_get_the_scaled_learning_rate(tmp_path):
    from transformers import TrainingArguments

    from silc_hf.training.open_vocab import SilcSegmentationTrainer

    model = tiny_segmenter()
    model.set_trainable_backbone("attention")
    args = TrainingArguments(
        output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.1, report_to="none", use_cpu=True
    )
    trainer = SilcSegmentationTrainer(model=model, args=args, backbone_learning_rate_scale=0.01)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    tower = {id(p) for p in model.silc.parameters()}
    rates = {}
    for group in trainer.optimizer.param_groups:
        for p in group["params"]:
            rates[id(p)] = (group["lr"], group["weight_decay"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert set(rates) == {id(p) for p in trainable}  # every trainable weight is in exactly one group
    assert all(rates[id(p)][0] == pytest.approx(1e-5) for p in trainable if id(p) in tower)
    assert all(rates[id(p)][0] == pytest.approx(1e-3) for p in trainable if id(p) not in tower)
    assert any(id(p) in tower for p in trainable)
    assert rates[id(model.silc.vision_model.encoder.layers[0].self_attn.q_proj.weight)][1] == 0.1  # decay kept


def test_scene_parse_150_layout_from_local_parquet(tmp_path):
    """The column layout of ADE20K on the Hub (`scene_parse_150`: image, annotation with 0 = "other" and 1..150,
    scene_category), written as parquet as the Hub serves it: loads, collates and evaluates offline."""
    import datasets

    from silc_hf.data import load_image_text_dataset
    from silc_hf.zero_shot.evaluation import evaluate_segmentation

    rng = np.random.default_rng(0)
    annotations = [rng.integers(0, 4, (32, 32), dtype=np.uint8) for _ in range(3)]
    features = datasets.Features(
        image=datasets.Image(), annotation=datasets.Image(), scene_category=datasets.Value("int64")
    )
    table = datasets.Dataset.from_dict(
        {
            "image": [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in annotations],
            "annotation": [Image.fromarray(a) for a in annotations],
            "scene_category": [0, 1, 2],
        },
        features=features,
    )
    (tmp_path / "ade").mkdir()
    table.to_parquet(str(tmp_path / "ade" / "validation-00000-of-00001.parquet"))
    dataset = load_image_text_dataset(str(tmp_path / "ade"))
    assert set(dataset.column_names) == {"image", "annotation", "scene_category"}

    model = tiny_segmenter()
    names = ["wall", "floor", "sky"]
    collator = SilcSegmentationCollator(
        tiny_processor(), model.config, names, mask_ids=[1, 2, 3], mask_column="annotation"
    )
    labels = collator([dataset[0], dataset[1]])["labels"]
    expected = torch.from_numpy(np.stack(annotations[:2]).astype(np.int64)) - 1
    assert torch.equal(labels, torch.where(expected < 0, 255, expected))
    # zero-shot evaluation with explicit mask ids = with an offset and "other" ignored
    common = dict(templates=TEMPLATES, mask_column="annotation")
    silc = model.silc
    by_ids = evaluate_segmentation(silc, tiny_processor(), dataset, names, mask_ids=[1, 2, 3], **common)
    by_offset = evaluate_segmentation(silc, tiny_processor(), dataset, names, mask_offset=1, ignore_index=0, **common)
    assert by_ids == by_offset
