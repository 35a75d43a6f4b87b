"""open_clip ViT CLIP checkpoints -> `SilcModel` (the standard `open_clip.model.CLIP` with ViT towers).

The model config is open_clip's JSON (`{"embed_dim", "vision_cfg", "text_cfg", "quick_gelu"}`); towers that
open_clip builds differently (timm or HF towers, attentional pooling, layer scale, custom blocks, CoCa's
class embedding, bidirectional text) are refused with the field that asks for them.
"""

import json
import os

import torch

from ..configuration_silc import SilcConfig
from ..modeling_silc import SilcModel
from .common import ConversionReport, load_converted_state_dict

# open_clip config fields whose non-default values build towers this converter does not reproduce.
_UNSUPPORTED = {
    "vision_cfg": {
        "timm_model_name": None,
        "attentional_pool": False,
        "ls_init_value": None,
        "no_ln_pre": False,
        "pos_embed_type": "learnable",
        "final_ln_after_pool": False,
        "pool_type": "tok",
        "qk_norm": False,
        "scaled_cosine_attn": False,
        "scale_heads": False,
        "scale_attn_inner": False,
        "scale_attn": False,
        "scale_fc": False,
        "act_kwargs": None,
        "norm_kwargs": None,
    },
    "text_cfg": {
        "hf_model_name": None,
        "embed_cls": False,
        "ls_init_value": None,
        "no_causal_mask": False,
        "final_ln_after_pool": False,
        "proj_type": "linear",
        "proj_bias": False,
        "qk_norm": False,
        "scaled_cosine_attn": False,
        "scale_heads": False,
        "scale_attn_inner": False,
        "scale_attn": False,
        "scale_fc": False,
        "act_kwargs": None,
        "norm_kwargs": None,
    },
}
_TEXT_POOLING = {"argmax": "argmax", "eos": "eos", "first": "first", "last": "last"}


def open_clip_config_to_silc(model_config: dict) -> SilcConfig:
    """Translate an open_clip model config into the `SilcConfig` that reproduces it."""
    vision, text = dict(model_config["vision_cfg"]), dict(model_config["text_cfg"])
    for section, defaults in _UNSUPPORTED.items():
        cfg = vision if section == "vision_cfg" else text
        for key, default in defaults.items():
            if cfg.get(key, default) != default:
                raise ValueError(
                    f"open_clip {section}.{key}={cfg[key]!r} builds a tower SILC does not reproduce; only plain ViT "
                    "CLIP towers convert."
                )
    if not isinstance(vision.get("layers", 12), int):
        raise ValueError(f"open_clip vision_cfg.layers={vision['layers']} is a ResNet; only ViT towers convert.")
    pool = text.get("pool_type", "argmax")
    if pool not in _TEXT_POOLING:
        raise ValueError(f"open_clip text_cfg.pool_type={pool!r} is not supported; use one of {list(_TEXT_POOLING)}.")
    act = "quick_gelu" if model_config.get("quick_gelu", False) else "gelu"
    v_width, t_width = vision.get("width", 768), text.get("width", 512)
    embed_dim = model_config["embed_dim"]
    return SilcConfig(
        loss_type="sigmoid" if model_config.get("init_logit_bias") is not None else "softmax",
        vision_config=dict(
            hidden_size=v_width,
            intermediate_size=int(v_width * vision.get("mlp_ratio", 4.0)),
            num_hidden_layers=vision.get("layers", 12),
            num_attention_heads=v_width // vision.get("head_width", 64),
            image_size=vision.get("image_size", 224),
            patch_size=vision.get("patch_size", 16),
            hidden_act=act,
            layer_norm_eps=1e-5,
            pooling_type="cls",
            pre_layernorm=True,
            patch_embedding_bias=False,
            projection_dim=embed_dim,
            projection_bias=False,
        ),
        text_config=dict(
            vocab_size=text.get("vocab_size", 49408),
            hidden_size=t_width,
            intermediate_size=int(t_width * text.get("mlp_ratio", 4.0)),
            num_hidden_layers=text.get("layers", 12),
            num_attention_heads=text.get("heads", 8),
            max_position_embeddings=text.get("context_length", 77),
            hidden_act=act,
            layer_norm_eps=1e-5,
            pooling_type=_TEXT_POOLING[pool],
            causal_attention=True,
            use_padding_mask=False,
            fixed_length_padding=False,
            projection_dim=embed_dim,
            projection_bias=False,
            pad_token_id=text.get("pad_id", 0),
            eos_token_id=text.get("eos_id", 2) if pool == "eos" else None,
        ),
    )


