"""Study: CLIP-only (distillation off) vs SILC (distillation on), same data, steps and batch, several seeds, on the
package's captioned scenes. Prints a Markdown table (mean ± std), the paired differences against the first run
(the same seeds, with 95 % t-intervals), and writes every run's numbers as JSON.

    python benchmarks/study_silc_vs_clip.py --output_dir outputs/study --seeds 0 1 2 --max_steps 600
    python benchmarks/study_silc_vs_clip.py --variant silc-l0.5 distill_weight=0.5 --variant silc-l8 num_local_crops=8

Each run is `python -m silc_hf.demo`'s recipe (`silc_hf.demo.recipe`); a variant is a name and `field=value`
overrides of `SilcTrainingArguments` fields (values read as JSON where they parse). Metrics on the test split:
zero-shot top-1 over the thing classes (prompt ensemble), image->text and text->image R@1 among all test captions,
zero-shot segmentation mIoU over every thing and stuff class with the value-path and the plain dense features, and a
linear probe on the frozen last-layer patch tokens (no text; trained on the first 2000 training scenes' masks).
"""

import json
import os
import statistics

from silc_hf.data import load_image_text_dataset
from silc_hf.data.scenes import LABELS, THINGS, export
from silc_hf.demo.recipe import DATA_SIZES, TEMPLATES, train
from silc_hf.tools.benchmark import paired_interval
from silc_hf.tools.cli import ArgumentParser, parse_overrides, run_script, write_results
from silc_hf.tools.plotting import DIAGNOSTICS, plot_metric_vs_step
from silc_hf.zero_shot.evaluation import (
    evaluate_retrieval,
    evaluate_segmentation,
    evaluate_segmentation_probe,
    evaluate_zero_shot_classification,
)

COLUMNS = {
    "top-1": ("classification", "top1_accuracy"),
    "I→T R@1": ("retrieval", "image_to_text_R@1"),
    "T→I R@1": ("retrieval", "text_to_image_R@1"),
    "mIoU (value)": ("segmentation_value", "mIoU"),
    "mIoU (plain)": ("segmentation_plain", "mIoU"),
    "probe mIoU": ("segmentation_probe", "mIoU"),
}
PROBE_SCENES = 2000  # training scenes whose masks train the linear segmentation probe


def run(name: str, overrides: dict, seed: int, data_dir: str, output_dir: str, max_steps: int) -> dict:
    folder = os.path.join(output_dir, f"{name}-seed{seed}")
    result_file = os.path.join(folder, "study.json")
    if os.path.exists(result_file):  # resumable: finished runs are read back
        with open(result_file) as file:
            return json.load(file)
    distill_weight = overrides.pop("distill_weight", 0.0 if name.startswith("clip") else 1.0)
    trainer = train(folder, data_dir, max_steps, distill_weight, seed, **overrides)
    model, processor = trainer.pretraining_model.student.eval(), trainer.processing_class
    test = load_image_text_dataset(os.path.join(data_dir, "test"))
    metrics = {
        "classification": evaluate_zero_shot_classification(model, processor, test, list(THINGS), templates=TEMPLATES),
        "retrieval": evaluate_retrieval(model, processor, test),
    }
    for method in ("value", "plain"):
        segmentation = evaluate_segmentation(
            model, processor, test, list(LABELS), templates=TEMPLATES, method=method, mask_offset=1
        )
        metrics[f"segmentation_{method}"] = segmentation
    probe_train = load_image_text_dataset(os.path.join(data_dir, "train")).select(range(PROBE_SCENES))
    metrics["segmentation_probe"] = evaluate_segmentation_probe(
        model, processor, probe_train, test, list(LABELS), mask_offset=1, seed=seed
    )
    history = trainer.state.log_history
    final = [e for e in history if "contrastive_loss" in e][-1]
    record = {
        "name": name,
        "seed": seed,
        "distill_weight": distill_weight,
        "overrides": overrides,
        "metrics": metrics,
        "final_contrastive_loss": final["contrastive_loss"],
        "final_distillation_loss": final.get("distillation_loss"),
        "train_runtime_s": [e for e in history if "train_runtime" in e][-1]["train_runtime"],
        "final_diagnostics": {name: final[name] for name in DIAGNOSTICS if name in final},
        "log_history": history,  # training logs (losses, teacher diagnostics) and evaluations during training
    }
    with open(result_file, "w") as file:
        json.dump(record, file, indent=2)
    return record


