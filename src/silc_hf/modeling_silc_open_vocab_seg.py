"""Open-vocabulary semantic segmentation with SILC: the two towers and a cost-aggregation decoder after CAT-Seg
(Cho et al., "CAT-Seg: Cost Aggregation for Open-Vocabulary Semantic Segmentation", CVPR 2024).

    image ──► dense features (B, h, w, D) ─┐
                                           ├─► cost volume: cosines (B, C, T, h, w) ─► 7x7 conv: T → hidden
    class names x T prompts ──► (C, T, D) ─┘
    ─► N x [spatial aggregation (per class map, guided by the image features),
            class aggregation (attention across classes, guided by the text, no positions)]
    ─► upsampling x2 per step, guided by intermediate image-tower tokens ─► one logit per class and pixel

The class aggregation has no positional order, so any number and any order of classes works at inference and
permuting the class list permutes the logits. Guidance enters every layer as a sum of linear maps (a linear map
of a concatenation), so it is computed once per image or per class and broadcast, never copied per class.
"""

import math
import re

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import SemanticSegmenterOutput
from transformers.utils import can_return_tuple

from .configuration_silc import SilcConfig, SilcOpenVocabularySegmentationConfig
from .modeling_silc import SilcModel, SilcPreTrainedModel

TRAINABLE_BACKBONE = ("none", "attention", "all")


