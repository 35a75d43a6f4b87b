"""Data that training and evaluation share: datasets by name (`load_image_text_dataset`), RGB conversion, and the
package's generated scenes (`silc_hf.data.scenes`)."""

import importlib
import warnings

from .loading import BadSampleError, load_image_text_dataset, to_rgb

# Names that `silc_hf.data` held before the package was laid out by role: the multi-crop pipeline now lives in
# `silc_hf.training.data`, its arguments in `silc_hf.training.arguments`.
_MOVED = {
    "SilcDataArguments": "silc_hf.training.arguments",
    "SamplePreparer": "silc_hf.training.data",
    "MultiCropDataset": "silc_hf.training.data",
    "StreamingMultiCropDataset": "silc_hf.training.data",
    "SilcMultiCropCollator": "silc_hf.training.data",
    "undecoded": "silc_hf.training.data",
    "expand_braces": "silc_hf.data.loading",
    "check_hub_dataset": "silc_hf.data.loading",
    "looks_like_a_local_path": "silc_hf.data.loading",
}


def __getattr__(name: str):
    if name in _MOVED:
        warnings.warn(f"silc_hf.data.{name} moved to {_MOVED[name]}.{name}; import it from there.", FutureWarning, 2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'silc_hf.data' has no attribute {name!r}")


__all__ = ["BadSampleError", "load_image_text_dataset", "to_rgb"]
