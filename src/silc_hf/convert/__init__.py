"""Converters from other checkpoints to SILC folders (`python -m silc_hf.convert --help`)."""

from .common import ConversionReport, load_converted_state_dict
from .hf import clip_config_to_silc, from_hf_clip, from_hf_siglip, siglip_config_to_silc, silc_processor_from

__all__ = [
    "ConversionReport",
    "clip_config_to_silc",
    "from_hf_clip",
    "from_hf_siglip",
    "load_converted_state_dict",
    "siglip_config_to_silc",
    "silc_processor_from",
]