def table(records: list[dict]) -> str:
    names = list(dict.fromkeys(r["name"] for r in records))
    lines = ["| run | seeds | " + " | ".join(COLUMNS) + " | train s |", "|---" * (len(COLUMNS) + 3) + "|"]
    for name in names:
        runs = [r for r in records if r["name"] == name]
        cells = []
        for task, metric in COLUMNS.values():
            values = [100 * r["metrics"][task][metric] for r in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.1f} ± {spread:.1f}")
        seconds = statistics.mean(r["train_runtime_s"] for r in runs)
        lines.append(f"| {name} | {len(runs)} | " + " | ".join(cells) + f" | {seconds:.0f} |")
    return "\n".join(lines)


def paired(records: list[dict], pairs: list[tuple[str, str]] | None = None) -> tuple[str, dict]:
    """Each (run, baseline) of `pairs` (default: every run against the first) on the seeds both have: mean paired
    difference in points with its 95 % t-interval, as a Markdown table and as a dict keyed "run − baseline"."""
    names = list(dict.fromkeys(r["name"] for r in records))
    by_seed = {name: {r["seed"]: r for r in records if r["name"] == name} for name in names}
    for name in {name for pair in pairs or [] for name in pair} - set(names):
        raise ValueError(f"--pair names the run {name!r}, which is not among the variants {names}.")
    pairs = pairs or [(name, names[0]) for name in names[1:]]
    intervals = {}
    lines = ["| difference | seeds | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for name, baseline in pairs:
        seeds = sorted(set(by_seed[name]) & set(by_seed[baseline]))
        if len(seeds) < 2:
            continue
        key, cells = f"{name} − {baseline}", []
        intervals[key] = {}
        for column, (task, metric) in COLUMNS.items():
            values = [[100 * by_seed[n][s]["metrics"][task][metric] for s in seeds] for n in (name, baseline)]
            interval = paired_interval(*values)
            intervals[key][column] = {**interval, "seeds": seeds}
            cells.append(f"{interval['mean']:+.1f} [{interval['low']:+.1f}, {interval['high']:+.1f}]")
        lines.append(f"| {key} | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines), intervals


def main(argv: list[str] | None = None) -> list[dict]:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="outputs/study")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max_steps", type=int, default=600)
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        default=[],
        metavar="NAME [FIELD=VALUE ...]",
        help="a run name and its overrides (default: clip and silc; a name starting with 'clip' trains without "
        "distillation)",
    )
    parser.add_argument(
        "--pair",
        nargs=2,
        action="append",
        default=[],
        metavar=("RUN", "BASELINE"),
        help="a paired difference to report, RUN minus BASELINE (default: every run against the first)",
    )
    parser.add_argument("--results", help="also write every run's record here (default: OUTPUT_DIR/study.json)")
    args = parser.parse(argv)
    data_dir = os.path.join(args.output_dir, "data")
    if not os.path.exists(os.path.join(data_dir, "test", "metadata.jsonl")):
        export(data_dir, DATA_SIZES, seed=0, image_size=64)
    variants = [(name, parse_overrides(items)) for name, *items in args.variant] or [("clip", {}), ("silc", {})]
    records = []
    for name, overrides in variants:
        for seed in args.seeds:
            records.append(run(name, dict(overrides), seed, data_dir, args.output_dir, args.max_steps))
            print(f"finished {name} seed {seed}", flush=True)
    write_results(args.results or os.path.join(args.output_dir, "study.json"), records)
    print(
        f"\nCaptioned scenes, {args.max_steps} steps x batch 64, test split ({DATA_SIZES['test']} images); "
        "numbers in %\n"
    )
    print(table(records))
    differences, intervals = paired(records, [tuple(pair) for pair in args.pair])
    if intervals:
        print("\nPaired differences in points, mean [95 % t-interval]:\n")
        print(differences)
        write_results(os.path.join(args.output_dir, "paired.json"), intervals)
    runs = {}
    for record in records:
        runs.setdefault(record["name"], []).append(record["log_history"])
    figure = os.path.join(args.output_dir, "miou_vs_step.png")
    plot_metric_vs_step(runs, "eval_segmentation_mIoU", figure, ylabel="zero-shot segmentation mIoU (validation)")
    print(f"\nmIoU vs step: {figure}")
    return records


if __name__ == "__main__":
    run_script(main)
