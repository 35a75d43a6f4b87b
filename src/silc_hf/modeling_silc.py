"""PyTorch SILC model: a two-tower (ViT image tower + transformer text tower) image-text model.

Module stack as in transformers' SigLIP: Embeddings -> Attention -> MLP -> EncoderLayer -> Encoder, public
`PreTrainedModel` towers on top. Each tower owns its pooling and its projection into the joint space, so that
`image_embeds` / `text_embeds` and dense per-patch embeddings are one call away (timm's method vocabulary).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin, filter_output_hidden_states
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BackboneOutput, BaseModelOutput, ImageClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import ModelOutput, can_return_tuple
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_silc import SilcConfig, SilcTextConfig, SilcVisionConfig

DENSE_METHODS = ("plain", "value")


# The image-text losses live here, as CLIP's and SigLIP's do in transformers, so that a saved folder ships model code
# only; the training package's distributed loss reuses them. They take L2-normalised embeddings and the *log* scale.


def image_text_logits(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor
) -> torch.Tensor:
    """Scaled cosine similarities `(num_images, num_texts)`: `exp(logit_scale) * <image, text> + logit_bias`."""
    return image_embeds @ text_embeds.t() * logit_scale.exp() + logit_bias


def softmax_contrastive_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy (Radford et al. 2021; open_clip `ClipLoss`) over a square batch; row i's
    positive is column i."""
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.t(), labels)) / 2


def sigmoid_contrastive_loss(logits_per_image: torch.Tensor, first_label: int = 0) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss (Zhai et al. 2023, big_vision): every image-text pair is a binary
    classification; image i's positive is text `first_label + i`. Summed over texts, averaged over images."""
    rows = logits_per_image.shape[0]
    labels = -torch.ones_like(logits_per_image)
    labels[torch.arange(rows), torch.arange(rows) + first_label] = 1
    return -F.logsigmoid(labels * logits_per_image).sum() / rows


def contrastive_loss(logits_per_image: torch.Tensor, loss_type: str) -> torch.Tensor:
    """The single-process image-text loss named by `SilcConfig.loss_type` (`"softmax"` or `"sigmoid"`)."""
    if loss_type == "softmax":
        return softmax_contrastive_loss(logits_per_image)
    if loss_type == "sigmoid":
        return sigmoid_contrastive_loss(logits_per_image)
    raise ValueError(f"loss_type={loss_type!r} is not supported; use 'softmax' or 'sigmoid'.")


@dataclass
class SilcVisionModelOutput(ModelOutput):
    r"""
    image_embeds (`torch.FloatTensor` of shape `(batch_size, embed_dim)`):
        Pooled representation mapped into the joint image-text space (not normalised).
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_tokens, hidden_size)`):
        Tokens after the final LayerNorm (class token first when `pooling_type="cls"`).
    pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
        Pooled representation before the projection (what SILC's distillation head reads).
    """

    image_embeds: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SilcTextModelOutput(ModelOutput):
    r"""
    text_embeds (`torch.FloatTensor` of shape `(batch_size, embed_dim)`):
        Pooled representation mapped into the joint image-text space (not normalised).
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
        Tokens after the final LayerNorm.
    pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
        Pooled representation before the projection.
    """

    text_embeds: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class SilcOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, returned when `return_loss=True`):
        Softmax (CLIP) or sigmoid (SigLIP) image-text loss, according to `config.loss_type`.
    logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`):
        `exp(logit_scale) * cos(image, text) + logit_bias`.
    logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`):
        The transpose of `logits_per_image`.
    text_embeds, image_embeds (`torch.FloatTensor` of shape `(batch_size, embed_dim)`):
        L2-normalised embeddings.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_model_output: SilcTextModelOutput | None = None
    vision_model_output: SilcVisionModelOutput | None = None

    def to_tuple(self) -> tuple[Any]:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    """Reference attention; `attention_mask` is additive (as built by `transformers.masking_utils`)."""
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling  # (batch, heads, q, k)
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()  # (batch, q, heads, head_dim)
    return attn_output, attn_weights


