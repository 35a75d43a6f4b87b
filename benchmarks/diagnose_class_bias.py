"""Diagnosis: does one class name win the zero-shot segmentation of every pixel because of a per-class offset in its
scores? Scores the study's towers on test scenes as `evaluate_segmentation` does (value path, sliding window), then
again after removing each class's mean score over all scored pixels (a calibration that uses no label), and prints
mIoU, the things' and the stuff's mean IoU and the share of the scored pixels the most predicted name takes, both ways.

    python benchmarks/diagnose_class_bias.py --folders outputs/study_v3/clip-seed0 outputs/study_v3_2000/clip-seed0
"""

import json
import os

import numpy as np
import torch
from transformers import AutoProcessor

from silc_hf import SilcModel
from silc_hf.data import load_image_text_dataset
from silc_hf.data.scenes import LABELS, THINGS
from silc_hf.demo.recipe import TEMPLATES
from silc_hf.tools.cli import ArgumentParser, run_script, write_results
from silc_hf.zero_shot.evaluation import mask_class_targets
from silc_hf.zero_shot.metrics import confusion_matrix, segmentation_metrics
from silc_hf.zero_shot.prompts import encode_class_names
from silc_hf.zero_shot.segmentation import segment_pixels, segmentation_inputs


@torch.no_grad()
def diagnose(folder: str, test) -> dict:
    model, processor = SilcModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    text = encode_class_names(model, processor.tokenizer, list(LABELS), TEMPLATES)
    size = model.config.vision_config.image_size
    logits = []
    for example in test:
        resized, full = segmentation_inputs(processor.image_processor, example["image"], size)
        logits.append(segment_pixels(model, resized, full, text, "value"))
    targets = mask_class_targets(test, "mask", len(LABELS), mask_offset=1, ignore_index=None)  # mask value 1 + index
    return offset_diagnosis(torch.stack(logits), targets, len(THINGS), list(LABELS))


def offset_diagnosis(logits: torch.Tensor, targets: torch.Tensor, num_things: int, names: list[str]) -> dict:
    """Segmentation metrics of `logits` `(N, C, H, W)` against `targets` `(N, H, W)` (class index, -1 ignored), raw
    and with each class's mean score over all pixels removed; the first `num_things` classes are the things."""
    result = {}
    for name, scores in (("raw", logits), ("class_mean_removed", logits - logits.mean(dim=(0, 2, 3), keepdim=True))):
        metrics = segmentation_metrics(confusion_matrix(scores.argmax(1), targets, len(names)))
        iou, share = metrics["per_class_IoU"], metrics["predicted_share"]
        result[name] = {
            "mIoU": metrics["mIoU"],
            "things_mIoU": float(np.mean([v for v in iou[:num_things] if v is not None])),
            "stuff_mIoU": float(np.mean([v for v in iou[num_things:] if v is not None])),
            "top_class": names[int(np.argmax(share))],
            "top_class_share": max(share),
        }
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", nargs="+", required=True, help="trained model folders of the studies")
    parser.add_argument("--data", default="outputs/study_v3/data", help="the studies' exported scenes")
    parser.add_argument("--scenes", type=int, default=300, help="first test scenes to score")
    parser.add_argument("--results", help="also write the numbers here as JSON")
    args = parser.parse(argv)
    test = load_image_text_dataset(os.path.join(args.data, "test")).select(range(args.scenes))
    results = {folder: diagnose(folder, test) for folder in args.folders}
    print("| model | scores | mIoU | things | stuff | most predicted name (share of pixels) |")
    print("|---|---|---|---|---|---|")
    for folder, result in results.items():
        for name, r in result.items():
            print(
                f"| {folder} | {name} | {100 * r['mIoU']:.1f} | {100 * r['things_mIoU']:.1f} | "
                f"{100 * r['stuff_mIoU']:.1f} | {r['top_class']} ({100 * r['top_class_share']:.0f} %) |"
            )
    if args.results:
        write_results(args.results, results)
    else:
        print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    run_script(main)
