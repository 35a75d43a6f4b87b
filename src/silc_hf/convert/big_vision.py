"""big_vision two-tower checkpoints (`.npz`, as released for SigLIP and SILC) -> `SilcModel`.

The architecture is read off the parameter tree (widths, depths, heads, MLP sizes, patch size, image pooling,
projection heads, temperature and bias, positional embeddings, scanned or per-layer blocks). What a tree
cannot tell (text pooling, token ids, loss type when there is no bias) has an argument. big_vision's text
tower uses no attention mask and LayerNorm eps 1e-6 with tanh-GELU everywhere; the converted config says so.
"""

import math
import re

import numpy as np
import torch

from ..configuration_silc import SilcConfig
from ..modeling_silc import SilcModel, interpolate_position_embeddings
from .common import ConversionReport, load_converted_state_dict

# Top-level subtrees a training checkpoint may carry besides the model; reported and skipped.
TRAINING_SUBTREES = {
    "opt": "optimizer state",
    "optimizer": "optimizer state",
    "ema": "EMA copy of the parameters",
    "ema_params": "EMA copy of the parameters",
    "teacher": "EMA teacher (distillation)",
    "teacher_params": "EMA teacher (distillation)",
    "distill_head": "distillation head",
    "dino_head": "distillation head",
    "head": "distillation head",
    "center": "distillation center",
    "step": "training step counter",
}


def load_npz(path: str) -> dict[str, np.ndarray]:
    """Read a big_vision `.npz` into a flat '/'-joined dict, without an optional leading `params/`."""
    with np.load(path, allow_pickle=False) as archive:
        flat = {key: archive[key] for key in archive.files}
    if any(key.startswith("params/") for key in flat):
        flat = {(key[len("params/") :] if key.startswith("params/") else key): value for key, value in flat.items()}
    return flat


def unscan(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Split scanned blocks (`.../encoderblock/...` with a leading depth axis) into `encoderblock_{i}`,
    as big_vision's `vit.scan_to_pyloop` does."""
    out = {}
    for key, value in flat.items():
        match = re.match(r"(.*)/encoderblock/(.*)", key)
        if not match:
            out[key] = value
            continue
        for index in range(value.shape[0]):
            out[f"{match.group(1)}/encoderblock_{index}/{match.group(2)}"] = value[index]
    return out


class _Tree:
    """The parameter dict, with bookkeeping: every key taken is marked consumed."""

    def __init__(self, flat: dict[str, np.ndarray], source: str):
        self.flat, self.source, self.taken = flat, source, set()

    def has(self, key: str) -> bool:
        return key in self.flat

    def shape(self, key: str) -> tuple:
        return tuple(self.get(key, mark=False).shape)

    def get(self, key: str, shape: tuple | None = None, mark: bool = True) -> np.ndarray:
        if key not in self.flat:
            raise KeyError(
                f"{self.source} lacks the parameter {key!r}; the checkpoint is incomplete or not a two-tower model."
            )
        value = self.flat[key]
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise ValueError(
                f"{self.source}: {key!r} has shape {tuple(value.shape)}, expected {tuple(shape)} "
                "(a transposed or mismatched kernel?)."
            )
        if mark:
            self.taken.add(key)
        return value

    def depth(self, prefix: str) -> int:
        indices = {
            int(m.group(1)) for key in self.flat if (m := re.match(re.escape(prefix) + r"/encoderblock_(\d+)/", key))
        }
        if not indices:
            raise KeyError(f"{self.source} has no transformer blocks under {prefix!r}.")
        if indices != set(range(len(indices))):
            raise KeyError(
                f"{self.source}: blocks under {prefix!r} are not numbered 0..{len(indices) - 1}: {sorted(indices)}"
            )
        return len(indices)


def _tower_dims(tree: _Tree, prefix: str, width_key: str) -> dict:
    """Width, depth, heads and MLP size, read from biases and norms (which cannot be transposed)."""
    block = f"{prefix}/encoderblock_0"
    width = tree.shape(width_key)[-1]
    heads, head_dim = tree.shape(f"{block}/MultiHeadDotProductAttention_0/query/bias")
    if heads * head_dim != width:
        raise ValueError(f"{tree.source}: {heads} heads x {head_dim} != width {width} in {block}.")
    return dict(
        hidden_size=width,
        num_hidden_layers=tree.depth(prefix),
        num_attention_heads=heads,
        intermediate_size=tree.shape(f"{block}/MlpBlock_0/Dense_0/bias")[0],
    )


def infer_config(
    flat: dict[str, np.ndarray],
    text_pooling: str = "last",
    loss_type: str | None = None,
    pad_token_id: int = 1,
    eos_token_id: int = 1,
    num_channels: int = 3,
    vision_pooling: str | None = None,
) -> SilcConfig:
    """The `SilcConfig` of a (flattened, unscanned) big_vision two-tower parameter tree."""
    tree = _Tree(flat, "checkpoint")
    vision = _tower_dims(tree, "img/Transformer", "img/embedding/bias")
    text = _tower_dims(tree, "txt/Encoder_0", "txt/Embed_0/embedding")
    patch_h, patch_w = tree.shape("img/embedding/kernel")[:2]
    if patch_h != patch_w:
        raise ValueError(f"Non-square patches ({patch_h}x{patch_w}) are not supported.")
    num_patches = tree.shape("img/pos_embedding")[1]
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"img/pos_embedding has {num_patches} positions, not a square grid.")
    if vision_pooling is None:
        vision_pooling = "map" if tree.has("img/MAPHead_0/probe") else "cls" if tree.has("img/cls") else "mean"
    vocab_size, _ = tree.shape("txt/Embed_0/embedding")
    return SilcConfig(
        loss_type=loss_type or ("sigmoid" if tree.has("b") else "softmax"),
        vision_config=dict(
            vision,
            num_channels=num_channels,
            image_size=side * patch_h,
            patch_size=patch_h,
            hidden_act="gelu_pytorch_tanh",
            layer_norm_eps=1e-6,
            pooling_type=vision_pooling,
            pre_layernorm=False,
            patch_embedding_bias=True,
            projection_dim=tree.shape("img/head/kernel")[1] if tree.has("img/head/kernel") else None,
            projection_bias=True,
        ),
        text_config=dict(
            text,
            vocab_size=vocab_size,
            max_position_embeddings=tree.shape("txt/pos_embedding")[1],
            hidden_act="gelu_pytorch_tanh",
            layer_norm_eps=1e-6,
            pooling_type=text_pooling,
            causal_attention=False,
            use_padding_mask=False,
            fixed_length_padding=True,
            projection_dim=tree.shape("txt/head/kernel")[1] if tree.has("txt/head/kernel") else None,
            projection_bias=True,
            pad_token_id=pad_token_id,
            eos_token_id=eos_token_id,
        ),
    )


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).float()


