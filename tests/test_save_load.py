"""save_pretrained -> from_pretrained round trips, through the Auto classes."""

import torch
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
    AutoTokenizer,
)

from silc_hf import SilcImageProcessor, SilcModel, SilcProcessor

from conftest import clip_tokenizer, random_image, tiny_silc_config


def _saved_model_and_processor(folder):
    torch.manual_seed(0)
    model = SilcModel(tiny_silc_config()).eval()
    processor = SilcProcessor(
        SilcImageProcessor(size={"height": 32, "width": 32}), clip_tokenizer(), fixed_text_length=16
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


def _architecture(config) -> dict:
    """The config as a dict without load-time bookkeeping (source path, dtype, library version)."""

    def strip(d: dict) -> dict:
        skip = {"_name_or_path", "dtype", "transformers_version"}
        return {k: strip(v) if isinstance(v, dict) else v for k, v in d.items() if k not in skip}

    return strip(config.to_dict())


def test_model_round_trip_is_bit_exact_through_every_auto_class(tmp_path):
    model, _ = _saved_model_and_processor(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["model.safetensors"]
    assert not list(tmp_path.glob("*.bin"))
    reference = model.state_dict()
    for auto_class in (AutoModel, AutoModelForZeroShotImageClassification, SilcModel):
        loaded = auto_class.from_pretrained(tmp_path)
        assert type(loaded) is SilcModel
        state = loaded.state_dict()
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[key], reference[key]) for key in reference)
        assert _architecture(loaded.config) == _architecture(model.config)


def test_processor_round_trip_gives_identical_outputs(tmp_path):
    _, processor = _saved_model_and_processor(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is SilcProcessor and loaded.fixed_text_length == 16
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is SilcImageProcessor
    assert AutoTokenizer.from_pretrained(tmp_path).get_vocab() == processor.tokenizer.get_vocab()
    inputs = dict(images=[random_image(0), random_image(1)], text=["a photo of a cat", "a dog"], return_tensors="pt")
    expected, actual = processor(**inputs), loaded(**inputs)
    assert expected.keys() == actual.keys() == {"pixel_values", "input_ids", "attention_mask"}
    for key in expected:
        assert torch.equal(expected[key], actual[key])
    assert actual["input_ids"].shape == (2, 16)  # fixed-length padding from the saved processor


def test_processor_pads_dynamically_without_fixed_length():
    processor = SilcProcessor(SilcImageProcessor(), clip_tokenizer())
    assert processor(text=["a cat", "a photo of a red cat"], return_tensors="pt")["input_ids"].shape == (2, 8)


def test_saved_config_maps_every_auto_class_to_the_shipped_code(tmp_path):
    _saved_model_and_processor(tmp_path)
    import json

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_silc.SilcConfig",
        "AutoModel": "modeling_silc.SilcModel",
        "AutoModelForZeroShotImageClassification": "modeling_silc.SilcModel",
    }
    # exactly the model set: no training code (losses, distillation) travels with a saved model
    assert {p.name for p in tmp_path.glob("*.py")} == {
        "configuration_silc.py",
        "modeling_silc.py",
        "processing_silc.py",
        "image_processing_silc.py",
    }