class SilcAttention(nn.Module):
    """Multi-head attention with biased q/k/v/out projections; self- or cross-attention (the MAP probe)."""

    def __init__(self, config: SilcVisionConfig | SilcTextConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_causal = bool(getattr(config, "causal_attention", False))
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        key_value_states: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        key_value_states = hidden_states if key_value_states is None else key_value_states
        query_shape = (*hidden_states.shape[:-1], -1, self.head_dim)
        kv_shape = (*key_value_states.shape[:-1], -1, self.head_dim)
        queries = self.q_proj(hidden_states).view(query_shape).transpose(1, 2)  # (batch, heads, q, head_dim)
        keys = self.k_proj(key_value_states).view(kv_shape).transpose(1, 2)
        values = self.v_proj(key_value_states).view(kv_shape).transpose(1, 2)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            queries,
            keys,
            values,
            attention_mask,
            is_causal=self.is_causal,
            scaling=self.scale,
            dropout=self.dropout if self.training else 0.0,
        )
        attn_output = attn_output.reshape(*hidden_states.shape[:-1], -1).contiguous()
        return self.out_proj(attn_output), attn_weights

    def value_path(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Output of this attention if every token attended only to itself: `out_proj(v_proj(x))` (MaskCLIP)."""
        return self.out_proj(self.v_proj(hidden_states))


class SilcMLP(nn.Module):
    def __init__(self, config: SilcVisionConfig | SilcTextConfig):
        super().__init__()
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class SilcEncoderLayer(GradientCheckpointingLayer):
    """Pre-LayerNorm block: `x + attn(ln1(x))`, then `x + mlp(ln2(x))`."""

    def __init__(self, config: SilcVisionConfig | SilcTextConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = SilcAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SilcMLP(config)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        attn_output, _ = self.self_attn(self.layer_norm1(hidden_states), attention_mask=attention_mask, **kwargs)
        hidden_states = hidden_states + attn_output
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))

    def forward_value_path(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """This block with the attention matrix replaced by the identity (each token attends to itself)."""
        hidden_states = hidden_states + self.self_attn.value_path(self.layer_norm1(hidden_states))
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class SilcEncoder(nn.Module):
    def __init__(self, config: SilcVisionConfig | SilcTextConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList([SilcEncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        hidden_states = inputs_embeds
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, **kwargs)
        return BaseModelOutput(last_hidden_state=hidden_states)


class SilcAttentionPoolingHead(nn.Module):
    """Multi-head attention pooling ("MAP", big_vision `MAPHead`): a learned probe attends over the tokens,
    then a residual MLP. No LayerNorm before the attention and no residual around it, as in big_vision."""

    def __init__(self, config: SilcVisionConfig):
        super().__init__()
        self.probe = nn.Parameter(torch.empty(1, 1, config.hidden_size))
        self.attention = SilcAttention(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SilcMLP(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        probe = self.probe.expand(hidden_states.shape[0], -1, -1)
        pooled, _ = self.attention(probe, key_value_states=hidden_states)  # (batch, 1, hidden)
        pooled = pooled + self.mlp(self.layernorm(pooled))
        return pooled[:, 0]

    def value_path(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The head applied to every token as if the probe attended to that token alone: `(batch, n, hidden)`."""
        tokens = self.attention.value_path(hidden_states)
        return tokens + self.mlp(self.layernorm(tokens))


def interpolate_position_embeddings(
    weight: torch.Tensor, num_prefix_tokens: int, height: int, width: int
) -> torch.Tensor:
    """Resize a `(prefix + side * side, hidden)` table to a `height x width` patch grid, bicubically (as in DINO
    and transformers' ViTs); prefix (class token) rows are kept. Returns `(prefix + height * width, hidden)`."""
    prefix, patch_pos = weight[:num_prefix_tokens], weight[num_prefix_tokens:]
    side = int(math.sqrt(patch_pos.shape[0]))
    if (height, width) != (side, side):
        grid = patch_pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)  # (1, hidden, side, side)
        grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
        patch_pos = grid.permute(0, 2, 3, 1).reshape(height * width, -1)
    return torch.cat([prefix, patch_pos])


