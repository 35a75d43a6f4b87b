"""Shared machinery for checkpoint converters: strict loading and a report of what was done with each key."""

from dataclasses import dataclass, field

import torch
from transformers.utils import logging

logger = logging.get_logger(__name__)


@dataclass
class ConversionReport:
    """What a converter did with every key: consumed, skipped (with the reason), adapted (e.g. resampled), or
    left at its init value."""

    source: str
    consumed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    initialised: dict[str, str] = field(default_factory=dict)
    adapted: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"Converted {self.source}: {len(self.consumed)} source keys consumed."]
        if self.skipped:
            lines.append(f"{len(self.skipped)} source keys skipped:")
            lines += [f"  {key}: {reason}" for key, reason in sorted(self.skipped.items())]
        if self.adapted:
            lines += [f"adapted {key}: {reason}" for key, reason in sorted(self.adapted.items())]
        if self.initialised:
            lines.append(f"{len(self.initialised)} target keys not in the source, left at their initial value:")
            lines += [f"  {key}: {reason}" for key, reason in sorted(self.initialised.items())]
        return "\n".join(lines)


def load_converted_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], report: ConversionReport):
    """Load `state_dict` into `model`, requiring an exact match of keys and shapes.

    Target keys listed in `report.initialised` may be absent. Raises `KeyError` for a missing or unexpected
    key and `ValueError` for a shape mismatch, naming the key.
    """
    target = model.state_dict()
    missing = sorted(set(target) - set(state_dict) - set(report.initialised))
    if missing:
        raise KeyError(f"Converted checkpoint lacks {len(missing)} model keys, e.g. {missing[:5]} ({report.source}).")
    unexpected = sorted(set(state_dict) - set(target))
    if unexpected:
        raise KeyError(f"Converted checkpoint has {len(unexpected)} keys the model lacks, e.g. {unexpected[:5]}.")
    for key, value in state_dict.items():
        if tuple(value.shape) != tuple(target[key].shape):
            raise ValueError(
                f"Shape mismatch for {key}: converted {tuple(value.shape)}, model expects {tuple(target[key].shape)} "
                f"({report.source})."
            )
    model.load_state_dict(state_dict, strict=False)
    logger.info(str(report))
    return model