def _attention(tree: _Tree, src: str, dst: str, width: int, heads: int, out: dict) -> None:
    head_dim = width // heads
    for name, target in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
        kernel = tree.get(f"{src}/{name}/kernel", (width, heads, head_dim))
        out[f"{dst}.{target}.weight"] = _t(kernel.reshape(width, width).T)
        out[f"{dst}.{target}.bias"] = _t(tree.get(f"{src}/{name}/bias", (heads, head_dim)).reshape(width))
    out[f"{dst}.out_proj.weight"] = _t(tree.get(f"{src}/out/kernel", (heads, head_dim, width)).reshape(width, width).T)
    out[f"{dst}.out_proj.bias"] = _t(tree.get(f"{src}/out/bias", (width,)))


def _layer_norm(tree: _Tree, src: str, dst: str, width: int, out: dict) -> None:
    out[f"{dst}.weight"] = _t(tree.get(f"{src}/scale", (width,)))
    out[f"{dst}.bias"] = _t(tree.get(f"{src}/bias", (width,)))


def _mlp(tree: _Tree, src: str, dst: str, width: int, mlp: int, out: dict) -> None:
    out[f"{dst}.fc1.weight"] = _t(tree.get(f"{src}/Dense_0/kernel", (width, mlp)).T)
    out[f"{dst}.fc1.bias"] = _t(tree.get(f"{src}/Dense_0/bias", (mlp,)))
    out[f"{dst}.fc2.weight"] = _t(tree.get(f"{src}/Dense_1/kernel", (mlp, width)).T)
    out[f"{dst}.fc2.bias"] = _t(tree.get(f"{src}/Dense_1/bias", (width,)))


def _encoder(tree: _Tree, src: str, dst: str, config, out: dict) -> None:
    width, heads, mlp = config.hidden_size, config.num_attention_heads, config.intermediate_size
    for i in range(config.num_hidden_layers):
        block, layer = f"{src}/encoderblock_{i}", f"{dst}.encoder.layers.{i}"
        _layer_norm(tree, f"{block}/LayerNorm_0", f"{layer}.layer_norm1", width, out)
        _attention(tree, f"{block}/MultiHeadDotProductAttention_0", f"{layer}.self_attn", width, heads, out)
        _layer_norm(tree, f"{block}/LayerNorm_1", f"{layer}.layer_norm2", width, out)
        _mlp(tree, f"{block}/MlpBlock_0", f"{layer}.mlp", width, mlp, out)


def _projection(tree: _Tree, src: str, dst: str, config, out: dict) -> None:
    if config.projection_dim is None:
        return
    out[f"{dst}.projection.weight"] = _t(tree.get(f"{src}/kernel", (config.hidden_size, config.projection_dim)).T)
    out[f"{dst}.projection.bias"] = _t(tree.get(f"{src}/bias", (config.projection_dim,)))


