import pytest

from silc_hf import SilcConfig, SilcTextConfig, SilcVisionConfig


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: SilcVisionConfig(hidden_size=30, num_attention_heads=4),
            "hidden_size=30 is not divisible by num_attention_heads=4",
        ),
        (lambda: SilcTextConfig(hidden_size=100, num_attention_heads=12), "hidden_size=100 is not divisible"),
        (
            lambda: SilcVisionConfig(image_size=30, patch_size=8),
            "image_size=30 is not divisible by patch_size=8; use image_size=24 or 32",
        ),
        (
            lambda: SilcVisionConfig(pooling_type="avg"),
            "pooling_type='avg' is not supported; use one of ['cls', 'map', 'mean']",
        ),
        (lambda: SilcTextConfig(pooling_type="cls"), "pooling_type='cls' is not supported"),
        (lambda: SilcTextConfig(pooling_type="eos", eos_token_id=None), "pooling_type='eos' needs eos_token_id"),
        (lambda: SilcTextConfig(pad_token_id=None), "fixed_length_padding=True needs pad_token_id"),
        (lambda: SilcVisionConfig(hidden_act="swishy"), "hidden_act='swishy' is unknown"),
        (
            lambda: SilcConfig(loss_type="hinge"),
            "loss_type='hinge' is not supported; use one of ['softmax', 'sigmoid']",
        ),
        (lambda: SilcConfig(vision_config=dict(projection_dim=512)), "image embedding size (512"),
        (lambda: SilcVisionConfig(num_hidden_layers=0), "num_hidden_layers=0 must be a positive integer"),
    ],
)
def test_invalid_configs_raise_value_error_naming_field_and_value(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value)


def test_silc_b16_preset_is_vit_b16_at_224():
    config = SilcConfig.silc_b16()
    vision, text = config.vision_config, config.text_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (768, 12, 12)
    assert (vision.image_size, vision.patch_size, vision.num_patches) == (224, 16, 196)
    assert (text.hidden_size, text.num_hidden_layers, text.max_position_embeddings) == (768, 12, 64)
    assert config.projection_dim == 768
    assert config.to_dict() == SilcConfig().to_dict()


def test_loss_type_sets_scale_and_bias_defaults():
    softmax, sigmoid = SilcConfig(loss_type="softmax"), SilcConfig(loss_type="sigmoid")
    assert softmax.logit_scale_init_value == pytest.approx(2.6592, abs=1e-4)  # ln(1 / 0.07), CLIP
    assert softmax.logit_bias_init_value == 0.0
    assert sigmoid.logit_scale_init_value == pytest.approx(2.302585)  # ln(10), SigLIP
    assert sigmoid.logit_bias_init_value == -10.0


def test_config_round_trip(tmp_path):
    config = SilcConfig(loss_type="softmax", vision_config=dict(pooling_type="cls", pre_layernorm=True))
    config.save_pretrained(tmp_path)
    loaded = SilcConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert isinstance(loaded.vision_config, SilcVisionConfig)