class SilcSpatialAggregation(nn.Module):
    """A ConvNeXt block over each class's cost map: depthwise 7x7 conv, LayerNorm, MLP whose input also takes the
    image guidance (CAT-Seg's spatial aggregation, with a convolution in place of its Swin blocks)."""

    def __init__(self, hidden_size: int, guidance_size: int):
        super().__init__()
        self.depthwise = nn.Conv2d(hidden_size, hidden_size, kernel_size=7, padding=3, groups=hidden_size)
        self.norm = nn.LayerNorm(hidden_size)
        self.fc1 = nn.Linear(hidden_size, 4 * hidden_size)
        self.fc1_guidance = nn.Linear(guidance_size, 4 * hidden_size, bias=False)
        self.fc2 = nn.Linear(4 * hidden_size, hidden_size)

    def forward(self, cost: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """`cost` (B, C, h, w, hidden), `guidance` (B, h, w, guidance_size) -> (B, C, h, w, hidden)."""
        batch, classes, height, width, hidden = cost.shape
        maps = cost.reshape(batch * classes, height, width, hidden).permute(0, 3, 1, 2)
        mixed = self.depthwise(maps).permute(0, 2, 3, 1).reshape(cost.shape)
        mixed = self.fc1(self.norm(mixed)) + self.fc1_guidance(guidance)[:, None]
        return cost + self.fc2(F.gelu(mixed))


class SilcClassAggregation(nn.Module):
    """A pre-norm transformer layer across the classes of each pixel; queries and keys also see the text
    guidance. No positional encoding: equivariant to the order of the classes."""

    def __init__(self, hidden_size: int, guidance_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(hidden_size)
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.query_guidance = nn.Linear(guidance_size, hidden_size, bias=False)
        self.key_guidance = nn.Linear(guidance_size, hidden_size, bias=False)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.fc1 = nn.Linear(hidden_size, 4 * hidden_size)
        self.fc2 = nn.Linear(4 * hidden_size, hidden_size)

    def forward(self, cost: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """`cost` (B, C, h, w, hidden), `guidance` (C, guidance_size) -> (B, C, h, w, hidden)."""
        batch, classes, height, width, hidden = cost.shape
        tokens = cost.permute(0, 2, 3, 1, 4).reshape(-1, classes, hidden)  # (B*h*w, C, hidden): classes are tokens
        normed = self.norm1(tokens)
        heads = lambda x: x.unflatten(-1, (self.num_heads, -1)).transpose(-3, -2)  # noqa: E731 (.., heads, C, d)
        query = heads(self.query(normed) + self.query_guidance(guidance))
        key = heads(self.key(normed) + self.key_guidance(guidance))
        attended = F.scaled_dot_product_attention(query, key, heads(self.value(normed)))
        tokens = tokens + self.out(attended.transpose(-3, -2).flatten(-2))
        tokens = tokens + self.fc2(F.gelu(self.fc1(self.norm2(tokens))))
        return tokens.reshape(batch, height, width, classes, hidden).permute(0, 3, 1, 2, 4)


class SilcUpsamplingBlock(nn.Module):
    """x2 bilinear upsampling of every class map, then two 3x3 convs whose input also takes image-tower tokens
    upsampled to the same resolution by a transposed convolution (CAT-Seg's guided upsampling)."""

    def __init__(self, in_channels: int, out_channels: int, tower_hidden_size: int, scale: int):
        super().__init__()
        self.guidance = nn.ConvTranspose2d(tower_hidden_size, out_channels, kernel_size=scale, stride=scale)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.conv1_guidance = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm = nn.GroupNorm(1, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, maps: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """`maps` (B, C, channels, h, w), `tokens` (B, tower_hidden, grid_h, grid_w) -> (B, C, out, 2h, 2w)."""
        batch, classes = maps.shape[:2]
        maps = F.interpolate(maps.flatten(0, 1), scale_factor=2, mode="bilinear", align_corners=False)
        guidance = self.conv1_guidance(self.guidance(tokens))  # (B, out, 2h, 2w), once per image
        maps = self.conv1(maps).unflatten(0, (batch, classes)) + guidance[:, None]
        maps = F.gelu(self.norm(maps.flatten(0, 1)))
        return F.gelu(self.conv2(maps)).unflatten(0, (batch, classes))


class SilcForOpenVocabularySegmentation(SilcPreTrainedModel):
    """SILC towers + CAT-Seg-style cost aggregation: per-class logits at image resolution for any list of class
    names (see the module docstring for the architecture).

    Class names reach the model as tokenised prompts, `input_ids` of shape `(num_classes * num_templates, seq)`
    in class-major order (class 0 with every template, then class 1, ...), one template per entry of
    `config.prompt_templates`; [`silc_hf.zero_shot.tokenize_class_prompts`] builds them. Their text
    embeddings are cached per class set while they cannot change (no gradient flows to the text tower); the cache
    is cleared whenever the model switches between `train()` and `eval()`.
    """

    config: SilcOpenVocabularySegmentationConfig
    config_class = SilcOpenVocabularySegmentationConfig
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")

    def __init__(self, config: SilcOpenVocabularySegmentationConfig):
        super().__init__(config)
        silc_config: SilcConfig = config.silc_config
        vision = silc_config.vision_config
        hidden, guidance = config.decoder_hidden_size, config.guidance_size
        self.silc = SilcModel._from_config(silc_config)
        self.cost_embedding = nn.Conv2d(len(config.prompt_templates), hidden, kernel_size=7, padding=3)
        self.image_guidance = nn.Linear(silc_config.projection_dim, guidance)
        self.text_guidance = nn.Linear(silc_config.projection_dim, guidance)
        self.aggregation = nn.ModuleList()
        for _ in range(config.num_aggregation_layers):
            self.aggregation.append(SilcSpatialAggregation(hidden, guidance))
            self.aggregation.append(SilcClassAggregation(hidden, guidance, config.num_attention_heads))
        channels = [hidden, *config.upsampling_sizes]
        self.upsampling = nn.ModuleList(
            SilcUpsamplingBlock(channels[i], channels[i + 1], vision.hidden_size, scale=2 ** (i + 1))
            for i in range(len(config.upsampling_sizes))
        )
        self.classifier = nn.Conv2d(channels[-1], 1, kernel_size=3, padding=1)
        self._class_embedding_cache: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = []
        self._tower_modules = frozenset(self.silc.modules())  # for _init_weights: the rest is the decoder
        self.post_init()
        self.set_trainable_backbone("all")

    def _init_weights(self, module):
        """The towers as `SilcModel`; the decoder's convolutions and linears with PyTorch's default
        (Kaiming-uniform) scale rather than N(0, 0.02), which shrinks the signal through the upsampling convs."""
        super()._init_weights(module)
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)) and module not in self._tower_modules:
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                init.zeros_(module.bias)

    @classmethod
    def from_silc_pretrained(
        cls, pretrained_model_name_or_path, trainable_backbone: str = "attention", **config_kwargs
    ) -> "SilcForOpenVocabularySegmentation":
        """A new decoder on the towers of a SILC folder (or Hub id; also a converted CLIP or SigLIP). The prompt
        templates default to the ones the SILC model was evaluated with (`zero_shot_templates` in its config),
        else CAT-Seg-like photo prompts; `config_kwargs` set any other field of the config."""
        silc = SilcModel.from_pretrained(pretrained_model_name_or_path)
        if silc.config.zero_shot_templates and "prompt_templates" not in config_kwargs:
            config_kwargs["prompt_templates"] = list(silc.config.zero_shot_templates)
        config = SilcOpenVocabularySegmentationConfig(silc_config=silc.config.to_dict(), **config_kwargs)
        model = cls(config)
        model.silc.load_state_dict(silc.state_dict())
        model.set_trainable_backbone(trainable_backbone)
        return model

    def set_trainable_backbone(self, parts: str) -> None:
        """Which tower weights train (the decoder always does): `"none"`, `"attention"` (the query and value
        projections of every block of both towers, as CAT-Seg fine-tunes them) or `"all"`. Weights the dense
        path never uses stay frozen in every case (so that none waits for a gradient, as DDP requires): the logit
        scale and bias, and what the value path bypasses (the MAP probe and its query/key, or the last image
        block's query/key when that block is replaced)."""
        if parts not in TRAINABLE_BACKBONE:
            raise ValueError(f"trainable_backbone={parts!r} is not supported; use one of {list(TRAINABLE_BACKBONE)}.")
        attention = re.compile(r"^(text|vision)_model\.encoder\.layers\.\d+\.self_attn\.(q|v)_proj\.")
        unused = self._unused_tower_parameters()
        for name, parameter in self.silc.named_parameters():
            wanted = parts == "all" or (parts == "attention" and attention.match(name) is not None)
            parameter.requires_grad_(wanted and name not in unused)

    def _unused_tower_parameters(self) -> set[str]:
        """Names (in `self.silc`) of the weights that the cost volume and the guidance never read."""
        vision = self.config.silc_config.vision_config
        if self.config.dense_method == "plain" and vision.pooling_type == "map":
            bypassed = ("vision_model.head.",)
        elif self.config.dense_method == "plain":
            bypassed = ()
        elif vision.pooling_type == "map":
            bypassed = (
                "vision_model.head.probe",
                "vision_model.head.attention.q_proj.",
                "vision_model.head.attention.k_proj.",
            )
        else:
            last = f"vision_model.encoder.layers.{vision.num_hidden_layers - 1}.self_attn."
            bypassed = (last + "q_proj.", last + "k_proj.")
        return {name for name, _ in self.silc.named_parameters() if name.startswith(("logit_", *bypassed))}

    def train(self, mode: bool = True):
        self._class_embedding_cache = []
        return super().train(mode)

    def get_class_embeddings(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised prompt embeddings `(num_classes, num_templates, projection_dim)` of class-major
        `input_ids` `(num_classes * num_templates, seq)`; cached per class set while the text tower gets no
        gradient."""
        num_templates = len(self.config.prompt_templates)
        if input_ids.dim() != 2 or input_ids.shape[0] % num_templates:
            raise ValueError(
                f"input_ids has shape {tuple(input_ids.shape)}; pass (num_classes * {num_templates}, seq): every class "
                f"with each of the config's {num_templates} prompt templates, class-major "
                "(silc_hf.zero_shot.tokenize_class_prompts builds it)."
            )
        cacheable = not (torch.is_grad_enabled() and any(p.requires_grad for p in self.silc.text_model.parameters()))
        if cacheable:
            for ids, mask, embeds in self._class_embedding_cache:
                same_mask = (mask is None) == (attention_mask is None) and (
                    mask is None or torch.equal(mask, attention_mask)
                )
                if ids.shape == input_ids.shape and torch.equal(ids, input_ids) and same_mask:
                    return embeds
        text_embeds = self.silc.get_text_features(input_ids=input_ids, attention_mask=attention_mask).text_embeds
        embeds = F.normalize(text_embeds, dim=-1).unflatten(0, (-1, num_templates))
        if cacheable:
            self._class_embedding_cache = [*self._class_embedding_cache[-7:], (input_ids, attention_mask, embeds)]
        return embeds

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        class_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> SemanticSegmenterOutput:
        r"""
        input_ids (`torch.LongTensor` of shape `(num_classes * num_templates, sequence_length)`):
            The class names' prompts, class-major, shared by every image of the batch.
        class_embeds (`torch.FloatTensor` of shape `(num_classes, num_templates, projection_dim)`, *optional*):
            Normalised prompt embeddings from [`get_class_embeddings`], instead of `input_ids`.
        labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
            Class index of every pixel (`config.ignore_index` for none); gives the per-pixel cross-entropy.

        Returns `logits` of shape `(batch_size, num_classes, height, width)`, at the resolution of `pixel_values`.
        """
        if class_embeds is None:
            if input_ids is None:
                raise ValueError("Pass the class names' prompts as input_ids (or their embeddings as class_embeds).")
            class_embeds = self.get_class_embeddings(input_ids, attention_mask)
        dense, hidden_states = self.silc.vision_model.get_dense_features(
            pixel_values, self.config.dense_method, interpolate_pos_encoding=True, output_hidden_states=True
        )
        dense = F.normalize(dense, dim=-1)  # (B, h, w, D)
        batch, height, width, _ = dense.shape
        cost = torch.einsum("bhwd,ctd->bcthw", dense, class_embeds)  # (B, C, T, h, w): cosine similarities
        classes = cost.shape[1]
        cost = self.cost_embedding(cost.flatten(0, 1)).unflatten(0, (batch, classes)).permute(0, 1, 3, 4, 2)
        image_guidance = self.image_guidance(dense)  # (B, h, w, guidance)
        text_guidance = self.text_guidance(F.normalize(class_embeds.mean(dim=1), dim=-1))  # (C, guidance)
        for layer in self.aggregation:
            guidance = image_guidance if isinstance(layer, SilcSpatialAggregation) else text_guidance
            cost = layer(cost, guidance)
        maps = cost.permute(0, 1, 4, 2, 3)  # (B, C, hidden, h, w)
        prefix = self.silc.vision_model.embeddings.num_prefix_tokens
        for block, layer in zip(self.upsampling, self.config.guidance_layers):
            tokens = hidden_states[layer][:, prefix:].unflatten(1, (height, width)).permute(0, 3, 1, 2)
            maps = block(maps, tokens)
        logits = self.classifier(maps.flatten(0, 1)).unflatten(0, (batch, classes))[:, :, 0]
        logits = F.interpolate(logits, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)
        loss = None
        if labels is not None:
            loss = segmentation_loss(logits, labels, self.config.ignore_index)
        return SemanticSegmenterOutput(loss=loss, logits=logits)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean per-pixel cross-entropy over the labelled pixels, in float32; 0 (not NaN) when none is labelled."""
    total = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum")
    return total / (labels != ignore_index).sum().clamp(min=1)


__all__ = ["SilcForOpenVocabularySegmentation"]
