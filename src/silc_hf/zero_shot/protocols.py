"""The published zero-shot segmentation protocols as presets: how an image is resized, windowed and scored, which
prompts name the classes, and how "background" is decided where a benchmark has it.

A protocol is what decides the numbers as much as the model: peers differ exactly here. Sources (values in
`docs/evaluation.md`):

- `tcl`: TCL (Cha et al., CVPR 2023, kakaobrain/tcl), reused by CLIP-DINOiser (wysoczanska/clip_dinoiser) and, as far as
  we can tell, SILC: short side 448, 448 x 448 windows every 224 pixels, TCL's nine prompt templates and mmseg's class
  names; background, where a benchmark has it, is never prompted: a pixel whose best class probability stays below
  0.4 is background (TCL's constant background channel; TCL compares it with its own sigmoid mask scores, so the
  value is TCL's calibration, not necessarily a model's).
- `sclip`: SCLIP (Wang et al., ECCV 2024, wangf3014/SCLIP), reused by COSMOS: short side 336 (560 for Cityscapes),
  224 x 224 windows every 112 pixels, CLIP's 80 ImageNet templates, a fixed logit scale for the softmax over classes,
  "background" named by synonyms as a class of its own, and a probability threshold below which a pixel is
  background.
- `default`: this package's own zero-shot segmentation (the pipeline's): the image squashed to the model's input,
  windows of the input size where the image is larger, the model's own logit scale, no background rule.
"""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .benchmark_names import IMAGENET_TEMPLATES, PROTOCOL_FACTS, SCLIP_CLASS_SYNONYMS, TCL_CLASS_NAMES, TCL_TEMPLATES


@dataclass(frozen=True)
class SegmentationProtocol:
    """How zero-shot segmentation is run and scored (see the module doc). `overrides` holds per-benchmark values
    (e.g. SCLIP's logit scale and thresholds); `for_benchmark` applies them."""

    name: str
    short_side: int | None = None  # shorter side resized to this, aspect kept, longer side at most max_long_side
    max_long_side: int = 2048
    window: int | None = None  # sliding-window side in pixels (None: the model's input size)
    stride: int | None = None  # between windows (None: 2/3 of the window)
    templates: tuple[str, ...] | None = None  # prompt templates (None: the model's own, else the package default)
    logit_scale: float | None = None  # fixed scale of the class softmax (None: the model's learned one)
    background_threshold: float | None = None  # below it a pixel is background, on benchmarks that have it
    background_query: bool = False  # "background" is also prompted as a class (its synonyms), as SCLIP does
    # per benchmark, the names prompted for each class (several: synonyms, the best of them counts); None: the
    # benchmark's own class names
    class_queries: Mapping[str, tuple[tuple[str, ...], ...]] | None = None
    area_threshold: float | None = None  # SCLIP: a class predicted on less than this share of the pixels is dropped
    source: str = ""
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def for_benchmark(self, benchmark: str) -> "SegmentationProtocol":
        """This protocol with `benchmark`'s own values applied."""
        return dataclasses.replace(self, **self.overrides.get(benchmark, {}), overrides={})


def _sclip_overrides() -> dict[str, dict[str, Any]]:
    facts = PROTOCOL_FACTS["sclip"]
    overrides = {}
    for benchmark, values in facts["per_benchmark"].items():
        chosen = {key: values[key] for key in ("logit_scale", "short_side") if values.get(key) is not None}
        if values.get("prob_thd"):
            chosen["background_threshold"] = values["prob_thd"]
        if values.get("area_thd") is not None:
            chosen["area_threshold"] = values["area_thd"]
        overrides[benchmark] = chosen
    return overrides


def _tcl_overrides() -> dict[str, dict[str, Any]]:
    facts = PROTOCOL_FACTS["tcl"]
    return {
        benchmark: {"background_threshold": values["bg_thresh"]}
        for benchmark, values in facts.get("per_benchmark", {}).items()
        if values.get("bg_thresh") is not None
    }


PROTOCOLS: dict[str, SegmentationProtocol] = {
    "default": SegmentationProtocol(name="default", source="this package's zero-shot segmentation pipeline"),
    "tcl": SegmentationProtocol(
        name="tcl",
        short_side=PROTOCOL_FACTS["tcl"]["short_side"],
        window=PROTOCOL_FACTS["tcl"]["window"],
        stride=PROTOCOL_FACTS["tcl"]["stride"],
        templates=tuple(TCL_TEMPLATES),
        background_threshold=PROTOCOL_FACTS["tcl"]["bg_thresh"],
        class_queries={name: tuple((n,) for n in names) for name, names in TCL_CLASS_NAMES.items()},
        source=PROTOCOL_FACTS["tcl"]["source"],
        overrides=_tcl_overrides(),
    ),
    "sclip": SegmentationProtocol(
        name="sclip",
        short_side=PROTOCOL_FACTS["sclip"]["short_side"],
        window=PROTOCOL_FACTS["sclip"]["window"],
        stride=PROTOCOL_FACTS["sclip"]["stride"],
        templates=tuple(IMAGENET_TEMPLATES),
        logit_scale=PROTOCOL_FACTS["sclip"]["logit_scale"],
        background_threshold=PROTOCOL_FACTS["sclip"]["prob_thd"],
        background_query=True,
        class_queries=SCLIP_CLASS_SYNONYMS,
        source=PROTOCOL_FACTS["sclip"]["source"],
        overrides=_sclip_overrides(),
    ),
}


def get_protocol(name: str) -> SegmentationProtocol:
    if name not in PROTOCOLS:
        raise ValueError(f"protocol={name!r} is not one of {sorted(PROTOCOLS)}.")
    return PROTOCOLS[name]


__all__ = ["PROTOCOLS", "SegmentationProtocol", "get_protocol"]
