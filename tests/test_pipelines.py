"""The stock zero-shot pipeline and the sigmoid-aware SILC pipeline on saved SILC folders."""

import pytest
import torch
from transformers import pipeline
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from silc_hf import SilcImageProcessor, SilcModel, SilcProcessor, SilcZeroShotImageClassificationPipeline
from silc_hf.convert.__main__ import convert_hf

from conftest import clip_tokenizer, random_image, tiny_silc_config

LABELS = ["cat", "dog", "red bird", "blue square on green background"]


def test_stock_pipeline_on_converted_folder_matches_the_clip_source(clip_folder, tmp_path):
    silc_folder = tmp_path / "silc"
    convert_hf("hf-clip", str(clip_folder), str(silc_folder))
    image = random_image(3)
    expected = pipeline("zero-shot-image-classification", model=str(clip_folder))(image, candidate_labels=LABELS)
    actual = pipeline("zero-shot-image-classification", model=str(silc_folder))(image, candidate_labels=LABELS)
    assert [r["label"] for r in actual] == [r["label"] for r in expected]
    assert [r["score"] for r in actual] == pytest.approx([r["score"] for r in expected], rel=1e-5, abs=1e-7)


@pytest.fixture
def sigmoid_folder(tmp_path):
    """A fixed-length (16 tokens), sigmoid-loss SILC folder."""
    torch.manual_seed(1)
    model = SilcModel(tiny_silc_config(loss_type="sigmoid", logit_bias_init_value=-1.0)).eval()
    processor = SilcProcessor(
        SilcImageProcessor(size={"height": 32, "width": 32}), clip_tokenizer(), fixed_text_length=16
    )
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    return tmp_path, model, processor


def _reference_logits(model, processor, image, template="This is a photo of {}."):
    inputs = processor(images=image, text=[template.format(label) for label in LABELS], return_tensors="pt")
    assert inputs["input_ids"].shape[1] == 16  # the processor pads to the fixed length
    with torch.no_grad():
        return model(**inputs).logits_per_image[0]


def test_stock_pipeline_gives_fixed_length_padding_results(sigmoid_folder):
    """The stock pipeline pads dynamically; the model pads to its trained length, so scores equal the
    processor's max-length path (softmax, as the stock pipeline reads every non-"siglip" model)."""
    folder, model, processor = sigmoid_folder
    image = random_image(4)
    expected = _reference_logits(model, processor, image).softmax(-1)
    result = pipeline("zero-shot-image-classification", model=str(folder))(image, candidate_labels=LABELS)
    scores = {r["label"]: r["score"] for r in result}
    assert [scores[label] for label in LABELS] == pytest.approx(expected.tolist(), rel=1e-5)


def test_silc_pipeline_scores_sigmoid_models_with_sigmoid(sigmoid_folder):
    folder, model, processor = sigmoid_folder
    image = random_image(5)
    logits = _reference_logits(model, processor, image)
    classifier = pipeline(
        "zero-shot-image-classification", model=str(folder), pipeline_class=SilcZeroShotImageClassificationPipeline
    )
    result = classifier(image, candidate_labels=LABELS)
    scores = {r["label"]: r["score"] for r in result}
    assert [scores[label] for label in LABELS] == pytest.approx(logits.sigmoid().tolist(), rel=1e-5)
    assert sum(scores.values()) != pytest.approx(1.0)  # independent per-label probabilities
    assert [r["score"] for r in result] == sorted(scores.values(), reverse=True)
    softmax = classifier(image, candidate_labels=LABELS, score_function="softmax")
    assert sum(r["score"] for r in softmax) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="score_function='tanh' is not supported"):
        classifier(image, candidate_labels=LABELS, score_function="tanh")


def test_silc_pipeline_scores_softmax_models_with_softmax(clip_folder, tmp_path):
    silc_folder = tmp_path / "silc"
    convert_hf("hf-clip", str(clip_folder), str(silc_folder))
    image = random_image(6)
    stock = pipeline("zero-shot-image-classification", model=str(silc_folder))(image, candidate_labels=LABELS)
    silc = pipeline(
        "zero-shot-image-classification", model=str(silc_folder), pipeline_class=SilcZeroShotImageClassificationPipeline
    )(image, candidate_labels=LABELS)
    assert silc == stock


def test_silc_pipeline_truncates_labels_longer_than_the_text_tower(clip_folder, tmp_path):
    silc_folder = tmp_path / "silc"
    convert_hf("hf-clip", str(clip_folder), str(silc_folder))
    long_label = " ".join(["red circle on green background"] * 5)  # > 16 tokens
    image = random_image(8)
    with pytest.raises(ValueError, match="tokenize with truncation=True"):
        pipeline("zero-shot-image-classification", model=str(silc_folder))(
            image, candidate_labels=[long_label, "a dog"]
        )
    classifier = pipeline(
        "zero-shot-image-classification", model=str(silc_folder), pipeline_class=SilcZeroShotImageClassificationPipeline
    )
    segmenter = pipeline("zero-shot-image-segmentation", model=str(silc_folder))
    for logger_name, run in (
        ("silc_hf.zero_shot.prompts", lambda: classifier(image, candidate_labels=[long_label, "a dog"])),
        ("silc_hf.zero_shot.prompts", lambda: segmenter(image, candidate_labels=[long_label, "a dog"])),
    ):
        with CaptureLogger(logging.get_logger(logger_name)) as captured:
            results = run()
        assert f"Prompts for ['{long_label}'] are longer than the text tower's 16 tokens" in captured.out
        assert "a dog" not in captured.out and len(results) == 2


@pytest.mark.parametrize(
    "labels, template, message",
    [
        ([], "a {}", "candidate_labels is empty"),
        ("cat, dog", "a {}", r"candidate_labels='cat, dog' is a string; pass a list of labels, e.g. \['cat', 'dog'\]"),
        (["cat", "dog"], "a photo", "hypothesis_template='a photo' has no '{}' for the label"),
    ],
)
def test_silc_pipelines_refuse_empty_or_string_labels_and_templates_without_a_slot(
    clip_folder, tmp_path, labels, template, message
):
    silc_folder = tmp_path / "silc"
    convert_hf("hf-clip", str(clip_folder), str(silc_folder))
    classifier = pipeline(
        "zero-shot-image-classification", model=str(silc_folder), pipeline_class=SilcZeroShotImageClassificationPipeline
    )
    segmenter = pipeline("zero-shot-image-segmentation", model=str(silc_folder))
    for run in (classifier, segmenter):
        with pytest.raises(ValueError, match=message):
            run(random_image(8), candidate_labels=labels, hypothesis_template=template)