def convert_state_dict(flat: dict[str, np.ndarray], config: SilcConfig, source: str) -> tuple[dict, ConversionReport]:
    """Map the flat big_vision tree onto `SilcModel` keys; every key is consumed or reported."""
    tree, out = _Tree(flat, source), {}
    vision, text = config.vision_config, config.text_config
    width, patch, channels = vision.hidden_size, vision.patch_size, vision.num_channels

    kernel = tree.get("img/embedding/kernel", (patch, patch, channels, width))  # HWIO -> OIHW
    out["vision_model.embeddings.patch_embedding.weight"] = _t(kernel.transpose(3, 2, 0, 1))
    out["vision_model.embeddings.patch_embedding.bias"] = _t(tree.get("img/embedding/bias", (width,)))
    positions = _t(tree.get("img/pos_embedding", (1, vision.num_patches, width))[0])
    if vision.pooling_type == "cls":  # big_vision prepends cls after adding positions: its position row is 0
        out["vision_model.embeddings.class_embedding"] = _t(tree.get("img/cls", (1, 1, width))[0, 0])
        positions = torch.cat([torch.zeros(1, width), positions])
    out["vision_model.embeddings.position_embedding.weight"] = positions
    _encoder(tree, "img/Transformer", "vision_model", vision, out)
    _layer_norm(tree, "img/Transformer/encoder_norm", "vision_model.post_layernorm", width, out)
    if vision.pooling_type == "map":
        out["vision_model.head.probe"] = _t(tree.get("img/MAPHead_0/probe", (1, 1, width)))
        _attention(
            tree,
            "img/MAPHead_0/MultiHeadDotProductAttention_0",
            "vision_model.head.attention",
            width,
            vision.num_attention_heads,
            out,
        )
        _layer_norm(tree, "img/MAPHead_0/LayerNorm_0", "vision_model.head.layernorm", width, out)
        _mlp(tree, "img/MAPHead_0/MlpBlock_0", "vision_model.head.mlp", width, vision.intermediate_size, out)
    _projection(tree, "img/head", "vision_model", vision, out)

    text_width = text.hidden_size
    out["text_model.embeddings.token_embedding.weight"] = _t(
        tree.get("txt/Embed_0/embedding", (text.vocab_size, text_width))
    )
    out["text_model.embeddings.position_embedding.weight"] = _t(
        tree.get("txt/pos_embedding", (1, text.max_position_embeddings, text_width))[0]
    )
    _encoder(tree, "txt/Encoder_0", "text_model", text, out)
    _layer_norm(tree, "txt/Encoder_0/encoder_norm", "text_model.final_layer_norm", text_width, out)
    _projection(tree, "txt/head", "text_model", text, out)

    out["logit_scale"] = _t(tree.get("t", (1,)))  # big_vision stores the log temperature, as CLIP does
    report = ConversionReport(source=source, consumed=sorted(tree.taken))
    if tree.has("b"):
        out["logit_bias"] = _t(tree.get("b", (1,)))
        report.consumed.append("b")
    else:
        report.initialised["logit_bias"] = "no `b` in the checkpoint (softmax-trained): 0"

    for key in sorted(set(flat) - tree.taken):
        top = key.split("/", 1)[0]
        if top in ("img", "txt", "t", "b"):
            raise KeyError(
                f"{source}: {key!r} is not a parameter this converter knows how to place; refusing to drop it."
            )
        report.skipped[key] = TRAINING_SUBTREES.get(top, f"not part of the two-tower model (subtree {top!r})")
    return out, report


def from_big_vision(
    npz_path: str,
    text_pooling: str = "last",
    loss_type: str | None = None,
    pad_token_id: int = 1,
    eos_token_id: int = 1,
    vision_pooling: str | None = None,
    image_size: int | None = None,
    return_report: bool = False,
):
    """Convert a big_vision two-tower `.npz` checkpoint (SigLIP / SILC layout) into a `SilcModel`.

    Args:
        npz_path: the checkpoint; keys with or without a leading `params/`, blocks scanned or per layer.
        text_pooling: `"last"` (SigLIP / SILC), `"first"` or `"mean"`; the tree cannot tell.
        loss_type: `"sigmoid"` or `"softmax"`; default: sigmoid when the tree has a bias `b`.
        pad_token_id, eos_token_id: the tokenizer's ids (big_vision SigLIP: both 1).
        vision_pooling: override the image pooling read from the tree (`map` / `cls` / `mean`).
        image_size: resolution to serve at, if not the trained one (position embeddings are resampled).
        return_report: also return the `ConversionReport` (consumed and skipped keys).
    """
    flat = unscan(load_npz(npz_path))
    config = infer_config(flat, text_pooling, loss_type, pad_token_id, eos_token_id, vision_pooling=vision_pooling)
    state_dict, report = convert_state_dict(flat, config, source=str(npz_path))
    vision = config.vision_config
    if image_size is not None and image_size != vision.image_size:
        if image_size % vision.patch_size:
            raise ValueError(f"image_size={image_size} is not a multiple of the patch size {vision.patch_size}.")
        key = "vision_model.embeddings.position_embedding.weight"
        grid = image_size // vision.patch_size
        state_dict[key] = interpolate_position_embeddings(
            state_dict[key], int(vision.pooling_type == "cls"), grid, grid
        )
        report.adapted[key] = f"resampled from {vision.image_size} px to {image_size} px"
        vision.image_size = image_size
    model = load_converted_state_dict(SilcModel(config), state_dict, report)
    return (model, report) if return_report else model
