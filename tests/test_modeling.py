"""SilcModel behaviour: attention backends, gradient checkpointing, padding, position interpolation, dense features."""

import pytest
import torch

from silc_hf import SilcModel

from conftest import tiny_silc_config


def _model(seed=0, **overrides) -> SilcModel:
    torch.manual_seed(seed)
    return SilcModel(tiny_silc_config(**overrides)).eval()


def _batch(seed=0, images=2, texts=3, length=10):
    generator = torch.Generator().manual_seed(seed)
    return dict(
        pixel_values=torch.randn(images, 3, 32, 32, generator=generator),
        input_ids=torch.randint(2, 60, (texts, length), generator=generator),
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        dict(loss_type="softmax", vision_config=dict(pooling_type="cls", pre_layernorm=True)),
        dict(
            text_config=dict(
                causal_attention=True, use_padding_mask=True, fixed_length_padding=False, pooling_type="eos"
            )
        ),
    ],
    ids=["map-last", "cls-softmax", "causal-eos"],
)
def test_sdpa_and_eager_attention_agree(overrides):
    model = _model(**overrides)
    batch = _batch()
    batch["input_ids"][:, 6] = 1  # EOS for the eos-pooling variant
    batch["attention_mask"] = (torch.arange(10) <= 6).long().expand(3, -1)
    with torch.no_grad():
        sdpa = model(**batch)
        model.set_attn_implementation("eager")
        eager = model(**batch)
    torch.testing.assert_close(sdpa.logits_per_image, eager.logits_per_image, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("loss_type", ["softmax", "sigmoid"])
def test_gradient_checkpointing_gives_the_same_gradients(loss_type):
    batch = _batch(images=3, texts=3)
    grads = []
    for checkpointing in (False, True):
        model = _model(loss_type=loss_type).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        model(**batch, return_loss=True).loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 50
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7, msg=name)


def test_loss_matches_formulas():
    """return_loss equals the CLIP / SigLIP losses written from their definitions."""
    batch = _batch(images=3, texts=3)
    for loss_type in ("softmax", "sigmoid"):
        model = _model(loss_type=loss_type)
        with torch.no_grad():
            out = model(**batch, return_loss=True)
        logits = out.logits_per_image.double()
        if loss_type == "softmax":
            expected = -(logits.log_softmax(1).diagonal().mean() + logits.log_softmax(0).diagonal().mean()) / 2
        else:
            signs = 2 * torch.eye(3, dtype=torch.double) - 1
            expected = -torch.log(torch.sigmoid(signs * logits)).sum() / 3
        assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_fixed_length_model_pads_short_input_like_max_length_tokenization():
    model = _model()
    batch = _batch(length=10)
    padded = torch.nn.functional.pad(batch["input_ids"], (0, 6), value=model.config.text_config.pad_token_id)
    with torch.no_grad():
        short = model(**batch).logits_per_image
        full = model(pixel_values=batch["pixel_values"], input_ids=padded).logits_per_image
    torch.testing.assert_close(short, full, rtol=0, atol=0)


def test_big_vision_style_tower_ignores_attention_mask_and_others_use_it():
    batch = _batch()
    mask = (torch.arange(10) < 5).long().expand(3, -1)
    for use_padding_mask, should_change in ((False, False), (True, True)):
        model = _model(text_config=dict(use_padding_mask=use_padding_mask))
        with torch.no_grad():
            plain = model(**batch).text_embeds
            masked = model(**batch, attention_mask=mask).text_embeds
        assert (not torch.equal(plain, masked)) == should_change


def test_too_long_text_raises_with_the_fix():
    model = _model()
    with pytest.raises(
        ValueError,
        match="has 20 tokens but the text tower has max_position_embeddings=16; tokenize with truncation=True",
    ):
        model(**_batch(length=20))


def test_wrong_image_size_raises_unless_interpolating():
    model = _model()
    pixel_values = torch.randn(1, 3, 48, 64)
    with pytest.raises(
        ValueError, match=r"Input image size \(48x64\) doesn't match the model \(32x32\).*interpolate_pos_encoding=True"
    ):
        model.get_image_features(pixel_values)
    with torch.no_grad():
        out = model.get_image_features(pixel_values, interpolate_pos_encoding=True)
        dense = model.get_dense_image_features(pixel_values, interpolate_pos_encoding=True)
    assert out.image_embeds.shape == (1, 32) and dense.shape == (1, 6, 8, 32)


