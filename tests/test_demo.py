"""The demo end to end (a few steps on a small generated set): every output exists and loads."""

import json
from pathlib import Path

from PIL import Image
from transformers import AutoModel, AutoProcessor, pipeline

from silc_hf.data.scenes import LABELS, THINGS
from silc_hf.demo import main as demo_main

from conftest import load_script


def test_demo_writes_loadable_outputs(tmp_path):
    results = demo_main(
        [
            "--output-dir",
            str(tmp_path),
            "--max-steps",
            "4",
            "--eval-steps",
            "2",
            "--train-examples",
            "64",
            "--validation-examples",
            "8",
            "--test-examples",
            "8",
        ]
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["task"] for r in metrics["results"]] == [
        "zero-shot-image-classification",
        "image-text-retrieval",
        "zero-shot-image-segmentation",
        "few-shot-linear-probe",
    ]
    assert metrics["results"] == results["results"]
    assert [entry["step"] for entry in metrics["evaluation_during_training"]] == [2, 4, 4]  # every 2 steps + final
    assert set(metrics["final_diagnostics"]) >= {"teacher_entropy_fraction", "teacher_batch_entropy_fraction"}
    assert sorted(r["label"] for r in metrics["quick_start"]) == sorted(THINGS)
    for name in ("training_curve.png", "segmentation.png"):
        with Image.open(tmp_path / name) as image:
            assert image.width > 100 and image.height > 100
    model_dir = tmp_path / "model"
    model, processor = AutoModel.from_pretrained(model_dir), AutoProcessor.from_pretrained(model_dir)
    assert model.config.vision_config.image_size == 64 and processor.tokenizer.model_max_length >= 32
    image = Image.open(tmp_path / "data" / "test" / "000000.png")
    classified = pipeline("zero-shot-image-classification", model=str(model_dir))(
        image, candidate_labels=["car", "fish"], hypothesis_template="a {}"
    )
    assert len(classified) == 2
    segments = pipeline("zero-shot-image-segmentation", model=str(model_dir))(image, candidate_labels=["car", "fish"])
    assert {s["label"] for s in segments} <= {"car", "fish"}
    card = (model_dir / "README.md").read_text()
    assert "model-index" in card and f"{metrics['results'][0]['metrics']['top1_accuracy']}" in card

    # the README's evaluation command, as written (no --templates: the model recorded the demo's), gives the
    # demo's numbers
    evaluate_silc = load_script("training/evaluate_silc.py")
    data = tmp_path / "data"
    cli = evaluate_silc.main(
        [
            "--model",
            str(model_dir),
            "--data",
            str(data / "test"),
            "--tasks",
            "classification",
            "retrieval",
            "segmentation",
            "linear_probe",
            "--probe_data",
            str(data / "train"),
            "--class_names",
            ",".join(THINGS),
            "--segmentation_class_names",
            ",".join(LABELS),
            "--mask_offset",
            "1",
        ]
    )
    assert [r["metrics"] for r in cli["results"]] == [r["metrics"] for r in metrics["results"]]


def test_the_bundled_example_is_the_scene_the_demo_checks():
    import numpy as np

    from silc_hf.demo.main import example_scene

    bundled = Image.open(Path(__file__).parents[1] / "examples" / "red_car_on_grass.png")
    scene = example_scene()
    assert np.array_equal(np.asarray(bundled.convert("RGB")), np.asarray(scene.image))
    assert [(t["class"], t["color"], t["main"]) for t in scene.things] == [
        ("cup", "white", False),
        ("car", "red", True),
    ]
    assert scene.caption == "there is a red car and a small cup on the grass against the sky"
