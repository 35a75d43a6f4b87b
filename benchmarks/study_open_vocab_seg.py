"""Study: open-vocabulary segmentation on the captioned scenes, classes hidden from training, for the SILC and the
CLIP-only backbones of `study_silc_vs_clip.py` (same data, steps and batch; they differ in the distillation only),
next to training-free zero-shot segmentation with the same backbone and the same class names and pixels.

    python benchmarks/study_silc_vs_clip.py --output-dir outputs/study --seeds 0 1 2          # the backbones
    python benchmarks/study_open_vocab_seg.py --study-dir outputs/study --seeds 0 1 2

Each run is `training/train_open_vocab_seg.py --config training/configs/open_vocab_seg_scenes.json` on one
backbone; `--set name=value` (`name=a,b` for a list) overrides a field of that config for every run. Classes: background + the five
objects; `--unseen` (default flower, fish) are ignored in training and scored apart. Prints a Markdown table
(mean ± std over seeds), writes every run's numbers as JSON and a picture of test images (ground truth, zero-shot,
trained segmenter) for the first SILC seed.
"""

import argparse
import json
import os
import statistics
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "training"))
import train_open_vocab_seg  # noqa: E402

from silc_hf.cli import read_config_file  # noqa: E402

CONFIG = os.path.join(os.path.dirname(__file__), "..", "training", "configs", "open_vocab_seg_scenes.json")
COLUMNS = ("mIoU_seen", "mIoU_unseen", "mIoU")


def run(backbone: str, seed: int, args, overrides: list[str]) -> dict:
    folder = os.path.join(args.output_dir, f"{backbone}-seed{seed}")
    result_file = os.path.join(folder, "open_vocab_seg_results.json")
    if not os.path.exists(result_file):  # resumable: finished runs are read back
        data = os.path.join(args.study_dir, "data")
        train_open_vocab_seg.main([
            "--config", CONFIG, "--model", os.path.join(args.study_dir, f"{backbone}-seed{seed}"),
            "--train_data", os.path.join(data, "train"), "--eval_data", os.path.join(data, "test"),
            "--unseen_classes", *args.unseen, "--output_dir", folder, "--seed", str(seed), *overrides,
        ])
    with open(result_file) as file:
        record = json.load(file)
    return {"backbone": backbone, "seed": seed, "zero_shot": record["zero_shot"], "trained": record["trained"]}


def table(records: list[dict]) -> str:
    lines = [
        "| backbone | seeds | " + " | ".join(f"zero-shot {c}" for c in COLUMNS) + " | " + " | ".join(f"trained {c}" for c in COLUMNS) + " |",
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
    return "\n".join(lines)


def gallery(args, backbone: str, seed: int, path: str, count: int = 5) -> None:
    """Test images, ground truth, zero-shot (the backbone) and the trained segmenter, every class a candidate."""
    from transformers import AutoModel, AutoProcessor

    from silc_hf.data import load_image_text_dataset
    from silc_hf.demo import PALETTE
    from silc_hf.plotting import plot_segmentation_gallery
    from silc_hf.segmentation import open_vocabulary_logits, zero_shot_segmentation

    config = read_config_file(CONFIG)
    names = config["class_names"]
    segmenter = AutoModel.from_pretrained(os.path.join(args.output_dir, f"{backbone}-seed{seed}")).eval()
    processor = AutoProcessor.from_pretrained(os.path.join(args.study_dir, f"{backbone}-seed{seed}"))
    test = load_image_text_dataset(os.path.join(args.study_dir, "data", "test"))
    colors = np.concatenate([PALETTE, [[255, 255, 255]]]).astype(np.uint8)  # 0 background, 1-5 objects
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
        rows.append((image, truth, zero_shot.labels.numpy(), trained.numpy()))
    unseen = ", ".join(args.unseen)
    plot_segmentation_gallery(
        rows, names[1:], colors, path,
        titles=("image", "ground truth", "zero-shot", f"trained ({unseen} unseen)"), background_label="background",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study-dir", default="outputs/study", help="output of study_silc_vs_clip.py (models, data)")
    parser.add_argument("--output-dir", default="outputs/open_vocab_study")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backbones", nargs="+", default=["clip", "silc"])
    parser.add_argument("--unseen", nargs="+", default=["flower", "fish"])
    parser.add_argument("--set", action="append", default=[], help="name=value (name=a,b for a list): a config field for every run")
    parser.add_argument("--results", default="benchmarks/results/study_open_vocab_seg.json")
    args = parser.parse_args(argv)
    overrides = []
    for setting in args.set:  # name=value, or name=a,b,c for a list
        name, _, value = setting.partition("=")
        overrides += [f"--{name}", *value.split(",")]
    records = []
    for backbone in args.backbones:
        for seed in args.seeds:
            records.append(run(backbone, seed, args, overrides))
            print(f"finished {backbone} seed {seed}", flush=True)
    os.makedirs(os.path.dirname(args.results) or ".", exist_ok=True)
    with open(args.results, "w") as file:
        json.dump({"unseen": args.unseen, "overrides": args.set, "runs": records}, file, indent=2)
    print(f"\nCaptioned scenes, unseen classes {args.unseen}; test split; numbers in %\n")
    print(table(records))
    if "silc" in args.backbones:
        figure = os.path.join(args.output_dir, "open_vocab_seg.png")
        gallery(args, "silc", args.seeds[0], figure)
        print(f"\nGallery: {figure}")


if __name__ == "__main__":
    main()