class SilcVisionEmbeddings(nn.Module):
    """Patch convolution + learned position embeddings (+ a class token when `pooling_type="cls"`).

    The class token, when present, has its own position row (index 0), as in CLIP; checkpoints whose class
    token gets no position embedding (big_vision `tok`) are converted with that row set to zero.
    """

    def __init__(self, config: SilcVisionConfig):
        super().__init__()
        self.config = config
        self.patch_size = config.patch_size
        self.patch_embedding = nn.Conv2d(
            config.num_channels,
            config.hidden_size,
            kernel_size=config.patch_size,
            stride=config.patch_size,
            bias=config.patch_embedding_bias,
        )
        self.num_prefix_tokens = 1 if config.pooling_type == "cls" else 0
        if self.num_prefix_tokens:
            self.class_embedding = nn.Parameter(torch.empty(config.hidden_size))
        self.position_embedding = nn.Embedding(config.num_patches + self.num_prefix_tokens, config.hidden_size)

    def interpolate_pos_encoding(self, height: int, width: int) -> torch.Tensor:
        """Position embeddings for a `height x width` patch grid: `(1, prefix + height * width, hidden)`."""
        return interpolate_position_embeddings(
            self.position_embedding.weight, self.num_prefix_tokens, height, width
        ).unsqueeze(0)

    def forward(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        bool_masked_pos: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
    ) -> torch.Tensor:
        _, _, height, width = pixel_values.shape
        size = self.config.image_size
        if not interpolate_pos_encoding and (height, width) != (size, size):
            raise ValueError(
                f"Input image size ({height}x{width}) doesn't match the model ({size}x{size}); resize the image "
                "(the image processor does) or pass interpolate_pos_encoding=True."
            )
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"Input image size ({height}x{width}) is not a multiple of patch_size={self.patch_size}; "
                "crop or resize it to a multiple."
            )
        weight_dtype = self.patch_embedding.weight.dtype
        patches = self.patch_embedding(pixel_values.to(weight_dtype))  # (batch, hidden, grid_h, grid_w)
        grid_h, grid_w = patches.shape[-2:]
        embeddings = patches.flatten(2).transpose(1, 2)  # (batch, grid_h * grid_w, hidden)
        if bool_masked_pos is not None:  # iBOT / DINOv2: the mask token replaces the patch, before the positions
            if mask_token is None or bool_masked_pos.shape != embeddings.shape[:2]:
                raise ValueError(
                    f"bool_masked_pos of shape {tuple(bool_masked_pos.shape)} needs a mask_token and the shape "
                    f"(batch, patches) = {tuple(embeddings.shape[:2])}."
                )
            embeddings = torch.where(bool_masked_pos.unsqueeze(-1), mask_token.to(embeddings.dtype), embeddings)
        if self.num_prefix_tokens:
            cls = self.class_embedding.to(embeddings.dtype).expand(embeddings.shape[0], 1, -1)
            embeddings = torch.cat([cls, embeddings], dim=1)
        return embeddings + self.interpolate_pos_encoding(grid_h, grid_w)


class SilcTextEmbeddings(nn.Module):
    def __init__(self, config: SilcTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids: torch.LongTensor, position_ids: torch.LongTensor | None = None) -> torch.Tensor:
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[-1], device=input_ids.device).unsqueeze(0)
        return self.token_embedding(input_ids) + self.position_embedding(position_ids)