def _load_state_dict(state_dict_or_path) -> dict[str, torch.Tensor]:
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        path = str(state_dict_or_path)
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state_dict = load_file(path)
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    else:
        state_dict = dict(state_dict_or_path)
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):  # an open_clip training checkpoint
        state_dict = state_dict["state_dict"]
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def _blocks(source: dict, src: str, dst: str, layers: int, out: dict, report: ConversionReport) -> None:
    for i in range(layers):
        s, d = f"{src}.resblocks.{i}", f"{dst}.encoder.layers.{i}"
        mapping = {
            "ln_1": "layer_norm1",
            "ln_2": "layer_norm2",
            "attn.out_proj": "self_attn.out_proj",
            "mlp.c_fc": "mlp.fc1",
            "mlp.c_proj": "mlp.fc2",
        }
        for old, new in mapping.items():
            for kind in ("weight", "bias"):
                out[f"{d}.{new}.{kind}"] = _take(source, f"{s}.{old}.{kind}", report)
        for kind in ("weight", "bias"):  # nn.MultiheadAttention packs q, k, v
            for name, part in zip(
                ("q_proj", "k_proj", "v_proj"), _take(source, f"{s}.attn.in_proj_{kind}", report).chunk(3)
            ):
                out[f"{d}.self_attn.{name}.{kind}"] = part


def _take(source: dict, key: str, report: ConversionReport) -> torch.Tensor:
    if key not in source:
        raise KeyError(f"{report.source} lacks {key!r}.")
    report.consumed.append(key)
    return source[key]


def from_open_clip(state_dict_or_path, model_config, return_report: bool = False):
    """Convert an open_clip ViT CLIP (`state_dict`, or a `.bin` / `.pt` / `.safetensors` path) with its
    open_clip model config (a dict, or a path to the JSON) into an equivalent `SilcModel`."""
    if isinstance(model_config, (str, os.PathLike)):
        with open(model_config) as file:
            model_config = json.load(file)
    config = open_clip_config_to_silc(model_config)
    source = _load_state_dict(state_dict_or_path)
    report = ConversionReport(source="open_clip checkpoint")
    out = {}
    v, t = config.vision_config, config.text_config
    out["vision_model.embeddings.patch_embedding.weight"] = _take(source, "visual.conv1.weight", report)
    out["vision_model.embeddings.class_embedding"] = _take(source, "visual.class_embedding", report)
    out["vision_model.embeddings.position_embedding.weight"] = _take(source, "visual.positional_embedding", report)
    for old, new in (("ln_pre", "pre_layernorm"), ("ln_post", "post_layernorm")):
        for kind in ("weight", "bias"):
            out[f"vision_model.{new}.{kind}"] = _take(source, f"visual.{old}.{kind}", report)
    _blocks(source, "visual.transformer", "vision_model", v.num_hidden_layers, out, report)
    out["vision_model.projection.weight"] = _take(source, "visual.proj", report).t()  # open_clip: x @ proj
    out["text_model.embeddings.token_embedding.weight"] = _take(source, "token_embedding.weight", report)
    out["text_model.embeddings.position_embedding.weight"] = _take(source, "positional_embedding", report)
    _blocks(source, "transformer", "text_model", t.num_hidden_layers, out, report)
    for kind in ("weight", "bias"):
        out[f"text_model.final_layer_norm.{kind}"] = _take(source, f"ln_final.{kind}", report)
    out["text_model.projection.weight"] = _take(source, "text_projection", report).t()
    out["logit_scale"] = _take(source, "logit_scale", report).reshape(1)
    if "logit_bias" in source:
        out["logit_bias"] = _take(source, "logit_bias", report).reshape(1)
    else:
        report.initialised["logit_bias"] = "no logit bias in the checkpoint: 0"
    for key in sorted(set(source) - set(report.consumed)):
        if key == "attn_mask" or key.endswith(".attn_mask"):
            report.skipped[key] = "causal mask buffer, rebuilt by the model"
        else:
            raise KeyError(f"{report.source} has a key this converter does not know: {key!r}")
    model = load_converted_state_dict(SilcModel(config), {k: v.float() for k, v in out.items()}, report)
    return (model, report) if return_report else model
