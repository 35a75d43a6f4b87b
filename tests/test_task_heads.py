"""SILC inside transformers' task heads: SilcForImageClassification (AutoModelForImageClassification) and
SilcBackbone (AutoBackbone, UperNet)."""

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoBackbone,
    AutoModelForImageClassification,
    UperNetConfig,
    UperNetForSemanticSegmentation,
    pipeline,
)

from silc_hf import SilcBackbone, SilcForImageClassification, SilcImageProcessor, SilcModel, SilcVisionConfig

from conftest import load_script, random_image, run_in_fresh_python, tiny_silc_config

LABELS = {0: "tree", 1: "house", 2: "car"}


@pytest.fixture
def silc_folder(tmp_path):
    torch.manual_seed(0)
    model = SilcModel(tiny_silc_config(vision_config={"num_hidden_layers": 3})).eval()
    model.save_pretrained(tmp_path / "silc")
    SilcImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "silc")
    return tmp_path / "silc", model


def test_a_silc_folder_loads_into_the_classifier_with_the_image_tower_bit_identical(silc_folder):
    folder, silc = silc_folder
    classifier, info = AutoModelForImageClassification.from_pretrained(
        folder, id2label=LABELS, output_loading_info=True
    )
    # the load report names the new classifier only: the dropped text tower is not listed key by key
    assert info["missing_keys"] == {"classifier.weight", "classifier.bias"} and not info["unexpected_keys"]
    assert isinstance(classifier, SilcForImageClassification) and classifier.config.num_labels == 3
    expected = silc.vision_model.state_dict()
    actual = classifier.vision_model.state_dict()
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[key], expected[key]) for key in expected)


@pytest.mark.parametrize(
    "problem_type, labels, reference",
    [
        ("single_label_classification", torch.tensor([2, 0]), lambda logits, y: F.cross_entropy(logits, y)),
        ("multi_label_classification", torch.tensor([[1.0, 0, 1], [0, 1, 0]]), F.binary_cross_entropy_with_logits),
        ("regression", torch.tensor([[0.5, -1, 2], [1, 1, 0]]), F.mse_loss),
    ],
)
def test_logits_and_the_loss_of_each_problem_type(problem_type, labels, reference):
    torch.manual_seed(0)
    config = tiny_silc_config(id2label=LABELS, problem_type=problem_type)
    model = SilcForImageClassification(config).eval()
    output = model(pixel_values=torch.randn(2, 3, 32, 32), labels=labels)
    assert output.logits.shape == (2, 3)
    torch.testing.assert_close(output.loss, reference(output.logits, labels))


def test_the_stock_pipeline_returns_the_label_names_and_the_folder_loads_as_remote_code(silc_folder, tmp_path):
    folder, _ = silc_folder
    classifier = AutoModelForImageClassification.from_pretrained(folder, id2label=LABELS).eval()
    classifier.save_pretrained(tmp_path / "classifier")
    SilcImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "classifier")
    image = random_image(3)
    results = pipeline("image-classification", model=str(tmp_path / "classifier"))(image)
    assert {r["label"] for r in results} == set(LABELS.values())
    assert sum(r["score"] for r in results) == pytest.approx(1.0)

    image.save(tmp_path / "image.png")
    child = r"""
import json, sys
sys.modules["silc_hf"] = None
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
image_processor = AutoImageProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
inputs = image_processor(Image.open(sys.argv[2]), return_tensors="pt")
with torch.no_grad():
    print(json.dumps({"class": type(model).__name__, "logits": model(**inputs).logits.tolist()}))
"""
    loaded = run_in_fresh_python(child, str(tmp_path / "classifier"), str(tmp_path / "image.png"), workdir=tmp_path)
    inputs = SilcImageProcessor(size={"height": 32, "width": 32})(image, return_tensors="pt")
    with torch.no_grad():
        expected = classifier(**inputs).logits
    assert loaded["class"] == "SilcForImageClassification"
    torch.testing.assert_close(torch.tensor(loaded["logits"]), expected, rtol=0, atol=1e-6)


def test_backbone_feature_maps_are_the_towers_hidden_states_normed_and_reshaped(silc_folder):
    folder, silc = silc_folder
    backbone = SilcBackbone.from_pretrained(folder, out_features=["stem", "stage2", "stage3"]).eval()
    assert backbone.stage_names == ["stem", "stage1", "stage2", "stage3"] and backbone.channels == [32, 32, 32]
    assert type(AutoBackbone.from_config(silc.config.vision_config)) is SilcBackbone
    pixels = torch.randn(2, 3, 32, 48)  # not the trained size: position embeddings are interpolated
    with torch.no_grad():
        maps = backbone(pixel_values=pixels).feature_maps
        hidden = silc.vision_model(pixels, interpolate_pos_encoding=True, output_hidden_states=True).hidden_states
    for feature_map, index in zip(maps, (0, 2, 3)):
        tokens = silc.vision_model.post_layernorm(hidden[index])  # (2, 4 * 6, 32): no prefix token with MAP
        by_hand = tokens.reshape(2, 4, 6, 32).permute(0, 3, 1, 2)
        torch.testing.assert_close(feature_map, by_hand, rtol=0, atol=1e-6)


