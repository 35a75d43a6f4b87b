"""The package's boundaries: the root holds exactly the model files a saved folder ships, inference imports no
training code, and what the flat layout saved or named still loads."""

import ast
import json
import pickle
import sys
import warnings
from pathlib import Path

import pytest
import torch

import silc_hf
from silc_hf import SilcForOpenVocabularySegmentation, SilcModel

from conftest import random_image, run_in_fresh_python

PACKAGE = Path(silc_hf.__file__).parent
FIXTURES = Path(__file__).parent / "fixtures" / "old_layout"
MODEL_SET = {
    "configuration_silc",
    "image_processing_silc",
    "modeling_silc",
    "modeling_silc_open_vocab_seg",
    "processing_silc",
}


def test_the_package_root_holds_exactly_the_model_set_and_it_imports_only_itself():
    assert {p.stem for p in PACKAGE.glob("*.py")} == MODEL_SET | {"__init__"}
    for name in MODEL_SET:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        relative = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level}
        assert relative <= MODEL_SET, (name, relative - MODEL_SET)
        assert all(node.level <= 1 for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)), name
        absolute = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        absolute |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
        assert not {m for m in absolute if m.split(".")[0] in ("silc_hf", "datasets", "accelerate")}, name


def test_a_saved_segmenter_ships_exactly_the_model_set(tmp_path):
    config = silc_hf.SilcOpenVocabularySegmentationConfig(
        silc_config=silc_hf.SilcConfig(
            vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2),
            text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                             vocab_size=64, projection_dim=16),
        ).to_dict(),
        decoder_hidden_size=8, guidance_size=4, num_attention_heads=2, upsampling_sizes=[4, 4],
    )  # fmt: skip
    SilcForOpenVocabularySegmentation(config).save_pretrained(tmp_path)
    assert {p.stem for p in tmp_path.glob("*.py")} == MODEL_SET - {"image_processing_silc", "processing_silc"}


