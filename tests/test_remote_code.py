"""A saved SILC folder loads with trust_remote_code=True in a Python where silc_hf cannot be imported."""

import pytest
import torch
from transformers import pipeline

from silc_hf import SilcImageProcessor, SilcModel, SilcProcessor

from conftest import clip_tokenizer, random_image, run_in_fresh_python, tiny_silc_config

LABELS = ["cat", "dog", "red bird"]

# Runs in a fresh interpreter: blocks silc_hf, proves it is blocked, then loads the folder as the Hub would.
CHILD = r"""
import json, sys
sys.modules["silc_hf"] = None  # `import silc_hf` now raises ImportError
try:
    import silc_hf
    raise SystemExit("silc_hf is importable; the test would prove nothing")
except ImportError:
    pass
import numpy as np, torch
from PIL import Image
from transformers import AutoModel, AutoModelForZeroShotImageClassification, AutoProcessor, pipeline
folder, image_path = sys.argv[1], sys.argv[2]
image = Image.open(image_path)
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
zero_shot = AutoModelForZeroShotImageClassification.from_pretrained(folder, trust_remote_code=True)
inputs = processor(images=image, text=["a cat", "a red bird"], return_tensors="pt")
with torch.no_grad():
    out = model(**inputs)
classifier = pipeline("zero-shot-image-classification", model=folder, trust_remote_code=True)
print(json.dumps({
    "model_class": type(model).__module__ + "." + type(model).__name__,
    "zero_shot_class": type(zero_shot).__name__,
    "processor_class": type(processor).__name__,
    "logits_per_image": out.logits_per_image.tolist(),
    "input_ids": inputs["input_ids"].tolist(),
    "pipeline": classifier(image, candidate_labels=%r, hypothesis_template="a {}"),
}))
""" % (LABELS,)


def load_without_package(folder, image_path, workdir) -> dict:
    """Run CHILD in a fresh interpreter where `import silc_hf` fails; return what it printed."""
    return run_in_fresh_python(CHILD, folder, image_path, workdir=workdir)


def test_folder_loads_without_the_package(tmp_path):
    folder = tmp_path / "silc"
    torch.manual_seed(0)
    model = SilcModel(tiny_silc_config(loss_type="softmax")).eval()
    processor = SilcProcessor(
        SilcImageProcessor(size={"height": 32, "width": 32}), clip_tokenizer(), fixed_text_length=16
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    image = random_image(7)
    image_path = tmp_path / "image.png"
    image.save(image_path)

    child = load_without_package(folder, image_path, tmp_path)

    assert child["model_class"].startswith("transformers_modules.") and child["model_class"].endswith("SilcModel")
    assert child["zero_shot_class"] == "SilcModel" and child["processor_class"] == "SilcProcessor"
    inputs = processor(images=image, text=["a cat", "a red bird"], return_tensors="pt")
    assert child["input_ids"] == inputs["input_ids"].tolist()
    with torch.no_grad():
        expected = model(**inputs).logits_per_image
    torch.testing.assert_close(torch.tensor(child["logits_per_image"]), expected, rtol=0, atol=1e-6)
    local = pipeline("zero-shot-image-classification", model=str(folder))(
        image, candidate_labels=LABELS, hypothesis_template="a {}"
    )
    assert [r["label"] for r in child["pipeline"]] == [r["label"] for r in local]
    # another process may run with another thread count: equal up to float32 summation order
    assert [r["score"] for r in child["pipeline"]] == pytest.approx([r["score"] for r in local], abs=1e-6)
