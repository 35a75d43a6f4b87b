"""big_vision two-tower checkpoints -> SILC, against big_vision's own outputs (tests/fixtures/big_vision)."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_remote_code import load_without_package
from transformers import AutoModel, AutoProcessor

from silc_hf.convert.__main__ import main as convert_main
from silc_hf.convert.big_vision import from_big_vision, load_npz
from silc_hf.tools.model_card import render_model_card

FIXTURES = Path(__file__).parent / "fixtures" / "big_vision"
# variant -> (text pooling, pad id) as in the fixture README
VARIANTS = {"siglip_map": ("last", 1), "clip_tok": ("first", 0), "siglip_map_scan": ("last", 1)}


def _convert(variant, **kwargs):
    pooling, pad = VARIANTS[variant]
    return from_big_vision(
        str(FIXTURES / f"{variant}.params.npz"), text_pooling=pooling, pad_token_id=pad, **kwargs
    ).eval()


def _close(actual: torch.Tensor, expected: np.ndarray, rtol=1e-4, atol=2e-5):
    torch.testing.assert_close(actual, torch.from_numpy(np.asarray(expected)), rtol=rtol, atol=atol)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_converted_model_reproduces_big_vision(variant):
    model = _convert(variant)
    io_arrays = np.load(FIXTURES / f"{variant}.io.npz")
    pixel_values = torch.from_numpy(io_arrays["images"]).permute(0, 3, 1, 2)  # NHWC -> NCHW
    input_ids = torch.from_numpy(io_arrays["text"]).long()
    with torch.no_grad():
        out = model(input_ids=input_ids, pixel_values=pixel_values)
        vision = model.vision_model(pixel_values, output_hidden_states=True)
        text = model.text_model(input_ids, output_hidden_states=True)
        dense = model.get_dense_image_features(pixel_values, method="plain")
    _close(out.image_embeds, io_arrays["zimg"])
    _close(out.text_embeds, io_arrays["ztxt"])
    _close(vision.image_embeds, io_arrays["zimg_raw"])
    _close(text.text_embeds, io_arrays["ztxt_raw"])
    _close(out.logits_per_image, io_arrays["logits"], atol=1e-4)
    _close(model.logit_scale.exp(), io_arrays["t"])
    if "b" in io_arrays.files:
        _close(model.logit_bias, io_arrays["b"])
    # intermediate activations and patch tokens
    for block, expected in enumerate(io_arrays["img_block_outputs"]):
        _close(vision.hidden_states[block + 1], expected)
    for block, expected in enumerate(io_arrays["txt_block_outputs"]):
        _close(text.hidden_states[block + 1], expected)
    _close(vision.last_hidden_state, io_arrays["img_encoded"])
    _close(vision.pooler_output, io_arrays["img_pooled"])
    _close(text.pooler_output, io_arrays["txt_pooled"])
    patch_tokens = vision.last_hidden_state[:, model.vision_model.embeddings.num_prefix_tokens :]
    _close(patch_tokens.unflatten(1, (4, 4)), io_arrays["img_pre_logits_2d"])
    _close(dense, io_arrays["img_logits_2d"] if "img_logits_2d" in io_arrays.files else io_arrays["img_pre_logits_2d"])


def test_architecture_is_read_off_the_tree():
    siglip, clip = _convert("siglip_map"), _convert("clip_tok")
    v, t = siglip.config.vision_config, siglip.config.text_config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.intermediate_size) == (64, 2, 4, 128)
    assert (v.image_size, v.patch_size, v.pooling_type, v.projection_dim) == (64, 16, "map", None)
    assert (t.vocab_size, t.max_position_embeddings, t.projection_dim, t.use_padding_mask) == (100, 16, 64, False)
    assert siglip.config.loss_type == "sigmoid" and clip.config.loss_type == "softmax"
    cv = clip.config.vision_config
    assert (cv.image_size, cv.patch_size, cv.pooling_type, cv.projection_dim) == (32, 8, "cls", 32)


def _corrupt(tmp_path, change) -> str:
    arrays = dict(np.load(FIXTURES / "siglip_map.params.npz"))
    change(arrays)
    path = tmp_path / "corrupt.npz"
    np.savez(path, **arrays)
    return str(path)


def test_a_deleted_key_fails_with_its_name(tmp_path):
    key = "params/txt/Encoder_0/encoderblock_1/LayerNorm_1/scale"
    with pytest.raises(KeyError, match="txt/Encoder_0/encoderblock_1/LayerNorm_1/scale"):
        from_big_vision(_corrupt(tmp_path, lambda a: a.pop(key)))


@pytest.mark.parametrize(
    "key",
    [
        "img/Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel",
        "txt/Encoder_0/encoderblock_1/MultiHeadDotProductAttention_0/query/kernel",
    ],
)
def test_a_transposed_kernel_fails_with_its_name(tmp_path, key):
    def transpose(arrays):
        arrays[f"params/{key}"] = arrays[f"params/{key}"].T

    with pytest.raises(ValueError, match=f"'{key}' has shape"):
        from_big_vision(_corrupt(tmp_path, transpose))


def test_training_subtrees_are_reported_and_skipped(tmp_path):
    def add_training_state(arrays):
        arrays["opt/mu/img/embedding/kernel"] = np.zeros(3, np.float32)
        arrays["teacher/img/cls"] = np.zeros(3, np.float32)
        arrays["distill_head/prototypes"] = np.zeros((4, 2), np.float32)

    model, report = from_big_vision(_corrupt(tmp_path, add_training_state), return_report=True)
    assert report.skipped == {
        "opt/mu/img/embedding/kernel": "optimizer state",
        "teacher/img/cls": "EMA teacher (distillation)",
        "distill_head/prototypes": "distillation head",
    }
    assert len(report.consumed) == 92
    stray = _corrupt(tmp_path, lambda a: a.update({"params/img/extra_probe": np.zeros(3, np.float32)}))
    with pytest.raises(KeyError, match="'img/extra_probe' is not a parameter this converter knows"):
        from_big_vision(stray)


def test_keys_with_and_without_params_prefix_and_scan_layout_give_the_same_model():
    loop, scan = _convert("siglip_map"), _convert("siglip_map_scan")
    assert loop.state_dict().keys() == scan.state_dict().keys()
    assert all(torch.equal(loop.state_dict()[k], scan.state_dict()[k]) for k in loop.state_dict())
    assert set(load_npz(str(FIXTURES / "siglip_map.params.npz"))) == {
        k[len("params/") :] for k in np.load(FIXTURES / "siglip_map.params.npz").files
    }


def test_position_embeddings_resample_to_another_image_size():
    model = _convert("siglip_map", image_size=96)
    assert model.config.vision_config.image_size == 96
    assert model.vision_model.embeddings.position_embedding.weight.shape == (36, 64)
    with torch.no_grad():
        assert model.get_image_features(torch.randn(1, 3, 96, 96)).image_embeds.shape == (1, 64)


def _sentencepiece_model(path):
    import sentencepiece as spm

    sentences = ["a photo of a cat", "a red bird", "blue square", "dog on grass", "the sky"] * 20
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buffer,
        vocab_size=60,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    path.write_bytes(buffer.getvalue())
    return path


def test_cli_writes_a_complete_folder_that_loads_with_and_without_the_package(tmp_path):
    spiece = _sentencepiece_model(tmp_path / "spiece.model")
    out = tmp_path / "silc-tiny"
    convert_main(["big-vision", str(FIXTURES / "siglip_map.params.npz"), str(out), "--tokenizer", str(spiece)])
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "processor_config.json",
        "spiece.model",
        "README.md",
        "modeling_silc.py",
    } <= names
    model, processor = AutoModel.from_pretrained(out), AutoProcessor.from_pretrained(out)
    assert list(processor.image_processor.image_mean) == [0.5, 0.5, 0.5] and processor.fixed_text_length == 16
    reference = _convert("siglip_map")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.state_dict().items())

    io_arrays = np.load(FIXTURES / "siglip_map.io.npz")
    image_path = tmp_path / "image.png"
    from PIL import Image

    Image.fromarray(io_arrays["images_uint8"][0]).save(image_path)
    child = load_without_package(out, image_path, tmp_path)
    inputs = processor(images=Image.open(image_path), text=["a cat", "a red bird"], return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits_per_image
    torch.testing.assert_close(torch.tensor(child["logits_per_image"]), expected, rtol=0, atol=1e-5)
    # the processor's [-1, 1] pixels of a 64 px image are big_vision's inputs
    _close(inputs["pixel_values"][0].permute(1, 2, 0), io_arrays["images"][0], atol=1e-6)


def _front_matter(card: str):
    _, header, body = card.split("---\n", 2)
    return yaml.safe_load(header), body


def test_model_card_has_the_given_numbers_and_no_others():
    from silc_hf import SilcConfig

    results = {
        "results": [
            {
                "task": "zero-shot-image-classification",
                "dataset": "scenes",
                "dataset_name": "Captioned scenes",
                "split": "test",
                "metrics": {"top1_accuracy": 0.4375, "top5_accuracy": 0.9123},
            },
            {"task": "zero-shot-image-segmentation", "dataset": "scenes", "split": "test", "metrics": {"miou": 0.3141}},
        ]
    }
    card = render_model_card(
        SilcConfig.silc_b16(), "silc-test", results=results, datasets=["mlfoundations/datacomp_1b"]
    )
    meta, body = _front_matter(card)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "zero-shot-image-classification"
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["mlfoundations/datacomp_1b"]
    values = sorted(m["value"] for r in meta["model-index"][0]["results"] for m in r["metrics"])
    assert values == [0.3141, 0.4375, 0.9123]
    evaluation = body.split("## Evaluation", 1)[1].split("## Provenance", 1)[0]
    import re

    assert sorted(float(x) for x in re.findall(r"\d+\.\d+", evaluation)) == [0.3141, 0.4375, 0.9123]
    assert "AutoModel.from_pretrained" in body and 'pipeline("zero-shot-image-classification"' in body
    assert 'pipeline("zero-shot-image-segmentation"' in body

    empty = render_model_card(SilcConfig.silc_b16(), "silc-b16")
    meta, body = _front_matter(empty)
    assert "model-index" not in meta
    assert "Not evaluated" in body and not re.findall(
        r"\d+\.\d+", body.split("## Evaluation", 1)[1].split("## Provenance")[0]
    )


def test_shipped_silc_b16_card_claims_no_results():
    meta, body = _front_matter((Path(__file__).parents[1] / "model_cards" / "silc-b16.md").read_text())
    assert "model-index" not in meta and "Not evaluated" in body
    assert meta["datasets"] == ["mlfoundations/datacomp_1b"]