@pytest.mark.parametrize("pooling_type", ["cls", "map", "mean"])
def test_interpolation_at_the_trained_size_is_the_identity(pooling_type):
    model = _model(vision_config=dict(pooling_type=pooling_type))
    pixel_values = _batch()["pixel_values"]
    with torch.no_grad():
        plain = model.get_image_features(pixel_values).image_embeds
        interpolated = model.get_image_features(pixel_values, interpolate_pos_encoding=True).image_embeds
    torch.testing.assert_close(plain, interpolated, rtol=0, atol=0)


def test_interpolated_position_embeddings_resample_the_grid():
    """A 2x finer grid of a position table that is linear in x and y stays linear (bicubic reproduces it)."""
    model = _model(vision_config=dict(pooling_type="cls"))
    embeddings = model.vision_model.embeddings
    ys, xs = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    with torch.no_grad():
        embeddings.position_embedding.weight[1:] = (xs.flatten()[:, None] + 10 * ys.flatten()[:, None]).expand(-1, 32)
        table = embeddings.interpolate_pos_encoding(4, 4)[0]
    torch.testing.assert_close(table, embeddings.position_embedding.weight)
    assert embeddings.interpolate_pos_encoding(8, 8).shape == (1, 65, 32)


@pytest.mark.parametrize("pooling_type", ["map", "mean", "cls"])
def test_dense_value_path_equals_pooling_on_a_single_patch(pooling_type):
    """With one patch, attention over it is the identity, so the value path equals the pooled embedding."""
    model = _model(vision_config=dict(pooling_type=pooling_type, image_size=8))
    pixel_values = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        dense = model.get_dense_image_features(pixel_values, method="value")
        pooled = model.get_image_features(pixel_values).image_embeds
    if pooling_type == "cls":  # the class token is a second token, so only the shapes can be compared
        assert dense.shape == (2, 1, 1, 32)
    else:
        torch.testing.assert_close(dense[:, 0, 0], pooled, rtol=1e-5, atol=1e-6)


def test_dense_plain_features_average_to_the_mean_pooled_embedding():
    model = _model(vision_config=dict(pooling_type="mean", projection_dim=32), text_config=dict(projection_dim=32))
    pixel_values = _batch()["pixel_values"]
    with torch.no_grad():
        dense = model.get_dense_image_features(pixel_values, method="plain")
        pooled = model.get_image_features(pixel_values).image_embeds
    torch.testing.assert_close(dense.mean(dim=(1, 2)), pooled, rtol=1e-5, atol=1e-6)


def test_dense_method_is_checked():
    with pytest.raises(ValueError, match="method='mask' is not supported; use one of"):
        _model().get_dense_image_features(torch.randn(1, 3, 32, 32), method="mask")


def test_hidden_states_and_attentions_are_returned_on_request():
    model = _model()
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(**_batch(), output_hidden_states=True, output_attentions=True)
    vision = out.vision_model_output
    assert len(vision.hidden_states) == 3 and len(vision.attentions) == 2
    assert vision.attentions[0].shape == (2, 4, 16, 16)


def test_configs_follow_transformers_width_conventions():
    """transformers' common model tests (`test_get_image_features_output`) read a tower's width from the first
    of `embed_dim`, ..., `hidden_size` its config has; SILC's joint size is `output_dim` / `projection_dim`."""
    config = tiny_silc_config(vision_config={"projection_dim": 24}, text_config={"projection_dim": 24})
    model = SilcModel(config).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels)
        text = model.get_text_features(input_ids=torch.tensor([[5, 6, 1], [7, 1, 0]]))
    for tower, output in ((config.vision_config, image), (config.text_config, text)):
        width = next(getattr(tower, name) for name in ("embed_dim", "hidden_size") if hasattr(tower, name))
        assert output.last_hidden_state.shape[-1] == width == 32
        assert output.pooler_output.shape[-1] == tower.output_dim == config.projection_dim == 24
