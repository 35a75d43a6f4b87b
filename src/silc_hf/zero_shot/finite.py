"""Non-finite model outputs stop zero-shot inference with an error that names the input, instead of a ranking or a
label map silently computed from NaN (a model saved after a diverged training step gives NaN for every input)."""

from collections.abc import Sequence

import torch


def ensure_finite(values: torch.Tensor, inputs: Sequence, what: str) -> torch.Tensor:
    """Return `values` (one row per entry of `inputs`) if every number is finite; otherwise raise `ValueError` naming
    the inputs whose rows are not (the first five) and `what` was computed."""
    bad = ~torch.isfinite(values.reshape(len(inputs), -1)).all(dim=1)
    if bad.any():
        names = [inputs[i] for i in bad.nonzero().flatten().tolist()]
        shown = ", ".join(repr(name) for name in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise ValueError(
            f"The model's {what} for {shown} are not finite (NaN or inf), so no score can rank them; check the "
            "model's weights (e.g. a checkpoint saved after a diverged training step) and these inputs."
        )
    return values
