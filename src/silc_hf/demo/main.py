"""The main job: generate the captioned-scenes dataset, train a small SILC model on the CPU, evaluate it, and
write the model folder, a metrics JSON, a training-curve plot and a segmentation gallery.

    python -m silc_hf.demo [--output_dir outputs/demo] [--max_steps 600] [--distill_weight 1.0] [--seed 0]

Everything runs through the public pieces (`silc_hf.data.scenes`, `silc_hf.training`, `SilcTrainer`,
`silc_hf.zero_shot`, the zero-shot segmentation pipeline), so it doubles as an end-to-end example.
"""

import itertools
import json
import os
import time

import numpy as np
from transformers import pipeline

from ..data import load_image_text_dataset
from ..data.scenes import LABELS, THINGS, export, generate
from ..tools.cli import ArgumentParser
from ..tools.model_card import write_model_card
from ..tools.plotting import DIAGNOSTICS, EVALUATIONS, plot_segmentation_gallery, plot_training
from ..zero_shot.segmentation import zero_shot_segmentation
from .recipe import DATA_SIZES, DEMO_TRAINING, TEMPLATES, run_evaluation, train

EXAMPLE = 4074  # training scene shipped as examples/red_car_on_grass.png


def example_scene():
    """The scene bundled as `examples/red_car_on_grass.png` ("there is a red car and a small cup on the grass against
    the sky"), drawn again here so that the check does not depend on the repository's files."""
    return next(itertools.islice(generate("train", EXAMPLE + 1), EXAMPLE, None))


def quick_start_check(model_dir: str) -> list[dict]:
    """The README's quick start on the trained model: the stock zero-shot pipeline on the example scene."""
    classifier = pipeline("zero-shot-image-classification", model=model_dir)
    return classifier(example_scene().image, candidate_labels=list(THINGS), hypothesis_template="a {}")


def segmentation_gallery(model, processor, data_dir: str, path: str, count: int = 6) -> None:
    """Test images next to their ground-truth masks and zero-shot segmentations over every thing and stuff name,
    each row with a legend of the names it shows."""
    test = load_image_text_dataset(os.path.join(data_dir, "test"))
    rows = []
    for row in range(count):
        example = test[row]
        image = example["image"].convert("RGB")
        result = zero_shot_segmentation(model, processor, image, list(LABELS), templates=TEMPLATES)
        rows.append((image, np.asarray(example["mask"]), result.labels.numpy() + 1))
    plot_segmentation_gallery(rows, list(LABELS), path)


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(prog="python -m silc_hf.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="outputs/demo")
    parser.add_argument("--max-steps", type=int, default=600)
    parser.add_argument("--distill-weight", type=float, default=1.0, help="0 trains CLIP only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-steps", type=int, default=DEMO_TRAINING["eval_steps"], help="evaluate every N steps")
    parser.add_argument("--train-examples", type=int, default=DATA_SIZES["train"])
    parser.add_argument("--validation-examples", type=int, default=DATA_SIZES["validation"])
    parser.add_argument("--test-examples", type=int, default=DATA_SIZES["test"])
    args = parser.parse(argv)
    start = time.time()
    data_dir, model_dir = os.path.join(args.output_dir, "data"), os.path.join(args.output_dir, "model")

    sizes = {"train": args.train_examples, "validation": args.validation_examples, "test": args.test_examples}
    print(f"[1/4] generating captioned scenes {sizes} -> {data_dir}", flush=True)
    if not os.path.exists(os.path.join(data_dir, "test", "metadata.jsonl")):
        export(data_dir, sizes, seed=0, image_size=64)
    print(f"[2/4] training SILC for {args.max_steps} steps on the CPU -> {model_dir}", flush=True)
    trainer = train(
        model_dir,
        data_dir,
        args.max_steps,
        args.distill_weight,
        args.seed,
        eval_steps=args.eval_steps,
        logging_steps=min(DEMO_TRAINING["logging_steps"], args.eval_steps),
    )
    model, processor = trainer.pretraining_model.student.eval(), trainer.processing_class
    print("[3/4] evaluating on the test split", flush=True)
    results = run_evaluation(model, processor, data_dir)
    results["model"] = model_dir
    history = trainer.state.log_history
    last_train_log = next((entry for entry in reversed(history) if "loss" in entry), {})
    results["final_diagnostics"] = {name: last_train_log[name] for name in DIAGNOSTICS if name in last_train_log}
    results["evaluation_during_training"] = [
        {key: entry[key] for key in ("step", *EVALUATIONS) if key in entry} for entry in history if "eval_loss" in entry
    ]
    print("[4/4] writing the plots, the model card and the quick-start check", flush=True)
    plot_training(
        history,
        os.path.join(args.output_dir, "training_curve.png"),
        title=f"silc_hf.demo: {args.max_steps} steps, distill_weight {args.distill_weight}, seed {args.seed}",
    )
    segmentation_gallery(model, processor, data_dir, os.path.join(args.output_dir, "segmentation.png"))
    write_model_card(
        model_dir,
        model.config,
        model_name="silc-demo",
        results=results,
        provenance=f"Trained from scratch by `python -m silc_hf.demo` ({args.max_steps} steps, seed {args.seed}) "
        "on the package's generated captioned scenes.",
    )
    results["quick_start"] = quick_start_check(model_dir)
    results["seconds"] = round(time.time() - start, 1)
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as file:
        json.dump(results, file, indent=2)
    for entry in results["results"]:
        print(f"  {entry['task']}: " + ", ".join(f"{k}={v:.3f}" for k, v in entry["metrics"].items()))
    print("  teacher at the end: " + ", ".join(f"{k}={v:.3f}" for k, v in results["final_diagnostics"].items()))
    ranking = ", ".join(f"{r['label']} {r['score']:.2f}" for r in results["quick_start"])
    print(f"  README quick start (examples/red_car_on_grass.png): {ranking}")
    print(
        f"Done in {results['seconds']:.0f} s: {args.output_dir}/metrics.json, training_curve.png, segmentation.png, "
        "model/"
    )
    return results
