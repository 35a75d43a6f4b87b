"""Converted HF CLIP / SigLIP models reproduce their source models (the architecture proof)."""

import pytest
import torch

from silc_hf.convert import from_hf_clip, from_hf_siglip

from conftest import tiny_clip_model, tiny_siglip_model


def _inputs(vocab_size: int, eos_token_id: int, pad_token_id: int, seed: int = 0):
    """3 images and 4 texts of different lengths: EOS then padding, with the matching attention mask."""
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(3, 3, 32, 32, generator=generator)
    lengths = [3, 7, 11, 16]
    input_ids = torch.full((4, 16), pad_token_id)
    attention_mask = torch.zeros(4, 16, dtype=torch.long)
    for row, length in enumerate(lengths):
        input_ids[row, : length - 1] = torch.randint(3, vocab_size - 1, (length - 1,), generator=generator)
        input_ids[row, length - 1] = eos_token_id
        attention_mask[row, :length] = 1
    return pixel_values, input_ids, attention_mask


def _assert_close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("eos_token_id", [1, 2], ids=["eos-pooling", "legacy-argmax-pooling"])
def test_clip_conversion_reproduces_clip(attn_implementation, eos_token_id):
    source = tiny_clip_model(eos_token_id=eos_token_id)
    vocab = source.config.text_config.vocab_size
    if eos_token_id == 2:  # legacy configs pool the highest id, which the tokenizer gives to EOS
        pixel_values, input_ids, mask = _inputs(vocab - 1, vocab - 1, 1)
    else:
        pixel_values, input_ids, mask = _inputs(vocab, eos_token_id, 1)
    converted = from_hf_clip(source)
    source.set_attn_implementation(attn_implementation)
    converted.set_attn_implementation(attn_implementation)
    with torch.no_grad():
        expected = source(input_ids=input_ids, attention_mask=mask, pixel_values=pixel_values)
        actual = converted(input_ids=input_ids, attention_mask=mask, pixel_values=pixel_values)
    _assert_close(actual.logits_per_image, expected.logits_per_image)
    _assert_close(actual.image_embeds, expected.image_embeds)
    _assert_close(actual.text_embeds, expected.text_embeds)
    with torch.no_grad():
        _assert_close(
            converted.get_image_features(pixel_values).pooler_output,
            source.get_image_features(pixel_values).pooler_output,
        )
        _assert_close(
            converted.get_text_features(input_ids, mask).pooler_output,
            source.get_text_features(input_ids, mask).pooler_output,
        )


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_siglip_conversion_reproduces_siglip(attn_implementation):
    source = tiny_siglip_model()
    pixel_values, input_ids, _ = _inputs(source.config.text_config.vocab_size, eos_token_id=1, pad_token_id=1)
    converted = from_hf_siglip(source)
    source.set_attn_implementation(attn_implementation)
    converted.set_attn_implementation(attn_implementation)
    with torch.no_grad():
        expected = source(input_ids=input_ids, pixel_values=pixel_values)
        actual = converted(input_ids=input_ids, pixel_values=pixel_values)
    assert converted.config.loss_type == "sigmoid"
    _assert_close(actual.logits_per_image, expected.logits_per_image)
    _assert_close(actual.image_embeds, expected.image_embeds)
    _assert_close(actual.text_embeds, expected.text_embeds)


def test_siglip_conversion_pads_short_text_like_max_length_tokenization():
    """SigLIP was trained on 64 (here 16) tokens; the converted model pads shorter input itself."""
    source = tiny_siglip_model()
    pixel_values, input_ids, _ = _inputs(source.config.text_config.vocab_size, eos_token_id=1, pad_token_id=1)
    converted = from_hf_siglip(source)
    short = input_ids[:2, :8]  # rows of length 3 and 7: everything after column 7 is padding
    with torch.no_grad():
        expected = source(input_ids=input_ids[:2], pixel_values=pixel_values).logits_per_image
        actual = converted(input_ids=short, pixel_values=pixel_values).logits_per_image
    _assert_close(actual, expected)


def test_unknown_source_key_raises_with_its_name():
    source = tiny_clip_model()
    source.register_parameter("extra_head", torch.nn.Parameter(torch.zeros(3)))
    with pytest.raises(KeyError, match="extra_head"):
        from_hf_clip(source)


def test_shape_mismatch_raises_with_key_name(monkeypatch):
    source = tiny_clip_model()
    original = source.state_dict

    def transposed_projection(*args, **kwargs):
        state = original(*args, **kwargs)
        state["visual_projection.weight"] = state["visual_projection.weight"].t()
        return state

    monkeypatch.setattr(source, "state_dict", transposed_projection)
    with pytest.raises(ValueError, match=r"vision_model\.projection\.weight: converted \(32, 24\)"):
        from_hf_clip(source)


def test_cli_writes_a_siglip_folder_whose_processor_pads_to_the_trained_length(tmp_path, capsys):
    from transformers import AutoModel, AutoProcessor, SiglipImageProcessorPil, SiglipProcessor

    from silc_hf.convert.__main__ import main

    from conftest import clip_tokenizer, random_image

    source = tiny_siglip_model()
    source_processor = SiglipProcessor(
        image_processor=SiglipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=clip_tokenizer()
    )
    source.save_pretrained(tmp_path / "siglip")
    source_processor.save_pretrained(tmp_path / "siglip")
    main(["hf-siglip", str(tmp_path / "siglip"), str(tmp_path / "silc")])
    assert "88 source keys consumed" in capsys.readouterr().out

    model = AutoModel.from_pretrained(tmp_path / "silc")
    processor = AutoProcessor.from_pretrained(tmp_path / "silc")
    image, texts = random_image(2), ["a red bird", "a photo of a dog on green background"]
    inputs = processor(images=image, text=texts, return_tensors="pt")
    assert inputs["input_ids"].shape == (2, 16)
    reference = source_processor(images=image, text=texts, padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        expected = source(input_ids=reference["input_ids"], pixel_values=reference["pixel_values"]).logits_per_image
        actual = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"]).logits_per_image
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_the_cli_names_the_right_subcommand_for_a_checkpoint_of_the_other_family(clip_folder, tmp_path):
    from silc_hf.convert.__main__ import main

    with pytest.raises(ValueError, match=r"holds a 'clip' model, not a 'siglip' one \(SiglipModel\); use hf-clip"):
        main(["hf-siglip", str(clip_folder), str(tmp_path / "silc")])
