"""Class names as prompts: checks of what users pass, tokenisation as the text tower was trained, and CLIP's
prompt ensembling."""

import torch
import torch.nn.functional as F
from transformers.utils import logging

from ..configuration_silc import DEFAULT_PROMPT_TEMPLATES
from .finite import ensure_finite

logger = logging.get_logger(__name__)


def check_labels_and_templates(candidate_labels, templates) -> tuple[list[str], list[str]]:
    """Zero-shot inputs as lists, or a `ValueError` that says what to pass (the pipelines' common checks)."""
    if isinstance(candidate_labels, str):
        raise ValueError(
            f"candidate_labels={candidate_labels!r} is a string; pass a list of labels, e.g. "
            f"{[label.strip() for label in candidate_labels.split(',')]}."
        )
    labels = list(candidate_labels or [])
    if not labels:
        raise ValueError("candidate_labels is empty; pass at least one label, e.g. ['cat', 'grass', 'sky'].")
    templates = [templates] if isinstance(templates, str) else list(templates)
    for template in templates:
        if "{}" not in template:
            raise ValueError(
                f"hypothesis_template={template!r} has no '{{}}' for the label, so every label would get the same "
                "prompt; use e.g. 'a photo of a {}.'"
            )
    return labels, templates


def warn_if_truncated(tokenizer, prompts: list[str], labels: list[str], max_length: int) -> None:
    """Name the labels whose prompts do not fit the text tower (they are truncated to `max_length` tokens)."""
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    too_long = sorted({label for label, length in zip(labels, lengths) if length > max_length})
    if too_long:
        logger.warning(
            f"Prompts for {too_long} are longer than the text tower's {max_length} tokens and are truncated to it."
        )


def tokenize_class_prompts(tokenizer, text_config, class_names: list[str], templates=DEFAULT_PROMPT_TEMPLATES) -> dict:
    """`input_ids` and `attention_mask` of every class name in every template, class-major
    `(num_classes * num_templates, seq)`, padded as the text tower was trained; prompts longer than the tower
    are truncated, with a warning naming the class."""
    class_names, templates = check_labels_and_templates(class_names, templates)
    max_length = text_config.max_position_embeddings
    padding = "max_length" if text_config.fixed_length_padding else True
    prompts = [template.format(name) for name in class_names for template in templates]
    warn_if_truncated(tokenizer, prompts, [name for name in class_names for _ in templates], max_length)
    tokens = tokenizer(prompts, padding=padding, truncation=True, max_length=max_length, return_tensors="pt")
    return {key: value for key, value in tokens.items() if key in ("input_ids", "attention_mask")}


@torch.no_grad()
def encode_class_names(model, tokenizer, class_names: list[str], templates=DEFAULT_PROMPT_TEMPLATES) -> torch.Tensor:
    """One L2-normalised embedding per class: the mean of its prompts' normalised embeddings, renormalised
    (CLIP's prompt ensembling); prompts longer than the text tower are truncated, with a warning naming the
    class. Returns `(num_classes, embed_dim)`."""
    templates = check_labels_and_templates(class_names, templates)[1]
    tokens = tokenize_class_prompts(tokenizer, model.config.text_config, class_names, templates)
    tokens = {key: value.to(model.device) for key, value in tokens.items()}
    embeds = F.normalize(model.get_text_features(**tokens).text_embeds.float(), dim=-1)
    embeds = ensure_finite(embeds.view(len(class_names), len(templates), -1), class_names, "text embeddings").mean(1)
    return F.normalize(embeds, dim=-1)
