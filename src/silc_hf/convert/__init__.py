"""Converters from other checkpoints to SILC folders (`python -m silc_hf.convert --help`)."""

from .big_vision import from_big_vision
from .common import ConversionReport, load_converted_state_dict
from .hf import clip_config_to_silc, from_hf_clip, from_hf_siglip, siglip_config_to_silc, silc_processor_from
from .open_clip import from_open_clip, open_clip_config_to_silc

__all__ = [
    "ConversionReport",
    "clip_config_to_silc",
    "from_big_vision",
    "from_hf_clip",
    "from_hf_siglip",
    "from_open_clip",
    "load_converted_state_dict",
    "open_clip_config_to_silc",
    "siglip_config_to_silc",
    "silc_processor_from",
]
