"""Hugging Face CLIP and SigLIP -> SILC.

Both map one state dict onto the other (most keys share names, since the SILC towers follow the HF stack);
the configs are translated field by field. A converted model reproduces the source model's outputs.
"""

import os
import re

import torch
from transformers import AutoConfig, AutoProcessor, CLIPModel, SiglipModel

from ..configuration_silc import SilcConfig
from ..image_processing_silc import SilcImageProcessor
from ..modeling_silc import SilcModel
from ..processing_silc import SilcProcessor
from .common import ConversionReport, load_converted_state_dict

_TOWER_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "hidden_act",
    "layer_norm_eps",
    "attention_dropout",
)
# HF checkpoints saved by older versions may carry these persistent buffers; they are recomputed here.
_BUFFER_KEYS = re.compile(r".*position_ids$")


def _tower_kwargs(config, *extra: str) -> dict:
    return {name: getattr(config, name) for name in (*_TOWER_FIELDS, *extra)}


def _load(model_or_path, model_class):
    if isinstance(model_or_path, (str, os.PathLike)):
        model_type = AutoConfig.from_pretrained(model_or_path).model_type
        expected = model_class.config_class.model_type
        if model_type != expected:
            other = {"clip": "hf-clip / from_hf_clip", "siglip": "hf-siglip / from_hf_siglip"}.get(model_type)
            hint = f"use {other}" if other else "only HF CLIP (hf-clip) and SigLIP (hf-siglip) checkpoints convert"
            raise ValueError(
                f"{model_or_path} holds a {model_type!r} model, not a {expected!r} one ({model_class.__name__}); "
                f"{hint}."
            )
        return model_class.from_pretrained(model_or_path)
    if not isinstance(model_or_path, model_class):
        raise TypeError(f"Expected a {model_class.__name__} or a path to one, got {type(model_or_path).__name__}.")
    return model_or_path


def _rename(source: dict[str, torch.Tensor], rules: list[tuple[str, str]], report: ConversionReport) -> dict:
    """Apply the first matching `(pattern, replacement)` rule to every key; unknown keys raise."""
    converted, unknown = {}, []
    for key, value in source.items():
        if _BUFFER_KEYS.match(key):
            report.skipped[key] = "buffer recomputed by the SILC model"
            continue
        for pattern, replacement in rules:
            if re.fullmatch(pattern, key):
                converted[re.sub(pattern, replacement, key)] = value
                report.consumed.append(key)
                break
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"{report.source} has keys this converter does not know: {unknown[:10]}")
    return converted


_SHARED_RULES = [
    (r"(text_model|vision_model)\.embeddings\.(\w+)(\.weight|\.bias)?", r"\1.embeddings.\2\3"),
    (r"(text_model|vision_model)\.encoder\.(.*)", r"\1.encoder.\2"),
    (r"text_model\.final_layer_norm\.(weight|bias)", r"text_model.final_layer_norm.\1"),
    (r"vision_model\.post_layernorm\.(weight|bias)", r"vision_model.post_layernorm.\1"),
]


def clip_config_to_silc(config) -> SilcConfig:
    """Translate a `CLIPConfig` into the `SilcConfig` that reproduces it."""
    text, vision = config.text_config, config.vision_config
    # transformers keeps OpenAI's "highest token id is EOS" rule for configs with the pre-#24773 eos_token_id=2.
    text_pooling = "argmax" if text.eos_token_id == 2 else "eos"
    return SilcConfig(
        loss_type="softmax",
        logit_scale_init_value=config.logit_scale_init_value,
        text_config=dict(
            **_tower_kwargs(text, "vocab_size", "max_position_embeddings"),
            pooling_type=text_pooling,
            causal_attention=True,
            use_padding_mask=True,
            fixed_length_padding=False,
            projection_dim=config.projection_dim,
            projection_bias=False,
            pad_token_id=text.pad_token_id,
            bos_token_id=text.bos_token_id,
            eos_token_id=text.eos_token_id,
        ),
        vision_config=dict(
            **_tower_kwargs(vision, "num_channels", "image_size", "patch_size"),
            pooling_type="cls",
            pre_layernorm=True,
            patch_embedding_bias=False,
            projection_dim=config.projection_dim,
            projection_bias=False,
        ),
    )