# A fresh interpreter: what transformers' model and pipeline code import by themselves, then what silc_hf adds.
IMPORTS = r"""
import json, sys
import transformers.modeling_utils, transformers.pipelines, transformers.processing_utils
before = set(sys.modules)
import silc_hf, silc_hf.zero_shot
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_inference_imports_no_training_code(tmp_path):
    added = run_in_fresh_python(IMPORTS, workdir=tmp_path)
    assert "silc_hf.zero_shot.pipelines" in added  # the check sees what silc_hf imports
    forbidden = [m for m in added if m.split(".")[0] in ("datasets", "accelerate") or m.startswith("silc_hf.training")]
    forbidden += [m for m in added if m == "transformers.trainer"]
    assert not forbidden


@pytest.mark.parametrize("auto_class", ["AutoModel", "AutoModelForZeroShotImageClassification"])
def test_a_folder_saved_by_the_flat_layout_loads_and_gives_its_outputs(auto_class):
    import transformers

    folder = FIXTURES / "silc_model"
    assert json.loads((folder / "config.json").read_text())["auto_map"]["AutoModel"] == "modeling_silc.SilcModel"
    expected = json.loads((folder / "expected_outputs.json").read_text())
    model = getattr(transformers, auto_class).from_pretrained(folder).eval()
    processor = transformers.AutoProcessor.from_pretrained(folder)
    assert type(model) is SilcModel and type(processor) is silc_hf.SilcProcessor
    inputs = processor(images=[random_image(0), random_image(1)], text=expected["texts"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits_per_image
        dense = model.get_dense_image_features(inputs["pixel_values"]).sum(dim=(1, 2))
    torch.testing.assert_close(logits, torch.tensor(expected["logits_per_image"]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dense, torch.tensor(expected["dense_value"]), rtol=1e-5, atol=1e-4)


def test_a_segmenter_saved_by_the_flat_layout_loads_and_gives_its_outputs():
    from transformers import AutoModel, AutoProcessor

    from silc_hf.zero_shot.prompts import tokenize_class_prompts

    folder = FIXTURES / "open_vocab_segmenter"
    expected = json.loads((folder / "expected_outputs.json").read_text())
    model, processor = AutoModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    assert type(model) is SilcForOpenVocabularySegmentation
    pixels = processor(images=random_image(0), return_tensors="pt")["pixel_values"]
    config = model.config
    tokens = tokenize_class_prompts(
        processor.tokenizer, config.silc_config.text_config, expected["class_names"], config.prompt_templates
    )
    with torch.no_grad():
        logits = model(pixel_values=pixels, **tokens).logits
    assert list(logits.shape) == expected["logits_shape"]
    torch.testing.assert_close(
        logits.sum(dim=(0, 2, 3)), torch.tensor(expected["logits_sum_per_class"]), rtol=1e-4, atol=1e-3
    )


def test_a_training_args_file_pickled_by_the_flat_layout_loads():
    from silc_hf.training import SilcTrainingArguments

    with pytest.warns(FutureWarning, match="silc_hf.trainer moved to silc_hf.training.trainer"):
        args = torch.load(FIXTURES / "training_args.bin", weights_only=False)
    assert type(args) is SilcTrainingArguments
    assert (args.max_steps, args.num_local_crops, args.head_num_prototypes) == (10, 2, 64)
    assert b"silc_hf.training.arguments" in pickle.dumps(args)  # saved anew, it names the new module


@pytest.mark.parametrize(
    "old, names",
    [
        ("silc_hf.segmentation", ["zero_shot_segmentation", "tokenize_class_prompts", "segment_pixels"]),
        ("silc_hf.evaluation", ["evaluate", "evaluate_segmentation", "ZeroShotEvaluator", "confusion_matrix"]),
        ("silc_hf.losses", ["teacher_diagnostics", "DistillationLoss", "distributed_contrastive_loss"]),
        ("silc_hf.augmentation", ["MultiCropTransform", "MultiCropArguments", "apply_photometric"]),
        ("silc_hf.trainer", ["SilcTrainer", "SilcTrainingArguments"]),
        ("silc_hf.distillation", ["SilcPretrainingModel", "DINOHead"]),
        ("silc_hf.factory", ["SilcModelArguments", "build_trainer", "run_training"]),
        ("silc_hf.synthetic", ["CLASSES", "generate", "export", "as_dataset"]),
        ("silc_hf.segmentation_training", ["SilcSegmentationCollator", "SegmentationMetrics", "summarize_iou"]),
        ("silc_hf.pipelines", ["SilcZeroShotImageClassificationPipeline"]),
        ("silc_hf.model_card", ["render_model_card", "write_model_card"]),
        ("silc_hf.plotting", ["plot_training"]),
        ("silc_hf.cli", ["ArgumentParser", "run_script", "set_cpu_threads"]),
        ("silc_hf.checkpoints", ["latest_complete_checkpoint"]),
        ("silc_hf.tokenization", ["train_clip_tokenizer"]),
    ],
)
def test_old_module_paths_import_with_a_future_warning(old, names):
    import importlib

    for module in [m for m in sys.modules if m == old]:
        del sys.modules[module]
    with pytest.warns(FutureWarning, match=f"{old} moved to silc_hf."):
        module = importlib.import_module(old)
    assert module.__name__ == f"silc_hf.{silc_hf.OLD_MODULES[old.split('.')[1]]}"
    for name in names:
        assert hasattr(module, name), name


def test_names_that_silc_hf_data_no_longer_holds_are_forwarded_with_a_future_warning():
    import silc_hf.data
    from silc_hf.training.data import MultiCropDataset

    with pytest.warns(FutureWarning, match="silc_hf.data.MultiCropDataset moved to silc_hf.training.data"):
        assert silc_hf.data.MultiCropDataset is MultiCropDataset
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the names that stayed do not warn
        from silc_hf.data import load_image_text_dataset, to_rgb  # noqa: F401
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        silc_hf.data.nothing  # noqa: B018


def test_training_classes_are_reachable_from_the_root_on_first_use():
    from silc_hf.training import SilcTrainer, SilcTrainingArguments

    assert silc_hf.SilcTrainer is SilcTrainer and silc_hf.SilcTrainingArguments is SilcTrainingArguments
    with pytest.raises(AttributeError, match="has no attribute 'SilcNothing'"):
        silc_hf.SilcNothing  # noqa: B018
