"""SILC model configuration: architecture only (training knobs live in `SilcTrainingArguments`).

The defaults reproduce the `silc-b16` architecture: a ViT-B/16 image tower at 224 px with an attention-pool
("MAP") head and a B-size text tower that pools the last token of fixed-length (64) inputs, as in the
big_vision two-tower checkpoints. The same fields express Hugging Face CLIP towers (class-token pooling,
pre-LayerNorm, quick-GELU, causal text attention, EOS pooling, bias-free projections) and SigLIP towers.
"""

import math

from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneConfigMixin
from transformers.configuration_utils import PreTrainedConfig

VISION_POOLING_TYPES = ("cls", "map", "mean")
TEXT_POOLING_TYPES = ("eos", "argmax", "last", "first", "mean")
LOSS_TYPES = ("softmax", "sigmoid")
# Prompts of a class name (`{}`) for zero-shot use when a model names none of its own
# (`SilcConfig.zero_shot_templates`).
DEFAULT_PROMPT_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.", "a {}.")


def _check_choice(config: PreTrainedConfig, field: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, field)
    if value not in choices:
        raise ValueError(f"{type(config).__name__}.{field}={value!r} is not supported; use one of {list(choices)}.")


def _check_tower(config: PreTrainedConfig) -> None:
    """Checks shared by both towers."""
    name = type(config).__name__
    for field in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        if getattr(config, field) < 1:
            raise ValueError(f"{name}.{field}={getattr(config, field)} must be a positive integer.")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"{name}.hidden_size={config.hidden_size} is not divisible by num_attention_heads="
            f"{config.num_attention_heads}; choose a head count that divides it (e.g. "
            f"{_divisor_near(config.hidden_size, config.num_attention_heads)})."
        )
    if config.hidden_act not in ACT2FN:
        raise ValueError(
            f"{name}.hidden_act={config.hidden_act!r} is unknown; use e.g. 'gelu_pytorch_tanh' (SigLIP, big_vision), "
            "'quick_gelu' (OpenAI CLIP) or 'gelu'."
        )
    if config.projection_dim is not None and config.projection_dim < 1:
        raise ValueError(f"{name}.projection_dim={config.projection_dim} must be positive, or None for no projection.")


def _check_templates(config: PreTrainedConfig, templates, field: str = "zero_shot_templates") -> None:
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(
            f"{type(config).__name__}.{field}={list(templates or [])!r}: give at least one template, each with '{{}}' "
            "for the class name, e.g. ['a photo of a {}.']."
        )


def _divisor_near(n: int, k: int) -> int:
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    return min(divisors, key=lambda d: abs(d - k))


class SilcVisionConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Image tower of a SILC model: a pre-LayerNorm ViT.

    Args:
        hidden_size (`int`): width of the transformer.
        intermediate_size (`int`): hidden size of each MLP (also used by the MAP head's MLP).
        num_hidden_layers (`int`): number of transformer blocks.
        num_attention_heads (`int`): attention heads per block (and in the MAP head).
        num_channels (`int`): input channels.
        image_size (`int`): square input resolution the position embeddings were trained for.
        patch_size (`int`): square patch size; must divide `image_size`.
        hidden_act (`str`): MLP activation, a key of `transformers.activations.ACT2FN`.
        layer_norm_eps (`float`): LayerNorm epsilon (1e-6 for big_vision/SigLIP, 1e-5 for CLIP).
        attention_dropout (`float`): dropout on attention probabilities.
        pooling_type (`str`): `"cls"` (class token, CLIP / big_vision `tok`), `"map"` (multi-head attention
            pooling with a learned probe, SigLIP / big_vision `map`) or `"mean"` (average of patch tokens, `gap`).
        pre_layernorm (`bool`): LayerNorm after the embeddings, before the first block (CLIP).
        patch_embedding_bias (`bool`): whether the patch convolution has a bias (CLIP: no).
        projection_dim (`int` or `None`): output size of the linear map from the pooled representation into the
            joint image-text space; `None` means the pooled representation is the embedding (SigLIP).
        projection_bias (`bool`): whether that projection has a bias (big_vision heads: yes, CLIP: no).
        initializer_range (`float`): standard deviation of the truncated-normal weight init.
        out_features, out_indices (`list`, *optional*): as a backbone (`SilcBackbone`, `AutoBackbone`), which of
            the stages `stem` (the embeddings), `stage1` ... `stageN` (the blocks) to return; default the last.
        apply_layernorm (`bool`): as a backbone, apply the final LayerNorm to every returned feature map.
        reshape_hidden_states (`bool`): as a backbone, return `(batch, hidden, grid_h, grid_w)` maps (prefix
            token dropped) rather than `(batch, tokens, hidden)` sequences.
    """

    model_type = "silc_vision_model"
    base_config_key = "vision_config"

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 16
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    attention_dropout: float | int = 0.0
    pooling_type: str = "map"
    pre_layernorm: bool = False
    patch_embedding_bias: bool = True
    projection_dim: int | None = None
    projection_bias: bool = True
    initializer_range: float = 0.02
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None
    apply_layernorm: bool = True
    reshape_hidden_states: bool = True

    def __post_init__(self, **kwargs):
        self.stage_names = ["stem"] + [f"stage{index}" for index in range(1, self.num_hidden_layers + 1)]
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
        )
        super().__post_init__(**kwargs)
        self.validate_architecture()

    @property
    def output_dim(self) -> int:
        """Size of `image_embeds`: the projection size, or the width when there is no projection. (Not
        `embed_dim`: transformers reads that as the tower's width.)"""
        return self.projection_dim or self.hidden_size

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def validate_architecture(self):
        _check_tower(self)
        _check_choice(self, "pooling_type", VISION_POOLING_TYPES)
        if self.image_size % self.patch_size:
            fits = self.image_size // self.patch_size * self.patch_size
            raise ValueError(
                f"SilcVisionConfig.image_size={self.image_size} is not divisible by patch_size={self.patch_size}; "
                f"use image_size={fits} or {fits + self.patch_size}."
            )


class SilcTextConfig(PreTrainedConfig):
    r"""
    Text tower of a SILC model: a pre-LayerNorm transformer over token ids.

    Args:
        vocab_size (`int`): size of the token table.
        hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, hidden_act, layer_norm_eps,
            attention_dropout: as in [`SilcVisionConfig`].
        max_position_embeddings (`int`): number of learned positions (the longest input).
        pooling_type (`str`): which token represents the text: `"eos"` (first `eos_token_id`, HF CLIP),
            `"argmax"` (highest token id, the original OpenAI CLIP rule), `"last"` (last position, SigLIP /
            big_vision), `"first"` (position 0) or `"mean"` (mean over attended positions).
        causal_attention (`bool`): causal self-attention (CLIP) instead of bidirectional.
        use_padding_mask (`bool`): whether `attention_mask` hides padding from attention. big_vision text towers
            are trained without any mask and must ignore it (`False`); HF CLIP and SigLIP apply it (`True`).
        fixed_length_padding (`bool`): the tower was trained on texts padded to `max_position_embeddings`
            tokens (SigLIP, big_vision). Shorter inputs are then right-padded with `pad_token_id` by the model
            itself, so that any tokenizer call (including the stock pipeline's `padding=True`) gives the
            trained behaviour.
        projection_dim (`int` or `None`): output size of the text projection; `None` means no projection.
        projection_bias (`bool`): whether the projection has a bias.
        pad_token_id, bos_token_id, eos_token_id (`int`): special token ids the model relies on.
        initializer_range (`float`): standard deviation of the truncated-normal weight init.
    """

    model_type = "silc_text_model"
    base_config_key = "text_config"

    vocab_size: int = 32000
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 64
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    attention_dropout: float | int = 0.0
    pooling_type: str = "last"
    causal_attention: bool = False
    use_padding_mask: bool = False
    fixed_length_padding: bool = True
    projection_dim: int | None = 768
    projection_bias: bool = True
    pad_token_id: int | None = 1
    bos_token_id: int | None = None
    eos_token_id: int | None = 1
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.validate_architecture()

    @property
    def output_dim(self) -> int:
        """Size of `text_embeds`: the projection size, or the width when there is no projection."""
        return self.projection_dim or self.hidden_size

    def validate_architecture(self):
        _check_tower(self)
        _check_choice(self, "pooling_type", TEXT_POOLING_TYPES)
        if self.pooling_type == "eos" and self.eos_token_id is None:
            raise ValueError(
                "SilcTextConfig.pooling_type='eos' needs eos_token_id; set it to the tokenizer's EOS id "
                "(tokenizer.eos_token_id)."
            )
        if self.fixed_length_padding and self.pad_token_id is None:
            raise ValueError(
                "SilcTextConfig.fixed_length_padding=True needs pad_token_id; set it to the id the text tower was "
                "trained with (tokenizer.pad_token_id), or set fixed_length_padding=False."
            )


class SilcConfig(PreTrainedConfig):
    r"""
    Configuration of a [`SilcModel`]: an image tower, a text tower and the learned logit scale (and bias).

    Args:
        text_config (`dict` or [`SilcTextConfig`]): the text tower.
        vision_config (`dict` or [`SilcVisionConfig`]): the image tower.
        loss_type (`str`): `"softmax"` (CLIP's symmetric cross-entropy, SILC-C) or `"sigmoid"` (SigLIP's
            pairwise sigmoid loss, SILC-S). It also decides how zero-shot scores are read: softmax over labels
            or an independent sigmoid per label.
        logit_scale_init_value (`float`): initial *log* of the logit scale. Defaults to ln(1/0.07) for
            softmax (CLIP) and ln(10) for sigmoid (SigLIP).
        logit_bias_init_value (`float`): initial logit bias. Defaults to 0 for softmax (where a bias has no
            effect on the loss or the scores) and -10 for sigmoid (SigLIP).
        zero_shot_templates (`list[str]`, *optional*): the prompts (`"{}"` is the class name) this model is meant to
            be used with zero-shot, e.g. the wording of the captions it was trained on; the evaluation and
            [`SilcForOpenVocabularySegmentation.from_silc_pretrained`] use them by default. `None`:
            `DEFAULT_PROMPT_TEMPLATES`.

    Example:

    ```python
    >>> from silc_hf import SilcConfig, SilcModel
    >>> config = SilcConfig.silc_b16()          # same as SilcConfig()
    >>> model = SilcModel(config)
    ```
    """

    model_type = "silc"
    sub_configs_defaults = {"text_config": SilcTextConfig, "vision_config": SilcVisionConfig}

    text_config: dict | SilcTextConfig | None = None
    vision_config: dict | SilcVisionConfig | None = None
    loss_type: str = "sigmoid"
    logit_scale_init_value: float | int | None = None
    logit_bias_init_value: float | int | None = None
    zero_shot_templates: list[str] | None = None
    initializer_factor: float = 1.0

    def __post_init__(self, **kwargs):
        if self.logit_scale_init_value is None:
            self.logit_scale_init_value = math.log(10.0) if self.loss_type == "sigmoid" else math.log(1 / 0.07)
        if self.logit_bias_init_value is None:
            self.logit_bias_init_value = -10.0 if self.loss_type == "sigmoid" else 0.0
        super().__post_init__(**kwargs)
        self.validate_architecture()

    @property
    def projection_dim(self) -> int:
        """Size of the joint image-text embedding space."""
        return self.vision_config.output_dim

    def validate_architecture(self):
        _check_choice(self, "loss_type", LOSS_TYPES)
        if self.zero_shot_templates is not None:
            _check_templates(self, self.zero_shot_templates)
        image_dim, text_dim = self.vision_config.output_dim, self.text_config.output_dim
        if image_dim != text_dim:
            raise ValueError(
                f"The image embedding size ({image_dim}: vision_config.projection_dim or hidden_size) differs from "
                f"the text embedding size ({text_dim}: text_config.projection_dim or hidden_size); set both "
                f"projection_dim fields to the same value."
            )

    @classmethod
    def silc_b16(cls, **kwargs) -> "SilcConfig":
        """The `silc-b16` architecture: ViT-B/16 at 224 px with a MAP head, B-size text tower (64 tokens)."""
        return cls(text_config=SilcTextConfig(), vision_config=SilcVisionConfig(), **kwargs)


class SilcOpenVocabularySegmentationConfig(PreTrainedConfig):
    r"""
    Configuration of a [`SilcForOpenVocabularySegmentation`]: a SILC image-text model and a cost-aggregation
    decoder in the spirit of CAT-Seg (Cho et al., CVPR 2024). Defaults follow CAT-Seg's ViT-B setting.

    Args:
        silc_config (`dict` or [`SilcConfig`]): the image-text model whose towers build the cost volume.
        prompt_templates (`list[str]`): the prompts of each class name (`"{}"` is the name); every template is one
            channel of the cost volume, so their number is part of the architecture.
        dense_method (`str`): the image tower's dense features, `"value"` (MaskCLIP value path, the default: it
            segments better zero-shot) or `"plain"`; see [`SilcVisionModel.get_dense_features`].
        decoder_hidden_size (`int`): channels of the cost embedding that the aggregation layers refine.
        guidance_size (`int`): channels of the image and text guidance concatenated to it.
        num_aggregation_layers (`int`): (spatial, class) aggregation pairs.
        num_attention_heads (`int`): heads of the class aggregation (attention across classes, no positions).
        guidance_layers (`list[int]`): image-tower blocks (0 = the embeddings, k = after block k) whose tokens
            guide the upsampling, deepest first, one per upsampling step (x2 each). Default: after blocks 2L/3 and
            L/3 of L (8 and 4 for ViT-B, as CAT-Seg).
        upsampling_sizes (`list[int]`): channels of each upsampling step (same length as `guidance_layers`).
        ignore_index (`int`): label value of pixels without a class (no loss).
    """

    model_type = "silc_open_vocabulary_segmentation"
    sub_configs_defaults = {"silc_config": SilcConfig}

    silc_config: dict | SilcConfig | None = None
    prompt_templates: list[str] | tuple[str, ...] = DEFAULT_PROMPT_TEMPLATES
    dense_method: str = "value"
    decoder_hidden_size: int = 128
    guidance_size: int = 128
    num_aggregation_layers: int = 2
    num_attention_heads: int = 4
    guidance_layers: list[int] | None = None
    upsampling_sizes: list[int] | tuple[int, ...] = (64, 32)
    ignore_index: int = 255

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.prompt_templates = list(self.prompt_templates)
        self.upsampling_sizes = list(self.upsampling_sizes)
        if self.guidance_layers is None:
            depth = self.silc_config.vision_config.num_hidden_layers
            self.guidance_layers = [2 * depth // 3, depth // 3][: len(self.upsampling_sizes)]
        self.guidance_layers = list(self.guidance_layers)
        self.validate_architecture()

    def get_text_config(self, *args, **kwargs):
        """The text tower's config (where the tokenizer's special token ids live), as for a `SilcConfig`."""
        return self.silc_config.get_text_config(*args, **kwargs)

    def validate_architecture(self):
        _check_choice(self, "dense_method", ("plain", "value"))
        name = type(self).__name__
        _check_templates(self, self.prompt_templates, "prompt_templates")
        if self.decoder_hidden_size % self.num_attention_heads:
            raise ValueError(
                f"{name}.decoder_hidden_size={self.decoder_hidden_size} is not divisible by num_attention_heads="
                f"{self.num_attention_heads}; use e.g. "
                f"{_divisor_near(self.decoder_hidden_size, self.num_attention_heads)}."
            )
        if len(self.guidance_layers) != len(self.upsampling_sizes):
            raise ValueError(
                f"{name}.guidance_layers={self.guidance_layers} and upsampling_sizes={self.upsampling_sizes} need one "
                "entry per upsampling step; give both the same length."
            )
        # the value path replaces the last block when there is no MAP head: its ordinary output is never computed
        vision = self.silc_config.vision_config
        value_replaces_last_block = self.dense_method == "value" and vision.pooling_type != "map"
        deepest = vision.num_hidden_layers - value_replaces_last_block
        for layer in self.guidance_layers:
            if not 0 <= layer <= deepest:
                raise ValueError(f"{name}.guidance_layers has {layer}; use block indices from 0 to {deepest}.")


__all__ = [
    "DEFAULT_PROMPT_TEMPLATES",
    "SilcConfig",
    "SilcOpenVocabularySegmentationConfig",
    "SilcTextConfig",
    "SilcVisionConfig",
]
