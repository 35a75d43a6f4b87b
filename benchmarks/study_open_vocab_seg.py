"""Study: open-vocabulary segmentation on the captioned scenes, classes hidden from training, for the SILC and the
CLIP-only backbones of `study_silc_vs_clip.py` (same data, steps and batch; they differ in the distillation only),
next to training-free zero-shot segmentation with the same backbone and the same class names and pixels.

    python benchmarks/study_silc_vs_clip.py --output_dir outputs/study --seeds 0 1 2          # the backbones
    python benchmarks/study_open_vocab_seg.py --study_dir outputs/study --seeds 0 1 2

Each run is `training/train_open_vocab_seg.py --config training/configs/open_vocab_seg_scenes.json` on one
backbone; `--set field=value ...` overrides fields of that config for every run (values read as JSON where they
parse: `--set max_steps=100 'upsampling_sizes=[32, 16]'`). Classes: every thing and stuff of the
scenes; the unseen ones of `--split` (`silc_hf.data.scenes.OPEN_VOCABULARY_SPLITS`: A, the default, or B) are
never training candidates and are scored apart. Prints a Markdown table (mean ± std over seeds), writes every run's
numbers as JSON and a picture of test images (ground truth, zero-shot, trained segmenter) for the first SILC seed.
"""

import json
import os
import statistics

import numpy as np
import torch
from transformers import TrainingArguments

from silc_hf.data.scenes import LABELS, OPEN_VOCABULARY_SPLITS, open_vocabulary_split
from silc_hf.tools.cli import ArgumentParser, parse_overrides, run_script, write_results
from silc_hf.training.arguments import OpenVocabSegArguments
from silc_hf.training.open_vocab import train_open_vocab_segmenter

CONFIG = os.path.join(os.path.dirname(__file__), "..", "training", "configs", "open_vocab_seg_scenes.json")
COLUMNS = ("mIoU_seen", "mIoU_unseen", "mIoU")


def run(backbone: str, seed: int, args, overrides: dict) -> dict:
    folder = os.path.join(args.output_dir, f"{backbone}-split{args.split}-seed{seed}")
    unseen = open_vocabulary_split(args.split)[1]
    result_file = os.path.join(folder, "open_vocab_seg_results.json")
    if not os.path.exists(result_file):  # resumable: finished runs are read back
        data = os.path.join(args.study_dir, "data")
        parser = ArgumentParser((OpenVocabSegArguments, TrainingArguments))
        parser.apply_config_file(CONFIG)
        parser.set_defaults(**overrides)
        run_args = parser.parse([
            "--model", os.path.join(args.study_dir, f"{backbone}-seed{seed}"),
            "--train_data", os.path.join(data, "train"), "--eval_data", os.path.join(data, "test"),
            "--unseen_classes", *unseen, "--output_dir", folder, "--seed", str(seed),
        ])  # fmt: skip
        train_open_vocab_segmenter(*run_args)
    with open(result_file) as file:
        record = json.load(file)
    return {"backbone": backbone, "seed": seed, "zero_shot": record["zero_shot"], "trained": record["trained"]}


def table(records: list[dict]) -> str:
    lines = [
        "| backbone | seeds | "
        + " | ".join(f"zero-shot {c}" for c in COLUMNS)
        + " | "
        + " | ".join(f"trained {c}" for c in COLUMNS)
        + " |",
        "|---" * (2 + 2 * len(COLUMNS)) + "|",
    ]
    for backbone in dict.fromkeys(r["backbone"] for r in records):
        runs = [r for r in records if r["backbone"] == backbone]
        cells = []
        for stage in ("zero_shot", "trained"):
            for column in COLUMNS:
                values = [100 * r[stage][column] for r in runs]
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.mean(values):.1f} ± {spread:.1f}")
        lines.append(f"| {backbone} | {len(runs)} | " + " | ".join(cells) + " |")
    lines += ["", "| backbone | seed | trained unseen − zero-shot unseen | trained seen |", "|---|---|---|---|"]
    for r in records:
        gain = 100 * (r["trained"]["mIoU_unseen"] - r["zero_shot"]["mIoU_unseen"])
        lines.append(f"| {r['backbone']} | {r['seed']} | {gain:+.1f} | {100 * r['trained']['mIoU_seen']:.1f} |")
    return "\n".join(lines)


def gallery(args, backbone: str, seed: int, path: str, count: int = 5) -> None:
    """Test images, ground truth, zero-shot (the backbone) and the trained segmenter, every class a candidate."""
    from transformers import AutoModel, AutoProcessor

    from silc_hf.data import load_image_text_dataset
    from silc_hf.tools.plotting import plot_segmentation_gallery
    from silc_hf.zero_shot.segmentation import open_vocabulary_logits, zero_shot_segmentation

    names = list(LABELS)
    segmenter = AutoModel.from_pretrained(os.path.join(args.output_dir, f"{backbone}-split{args.split}-seed{seed}"))
    segmenter.eval()
    processor = AutoProcessor.from_pretrained(os.path.join(args.study_dir, f"{backbone}-seed{seed}"))
    test = load_image_text_dataset(os.path.join(args.study_dir, "data", "test"))
    size = segmenter.config.silc_config.vision_config.image_size
    rows = []
    for index in range(count):
        example = test[index]
        image, truth = example["image"].convert("RGB"), np.asarray(example["mask"])
        zero_shot = zero_shot_segmentation(segmenter.silc, processor, image, names, segmenter.config.prompt_templates)
        resized = processor.image_processor(
            images=image.resize((size, size)), return_tensors="pt", do_resize=False, do_center_crop=False
        )["pixel_values"]
        with torch.no_grad():
            trained = open_vocabulary_logits(segmenter, processor.tokenizer, resized, names, truth.shape).argmax(0)
        rows.append((image, truth, zero_shot.labels.numpy() + 1, trained.numpy() + 1))  # mask value v: class v - 1
    titles = ("image", "ground truth", "zero-shot", f"trained (split {args.split})")
    plot_segmentation_gallery(rows, names, path, titles=titles)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study_dir", default="outputs/study", help="output of study_silc_vs_clip.py (models, data)")
    parser.add_argument("--output_dir", default="outputs/open_vocab_study")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backbones", nargs="+", default=["clip", "silc"])
    parser.add_argument("--split", default="A", choices=sorted(OPEN_VOCABULARY_SPLITS), help="open-vocabulary split")
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE", help="config fields for every run")
    parser.add_argument("--results", default="benchmarks/results/study_open_vocab_seg.json")
    args = parser.parse(argv)
    overrides = parse_overrides(args.set)
    records = []
    for backbone in args.backbones:
        for seed in args.seeds:
            records.append(run(backbone, seed, args, overrides))
            print(f"finished {backbone} seed {seed}", flush=True)
    unseen = open_vocabulary_split(args.split)[1]
    write_results(args.results, {"split": args.split, "unseen": unseen, "overrides": args.set, "runs": records})
    print(f"\nCaptioned scenes, split {args.split} (unseen {', '.join(unseen)}); test split; numbers in %\n")
    print(table(records))
    if "silc" in args.backbones:
        figure = os.path.join(args.output_dir, "open_vocab_seg.png")
        gallery(args, "silc", args.seeds[0], figure)
        print(f"\nGallery: {figure}")
    return records


if __name__ == "__main__":
    run_script(main)