class SilcPreTrainedModel(PreTrainedModel):
    config: SilcConfig
    config_class = SilcConfig
    base_model_prefix = "silc"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["SilcTextEmbeddings", "SilcVisionEmbeddings", "SilcEncoderLayer", "SilcAttentionPoolingHead"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_record_outputs = {
        "hidden_states": SilcEncoderLayer,
        "attentions": OutputRecorder(SilcAttention, index=1, layer_name="self_attn"),
    }

    def _init_weights(self, module):
        """big_vision / SigLIP initialisation: Xavier-uniform attention and MLP weights, LeCun-normal patch and
        projection weights, position embeddings and token table with std 1/sqrt(width)."""
        super()._init_weights(module)
        if isinstance(module, SilcAttention):
            for linear in (module.q_proj, module.k_proj, module.v_proj, module.out_proj):
                init.xavier_uniform_(linear.weight)
                init.zeros_(linear.bias)
        elif isinstance(module, SilcMLP):
            init.xavier_uniform_(module.fc1.weight)
            init.xavier_uniform_(module.fc2.weight)
            init.normal_(module.fc1.bias, std=1e-6)
            init.normal_(module.fc2.bias, std=1e-6)
        elif isinstance(module, SilcVisionEmbeddings):
            width = module.position_embedding.embedding_dim
            init.lecun_normal_(module.patch_embedding.weight)
            if module.patch_embedding.bias is not None:
                init.zeros_(module.patch_embedding.bias)
            init.normal_(module.position_embedding.weight, std=width**-0.5)
            if module.num_prefix_tokens:
                init.normal_(module.class_embedding, std=width**-0.5)
        elif isinstance(module, SilcTextEmbeddings):
            width = module.position_embedding.embedding_dim
            init.normal_(module.token_embedding.weight, std=width**-0.5)
            init.normal_(module.position_embedding.weight, std=width**-0.5)
        elif isinstance(module, SilcAttentionPoolingHead):
            init.xavier_uniform_(module.probe)
        elif isinstance(module, (SilcVisionModel, SilcTextModel)) and isinstance(module.projection, nn.Linear):
            init.lecun_normal_(module.projection.weight)
            if module.projection.bias is not None:
                init.zeros_(module.projection.bias)
        elif isinstance(module, SilcModel):
            init.constant_(module.logit_scale, module.config.logit_scale_init_value)
            init.constant_(module.logit_bias, module.config.logit_bias_init_value)


def _projection(config: SilcVisionConfig | SilcTextConfig) -> nn.Module:
    if config.projection_dim is None:
        return nn.Identity()
    return nn.Linear(config.hidden_size, config.projection_dim, bias=config.projection_bias)


class SilcVisionModel(SilcPreTrainedModel):
    """The SILC image tower: ViT encoder, final LayerNorm, pooling (class token / MAP / mean) and projection."""

    config: SilcVisionConfig
    config_class = SilcVisionConfig
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _input_embed_layer = "patch_embedding"

    def __init__(self, config: SilcVisionConfig):
        super().__init__(config)
        self.embeddings = SilcVisionEmbeddings(config)
        self.pre_layernorm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.pre_layernorm else None
        )
        self.encoder = SilcEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = SilcAttentionPoolingHead(config) if config.pooling_type == "map" else None
        self.projection = _projection(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embedding

    def embed(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        bool_masked_pos: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings fed to the first block: `(batch, prefix + num_patches, hidden)`."""
        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding, bool_masked_pos, mask_token)
        return hidden_states if self.pre_layernorm is None else self.pre_layernorm(hidden_states)

    def pool(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        """Pooled representation `(batch, hidden)` from the final-normed tokens."""
        if self.config.pooling_type == "cls":
            return last_hidden_state[:, 0]
        if self.config.pooling_type == "map":
            return self.head(last_hidden_state)
        return last_hidden_state.mean(dim=1)

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        bool_masked_pos: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
        **kwargs,
    ) -> SilcVisionModelOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Images as produced by [`SilcImageProcessor`].
        interpolate_pos_encoding (`bool`):
            Resize the position embeddings to the input's patch grid, for inputs of another size.
        bool_masked_pos (`torch.BoolTensor` of shape `(batch_size, num_patches)`):
            Patches replaced by `mask_token` before the position embeddings are added (masked image modelling, as
            HF ViT's and DINOv2's argument of that name). The mask token (`(hidden_size,)`) is passed in rather than
            held: it belongs to the pretraining task (`SilcPretrainingModel`), and a saved model has none.
        """
        hidden_states = self.embed(pixel_values, interpolate_pos_encoding, bool_masked_pos, mask_token)
        encoded = self.encoder(inputs_embeds=hidden_states, **kwargs).last_hidden_state
        last_hidden_state = self.post_layernorm(encoded)
        pooled = self.pool(last_hidden_state)
        return SilcVisionModelOutput(
            image_embeds=self.projection(pooled), last_hidden_state=last_hidden_state, pooler_output=pooled
        )

    def get_dense_features(
        self,
        pixel_values: torch.Tensor,
        method: str = "value",
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        r"""
        Per-patch embeddings in the joint image-text space, `(batch_size, grid_height, grid_width, output_dim)`.
        They are *not* L2-normalised (like `image_embeds`): normalise them and the text embeddings before taking
        cosine similarities, as zero-shot segmentation does. The default `"value"` path is the one MaskCLIP found
        to segment well zero-shot; `"plain"` reads the tokens as they are.

        - `method="plain"`: each final-normed patch token goes through the image projection (MAP and class
          token skipped).
        - `method="value"`: the MaskCLIP value path. The layer that pools (the MAP head, or the last block for
          class-token and mean pooling) is applied to every patch token as if its attention matrix were the
          identity (each token attends only to itself, i.e. `out_proj(v_proj(x))` replaces attention), then
          the final norm (for the last-block case) and the projection follow as for the pooled token.

        With `output_hidden_states=True` it returns `(features, hidden_states)`: the tokens
        `(batch, prefix + num_patches, hidden)` after the embeddings and after each block that ran as usual
        (all of them, except the last one when the value path replaces it).
        """
        if method not in DENSE_METHODS:
            raise ValueError(f"method={method!r} is not supported; use one of {list(DENSE_METHODS)}.")
        hidden_states = self.embed(pixel_values, interpolate_pos_encoding)
        value_replaces_last_block = method == "value" and self.head is None
        blocks = self.encoder.layers[:-1] if value_replaces_last_block else self.encoder.layers
        all_hidden_states = [hidden_states]
        for block in blocks:
            hidden_states = block(hidden_states)
            all_hidden_states.append(hidden_states)
        if value_replaces_last_block:
            hidden_states = self.encoder.layers[-1].forward_value_path(hidden_states)
        tokens = self.post_layernorm(hidden_states)[:, self.embeddings.num_prefix_tokens :]
        if method == "value" and self.head is not None:
            tokens = self.head.value_path(tokens)
        grid_h = pixel_values.shape[-2] // self.config.patch_size
        grid_w = pixel_values.shape[-1] // self.config.patch_size
        features = self.projection(tokens).unflatten(1, (grid_h, grid_w))
        return (features, tuple(all_hidden_states)) if output_hidden_states else features


class SilcTextModel(SilcPreTrainedModel):
    """The SILC text tower: token + position embeddings, encoder, final LayerNorm, pooling and projection."""

    config: SilcTextConfig
    config_class = SilcTextConfig
    input_modalities = ("text",)
    _input_embed_layer = "token_embedding"

    def __init__(self, config: SilcTextConfig):
        super().__init__(config)
        self.embeddings = SilcTextEmbeddings(config)
        self.encoder = SilcEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.projection = _projection(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Module):
        self.embeddings.token_embedding = value

    def pad_to_fixed_length(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.LongTensor, torch.Tensor | None]:
        """Right-pad to `max_position_embeddings` with `pad_token_id` (towers trained on fixed-length text);
        the result equals what the tokenizer gives with `padding="max_length"`."""
        length, max_length = input_ids.shape[-1], self.config.max_position_embeddings
        if length > max_length:
            raise ValueError(
                f"Text input has {length} tokens but the text tower has max_position_embeddings={max_length}; "
                f"tokenize with truncation=True, max_length={max_length}. In the stock zero-shot pipeline, shorten "
                "the label or template, or pass pipeline_class=silc_hf.SilcZeroShotImageClassificationPipeline "
                "(it truncates, naming the label)."
            )
        if not self.config.fixed_length_padding or length == max_length:
            return input_ids, attention_mask
        input_ids = F.pad(input_ids, (0, max_length - length), value=self.config.pad_token_id)
        if attention_mask is not None:
            attention_mask = F.pad(attention_mask, (0, max_length - length), value=0)
        return input_ids, attention_mask

    def pool(
        self, last_hidden_state: torch.Tensor, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Pooled representation `(batch, hidden)` according to `config.pooling_type`."""
        pooling = self.config.pooling_type
        if pooling == "last":
            return last_hidden_state[:, -1]
        if pooling == "first":
            return last_hidden_state[:, 0]
        if pooling == "mean":
            if attention_mask is None:
                return last_hidden_state.mean(dim=1)
            weights = attention_mask.to(last_hidden_state.dtype).unsqueeze(-1)
            return (last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1)
        if pooling == "eos":
            is_eos = input_ids == self.config.eos_token_id
            message = (
                f"pooling_type='eos' needs eos_token_id={self.config.eos_token_id} in every sequence; tokenize "
                "with the model's tokenizer (it appends EOS) and do not truncate it away."
            )
            every_row_has_eos = is_eos.any(dim=-1).all()
            if input_ids.device.type == "cpu" and not torch.compiler.is_compiling():
                if not every_row_has_eos:  # free on the CPU: the clear error
                    raise ValueError(message)
            else:  # on an accelerator or compiled: checked on the device, without a host sync or a graph break
                torch._assert_async(every_row_has_eos, message)
            positions = is_eos.int().argmax(dim=-1)  # first EOS
        else:  # "argmax": the highest token id is EOS in OpenAI CLIP's vocabulary
            positions = input_ids.argmax(dim=-1)
        return last_hidden_state[torch.arange(last_hidden_state.shape[0], device=positions.device), positions]

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> SilcTextModelOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): token ids.
        attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
            1 for tokens, 0 for padding. Ignored when `config.use_padding_mask=False` (big_vision towers).
        """
        if input_ids is None:
            raise ValueError("SilcTextModel needs input_ids; tokenize the text with the model's processor.")
        input_ids, attention_mask = self.pad_to_fixed_length(input_ids, attention_mask)
        hidden_states = self.embeddings(input_ids, position_ids=position_ids)
        padding_mask = attention_mask if self.config.use_padding_mask else None
        if self.config.causal_attention:
            mask = create_causal_mask(
                config=self.config, inputs_embeds=hidden_states, attention_mask=padding_mask, cache=None
            )
        else:
            mask = create_bidirectional_mask(
                config=self.config, inputs_embeds=hidden_states, attention_mask=padding_mask
            )
        encoded = self.encoder(inputs_embeds=hidden_states, attention_mask=mask, **kwargs).last_hidden_state
        last_hidden_state = self.final_layer_norm(encoded)
        pooled = self.pool(last_hidden_state, input_ids, padding_mask)
        return SilcTextModelOutput(
            text_embeds=self.projection(pooled), last_hidden_state=last_hidden_state, pooler_output=pooled
        )


class SilcModel(SilcPreTrainedModel):
    """SILC image-text model: two towers, a learned logit scale and bias, and the softmax or sigmoid loss."""

    config: SilcConfig

    def __init__(self, config: SilcConfig):
        super().__init__(config)
        self.text_model = SilcTextModel._from_config(config.text_config)
        self.vision_model = SilcVisionModel._from_config(config.vision_config)
        self.logit_scale = nn.Parameter(torch.empty(1))  # log of the scale, as in CLIP and big_vision's `t`
        # A softmax over texts (or images) ignores a shared bias: it stays fixed, not drifting with Adam's noise.
        self.logit_bias = nn.Parameter(torch.empty(1), requires_grad=config.loss_type == "sigmoid")
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Module):
        self.text_model.embeddings.token_embedding = value

    def save_pretrained(self, save_directory, *args, **kwargs):
        """As `PreTrainedModel.save_pretrained`; a folder exported with its code also maps
        `AutoModelForZeroShotImageClassification` (which `register_for_auto_class` cannot add: it records one
        Auto class per model class), so that the zero-shot pipeline loads it with `trust_remote_code=True`."""
        if self._auto_class is not None:
            target = f"{type(self).__module__.rsplit('.', 1)[-1]}.{type(self).__name__}"
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.update({"AutoModel": target, "AutoModelForZeroShotImageClassification": target})
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> SilcTextModelOutput:
        """Text tower output whose `pooler_output` is the projected (unnormalised) text embedding, as
        `CLIPModel.get_text_features` in transformers 5; `text_embeds` holds the same tensor."""
        outputs = self.text_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs
        )
        outputs.pooler_output = outputs.text_embeds
        return outputs

    @can_return_tuple
    def get_image_features(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, **kwargs
    ) -> SilcVisionModelOutput:
        """Image tower output whose `pooler_output` is the projected (unnormalised) image embedding, as
        `CLIPModel.get_image_features` in transformers 5; `image_embeds` holds the same tensor."""
        outputs = self.vision_model(
            pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs
        )
        outputs.pooler_output = outputs.image_embeds
        return outputs

    def get_dense_image_features(
        self, pixel_values: torch.Tensor, method: str = "value", interpolate_pos_encoding: bool = False
    ) -> torch.Tensor:
        """Per-patch image embeddings `(batch, grid_h, grid_w, output_dim)`, not normalised; see
        [`SilcVisionModel.get_dense_features`] for the `"value"` (default) and `"plain"` methods."""
        return self.vision_model.get_dense_features(pixel_values, method, interpolate_pos_encoding)

    def logits(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """`(num_images, num_texts)` logits from L2-normalised embeddings."""
        return image_text_logits(image_embeds, text_embeds, self.logit_scale, self.logit_bias)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs,
    ) -> SilcOutput:
        r"""
        return_loss (`bool`, *optional*):
            Return the image-text loss of `config.loss_type` (row i of the batch is the positive of column i).
        """
        vision_outputs = self.vision_model(
            pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs
        )
        text_outputs = self.text_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs
        )
        image_embeds = F.normalize(vision_outputs.image_embeds, dim=-1)
        text_embeds = F.normalize(text_outputs.text_embeds, dim=-1)
        logits_per_image = self.logits(image_embeds, text_embeds)
        loss = contrastive_loss(logits_per_image, self.config.loss_type) if return_loss else None
        return SilcOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.t(),
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
        )