def siglip_config_to_silc(config) -> SilcConfig:
    """Translate a `SiglipConfig` into the `SilcConfig` that reproduces it."""
    text, vision = config.text_config, config.vision_config
    if not vision.vision_use_head:
        raise ValueError(
            "SigLIP vision towers with vision_use_head=False have no pooled output, so there is no image embedding "
            "to convert; only SigLIP models with the attention-pool head are supported."
        )
    return SilcConfig(
        loss_type="sigmoid",
        text_config=dict(
            **_tower_kwargs(text, "vocab_size", "max_position_embeddings"),
            pooling_type="last",
            causal_attention=False,
            use_padding_mask=True,
            fixed_length_padding=True,
            projection_dim=text.projection_size,
            projection_bias=True,
            pad_token_id=text.pad_token_id,
            bos_token_id=text.bos_token_id,
            eos_token_id=text.eos_token_id,
        ),
        vision_config=dict(
            **_tower_kwargs(vision, "num_channels", "image_size", "patch_size"),
            pooling_type="map",
            pre_layernorm=False,
            patch_embedding_bias=True,
            projection_dim=None,
        ),
    )


def from_hf_clip(model_or_path, return_report: bool = False):
    """Convert a `transformers.CLIPModel` (or a folder / Hub id holding one) into an equivalent `SilcModel`
    (and the [`ConversionReport`] when `return_report=True`)."""
    source = _load(model_or_path, CLIPModel)
    report = ConversionReport(source=f"CLIPModel {source.name_or_path or ''}".strip())
    rules = _SHARED_RULES + [
        (r"vision_model\.pre_layrnorm\.(weight|bias)", r"vision_model.pre_layernorm.\1"),
        (r"visual_projection\.weight", "vision_model.projection.weight"),
        (r"text_projection\.weight", "text_model.projection.weight"),
        (r"logit_scale", "logit_scale"),
    ]
    state_dict = _rename(source.state_dict(), rules, report)
    state_dict["logit_scale"] = state_dict["logit_scale"].reshape(1)
    report.initialised["logit_bias"] = "CLIP has no logit bias; 0 leaves softmax logits and loss unchanged"
    model = SilcModel(clip_config_to_silc(source.config))
    model = load_converted_state_dict(model, state_dict, report).to(source.dtype)
    return (model, report) if return_report else model


def from_hf_siglip(model_or_path, return_report: bool = False):
    """Convert a `transformers.SiglipModel` (or a folder / Hub id holding one) into an equivalent `SilcModel`
    (and the [`ConversionReport`] when `return_report=True`)."""
    source = _load(model_or_path, SiglipModel)
    report = ConversionReport(source=f"SiglipModel {source.name_or_path or ''}".strip())
    rules = _SHARED_RULES + [
        (r"text_model\.head\.(weight|bias)", r"text_model.projection.\1"),
        (r"vision_model\.head\.attention\.in_proj_(weight|bias)", r"vision_model.head.attention.in_proj_\1"),
        (r"vision_model\.head\.attention\.out_proj\.(weight|bias)", r"vision_model.head.attention.out_proj.\1"),
        (r"vision_model\.head\.(probe|layernorm\.\w+|mlp\.\w+\.\w+)", r"vision_model.head.\1"),
        (r"logit_(scale|bias)", r"logit_\1"),
    ]
    state_dict = _rename(source.state_dict(), rules, report)
    # nn.MultiheadAttention packs q, k, v into one matrix; SILC keeps them separate (as big_vision does).
    for kind in ("weight", "bias"):
        packed = state_dict.pop(f"vision_model.head.attention.in_proj_{kind}")
        for name, part in zip(("q", "k", "v"), packed.chunk(3)):
            state_dict[f"vision_model.head.attention.{name}_proj.{kind}"] = part
    model = SilcModel(siglip_config_to_silc(source.config))
    model = load_converted_state_dict(model, state_dict, report).to(source.dtype)
    return (model, report) if return_report else model


_IMAGE_SETTINGS = (
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_convert_rgb",
)


def silc_processor_from(processor, fixed_text_length: int | None = None) -> SilcProcessor:
    """Build a `SilcProcessor` with the same image preprocessing and the same tokenizer as an HF processor
    (a CLIP/SigLIP processor object, or a folder holding one)."""
    if isinstance(processor, (str, os.PathLike)):
        processor = AutoProcessor.from_pretrained(processor)
    settings = processor.image_processor.to_dict()
    image_processor = SilcImageProcessor(**{key: settings[key] for key in _IMAGE_SETTINGS if key in settings})
    tokenizer = processor.tokenizer
    if fixed_text_length is not None:
        tokenizer.model_max_length = fixed_text_length
    return SilcProcessor(image_processor, tokenizer, fixed_text_length=fixed_text_length)
