"""Image-text contrastive losses (CLIP softmax and SigLIP sigmoid).

Both take L2-normalised embeddings and the *log* logit scale, so that the model's `return_loss` path and the
trainer share one implementation.
"""

import torch
import torch.nn.functional as F


def image_text_logits(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor
) -> torch.Tensor:
    """Scaled cosine similarities `(num_images, num_texts)`: `exp(logit_scale) * <image, text> + logit_bias`."""
    return image_embeds @ text_embeds.t() * logit_scale.exp() + logit_bias


def softmax_contrastive_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy; row i's positive is column i (Radford et al. 2021, open_clip `ClipLoss`)."""
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.t(), labels)) / 2


def sigmoid_contrastive_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss, summed over texts and averaged over images (Zhai et al. 2023, big_vision)."""
    labels = 2 * torch.eye(*logits_per_image.shape, device=logits_per_image.device) - 1
    return -F.logsigmoid(labels * logits_per_image).sum() / logits_per_image.shape[0]


def contrastive_loss(logits_per_image: torch.Tensor, loss_type: str) -> torch.Tensor:
    """The image-text loss named by `SilcConfig.loss_type` (`"softmax"` or `"sigmoid"`)."""
    if loss_type == "softmax":
        return softmax_contrastive_loss(logits_per_image)
    if loss_type == "sigmoid":
        return sigmoid_contrastive_loss(logits_per_image)
    raise ValueError(f"loss_type={loss_type!r} is not supported; use 'softmax' or 'sigmoid'.")