class SilcForImageClassification(SilcPreTrainedModel):
    """The SILC image tower with a linear classifier on its pooled representation (as transformers'
    `SiglipForImageClassification`): `config.num_labels`, `id2label` and `problem_type` (single-label,
    multi-label or regression loss) as for any transformers image classifier. Loads from any SILC folder: the
    image tower's weights are kept, the text tower and logit scale are left out, the classifier starts new."""

    main_input_name = "pixel_values"
    input_modalities = ("image",)
    # a SILC image-text folder also holds the text tower: not part of this model, not worth a warning
    _keys_to_ignore_on_load_unexpected = [r"^text_model\.", r"^logit_(scale|bias)$"]

    def __init__(self, config: SilcConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vision_model = SilcVisionModel._from_config(config.vision_config)
        hidden_size = config.vision_config.hidden_size
        self.classifier = nn.Linear(hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.vision_model.embeddings.patch_embedding

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs,
    ) -> ImageClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)` or `(batch_size, num_labels)`, *optional*):
            Class indices (single-label), multi-hot targets (multi-label) or values (regression, `num_labels=1`);
            the loss follows `config.problem_type`, inferred from the labels when unset.
        """
        outputs = self.vision_model(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        logits = self.classifier(outputs.pooler_output)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class SilcBackbone(BackboneMixin, SilcPreTrainedModel):
    """The SILC image tower as a transformers backbone (`AutoBackbone`; follows `Dinov2Backbone`): one stage per
    block (`stem` = the embeddings, `stage1` ... `stageN`), feature maps `(batch, hidden, grid_h, grid_w)`
    of the stages in `config.out_features`, after the final LayerNorm if `config.apply_layernorm`. Dense
    heads that take a `backbone_config` (UperNet, DPT, ...) accept a `SilcVisionConfig`. Loads the image tower
    of any SILC folder."""

    config: SilcVisionConfig
    config_class = SilcVisionConfig
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _keys_to_ignore_on_load_unexpected = [r"^text_model\.", r"^logit_(scale|bias)$", r"head\.", r"projection\."]

    base_model_prefix = "vision_model"  # a SILC image-text folder's image tower loads without its prefix

    def __init__(self, config: SilcVisionConfig | SilcConfig, out_features=None, out_indices=None):
        if isinstance(config, SilcConfig):  # AutoBackbone.from_pretrained(a SILC image-text folder, ...)
            config = config.vision_config
        if out_features is not None or out_indices is not None:
            config.set_output_features_output_indices(out_features, out_indices)
        super().__init__(config)
        self.num_features = [config.hidden_size] * (config.num_hidden_layers + 1)
        self.embeddings = SilcVisionEmbeddings(config)
        self.pre_layernorm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.pre_layernorm else None
        )
        self.encoder = SilcEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embedding

    has_attentions = False

    @can_return_tuple
    @filter_output_hidden_states
    def forward(self, pixel_values: torch.Tensor, **kwargs) -> BackboneOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`): any size that
            is a multiple of the patch size (position embeddings are interpolated to the grid).
        """
        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=True)
        if self.pre_layernorm is not None:
            hidden_states = self.pre_layernorm(hidden_states)
        stages = [hidden_states]  # stem, then one per block
        for layer in self.encoder.layers:
            hidden_states = layer(hidden_states)
            stages.append(hidden_states)
        prefix = self.embeddings.num_prefix_tokens
        grid_h, grid_w = (side // self.config.patch_size for side in pixel_values.shape[-2:])
        feature_maps = ()
        for stage, hidden_state in zip(self.stage_names, stages):
            if stage not in self.out_features:
                continue
            if self.config.apply_layernorm:
                hidden_state = self.post_layernorm(hidden_state)
            if self.config.reshape_hidden_states:
                hidden_state = hidden_state[:, prefix:].unflatten(1, (grid_h, grid_w)).permute(0, 3, 1, 2).contiguous()
            feature_maps += (hidden_state,)
        return BackboneOutput(feature_maps=feature_maps, hidden_states=tuple(stages))


__all__ = [
    "SilcBackbone",
    "SilcForImageClassification",
    "SilcModel",
    "SilcPreTrainedModel",
    "SilcTextModel",
    "SilcVisionModel",
]
