"""Image processor for SILC: Pillow/NumPy only (no torchvision).

Defaults follow big_vision's SigLIP/SILC preprocessing (`resize(224)|value_range(-1, 1)`): a bicubic resize
of the whole image to 224x224 and values in [-1, 1] (mean = std = 0.5). CLIP-style preprocessing (shortest
edge + center crop, OpenAI mean/std) is the same class with other arguments, as written by the converters.
"""

from transformers.image_processing_backends import PilBackend
from transformers.image_utils import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, PILImageResampling


class SilcImageProcessor(PilBackend):
    """Resize (and optionally center-crop), rescale to [0, 1], normalise; returns `pixel_values` (NCHW)."""

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_STANDARD_MEAN
    image_std = IMAGENET_STANDARD_STD
    size = {"height": 224, "width": 224}
    default_to_square = False
    do_resize = True
    do_center_crop = False
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True


__all__ = ["SilcImageProcessor"]