def test_upernet_with_a_silc_backbone_trains_and_round_trips(tmp_path):
    torch.manual_seed(0)
    backbone_config = SilcVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        out_indices=[1, 2, 3, 4],
    )
    config = UperNetConfig(
        backbone_config=backbone_config, hidden_size=16, auxiliary_in_channels=32, num_labels=3, pool_scales=[1, 2]
    )
    model = UperNetForSemanticSegmentation(config)
    assert isinstance(model.backbone, SilcBackbone)
    pixels, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    output = model(pixel_values=pixels, labels=labels)
    assert output.logits.shape == (2, 3, 32, 32)
    output.loss.backward()
    assert model.backbone.embeddings.patch_embedding.weight.grad.abs().sum() > 0
    model.save_pretrained(tmp_path / "upernet")
    reloaded = UperNetForSemanticSegmentation.from_pretrained(tmp_path / "upernet").eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(pixel_values=pixels).logits, model(pixel_values=pixels).logits, rtol=0, atol=0
        )


def test_the_fine_tuning_script_beats_the_zero_shot_baseline_of_the_same_model(tmp_path):
    """A SILC folder fine-tuned on an imagefolder of red and blue shapes (label = colour): the script prints the
    model's zero-shot top-1 first, then the fine-tuned accuracy, which is higher."""
    from silc_hf import SilcProcessor

    from conftest import clip_tokenizer, shape_image

    torch.manual_seed(0)
    tokenizer = clip_tokenizer()
    config = tiny_silc_config(
        text_config=dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    )
    SilcModel(config).save_pretrained(tmp_path / "silc")
    SilcProcessor(SilcImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(tmp_path / "silc")
    for split, count in (("train", 48), ("test", 24)):
        folder = tmp_path / split
        folder.mkdir()
        rows = []
        for i in range(count):
            colour = ("red", "blue")[i % 2]
            shape_image(colour, ("circle", "square")[(i // 2) % 2], seed=i + 100 * count).save(folder / f"{i}.png")
            rows.append({"file_name": f"{i}.png", "label": i % 2})
        (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    script = load_script("training/finetune_classification.py")
    common = [
        "--model",
        str(tmp_path / "silc"),
        "--train_data",
        str(tmp_path / "train"),
        "--eval_data",
        str(tmp_path / "test"),
        "--class_names",
        "red",
        "blue",
        "--max_steps",
        "30",
        "--per_device_train_batch_size",
        "16",
        "--report_to",
        "none",
        "--remove_unused_columns",
        "false",
        "--use_cpu",
        "true",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "true",
    ]
    probe = script.main(
        [*common, "--output_dir", str(tmp_path / "probe"), "--linear_probe", "true", "--learning_rate", "1e-2"]
    )
    frozen = SilcForImageClassification.from_pretrained(tmp_path / "probe").vision_model.state_dict()
    original = SilcModel.from_pretrained(tmp_path / "silc").vision_model.state_dict()
    assert all(torch.equal(frozen[key], original[key]) for key in original)  # the probe leaves the tower as it was
    results = script.main([*common, "--output_dir", str(tmp_path / "out"), "--learning_rate", "1e-3"])
    print(probe, results)
    assert results["accuracy"] > results["zero_shot_top1"]
    assert results["accuracy"] >= 0.9
    labels = {
        r["label"]
        for r in pipeline("image-classification", model=str(tmp_path / "out"))(shape_image("red", "circle", 1))
    }
    assert labels == {"red", "blue"}


def test_the_fine_tuning_config_may_name_the_model_and_data(tmp_path):
    script = load_script("training/finetune_classification.py")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": "m", "train_data": "d", "output_dir": str(tmp_path), "max_steps": 3}))
    args, training_args = script.parse_args(["--config", str(config), "--max_steps", "5"])
    assert (args.model, args.train_data, training_args.max_steps) == ("m", "d", 5)
    with pytest.raises(ValueError, match="--model is required"):
        script.parse_args(["--train_data", "d", "--output_dir", str(tmp_path)])


def test_a_saved_backbone_loads_as_remote_code_through_auto_backbone(silc_folder, tmp_path):
    """transformers 5.24's `AutoBackbone.from_pretrained` asks the Hub whether the name exists even for a local
    folder (for every model type); the child answers that check locally and is otherwise the Hub path."""
    folder, _ = silc_folder
    backbone = SilcBackbone.from_pretrained(folder, out_indices=[1, 3]).eval()
    backbone.save_pretrained(tmp_path / "backbone")
    pixels = torch.randn(1, 3, 32, 32)
    torch.save(pixels, tmp_path / "pixels.pt")
    child = r"""
import json, sys, types
sys.modules["silc_hf"] = None
import torch
import transformers.models.auto.auto_factory as auto_factory
auto_factory.hf_api = lambda: types.SimpleNamespace(repo_exists=lambda *args, **kwargs: True)
from transformers import AutoBackbone
model = AutoBackbone.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
with torch.no_grad():
    maps = model(pixel_values=torch.load(sys.argv[2])).feature_maps
maps = [m.tolist() for m in maps]
print(json.dumps({"class": type(model).__name__, "out_features": model.out_features, "maps": maps}))
"""
    loaded = run_in_fresh_python(child, str(tmp_path / "backbone"), str(tmp_path / "pixels.pt"), workdir=tmp_path)
    assert loaded["class"] == "SilcBackbone" and loaded["out_features"] == ["stage1", "stage3"]
    with torch.no_grad():
        expected = backbone(pixel_values=pixels).feature_maps
    for got, want in zip(loaded["maps"], expected):
        torch.testing.assert_close(torch.tensor(got), want, rtol=0, atol=1e-6)
