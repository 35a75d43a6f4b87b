"""The main job: generate the captioned-scenes dataset, train a small SILC model on the CPU, evaluate it, and
write the model folder, a metrics JSON, a training-curve plot and a segmentation gallery.

    python -m silc_hf.demo [--output-dir outputs/demo] [--max-steps 600] [--distill-weight 1.0] [--seed 0]

Everything runs through the public pieces (`silc_hf.synthetic`, `silc_hf.factory`, `SilcTrainer`,
`silc_hf.evaluation`, the zero-shot segmentation pipeline), so it doubles as an end-to-end example.
"""

import itertools
import json
import os
import time

import numpy as np
import torch
from transformers import pipeline

from .cli import ArgumentParser, set_cpu_threads
from .data import SilcDataArguments
from .evaluation import evaluate
from .factory import SilcModelArguments, run_training
from .model_card import write_model_card
from .plotting import DIAGNOSTICS, EVALUATIONS, plot_segmentation_gallery, plot_training
from .segmentation import zero_shot_segmentation
from .synthetic import CLASSES, export, generate
from .trainer import SilcTrainingArguments

# The small model and recipe of the demo (and of benchmarks/study_silc_vs_clip.py).
DEMO_MODEL = {
    "loss_type": "softmax",
    "vision_config": {
        "hidden_size": 96,
        "intermediate_size": 384,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "image_size": 64,
        "patch_size": 8,
        "pooling_type": "map",
    },
    "text_config": {
        "hidden_size": 96,
        "intermediate_size": 384,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 32,
        "projection_dim": 96,
        "pooling_type": "eos",
        "causal_attention": True,
        "use_padding_mask": True,
        "fixed_length_padding": False,
    },
}
DEMO_TRAINING = dict(
    per_device_train_batch_size=64,
    learning_rate=1e-3,
    weight_decay=0.05,
    warmup_steps=50,
    lr_scheduler_type="cosine",
    logging_steps=20,
    eval_strategy="steps",  # eval_loss + zero-shot top-1, R@1, segmentation mIoU on the validation split
    eval_steps=100,
    per_device_eval_batch_size=64,
    save_strategy="no",
    report_to="none",
    dataloader_num_workers=0,
    dataloader_pin_memory=False,
    # Views (README "The demo's recipe"): the scenes' classes are told apart by colour, and the captions name the
    # colours, so DINO's colour-destroying ops (hue, saturation, grayscale, solarize) are off: with them the
    # teacher's targets were not predictable across views, the student head contracted and the teacher went flat.
    # The global views, which also feed the image-text loss, are only flipped (as CLIP's); the local views keep
    # brightness/contrast jitter and blur.
    global_view_augmentation="flip",
    hue=0.0,
    saturation=0.0,
    grayscale_prob=0.0,
    solarize_probs=[0.0, 0.0, 0.0],
    num_local_crops=4,
    local_crop_size=32,
    # Head: 128 prototypes for 64 images a batch, trainable after the first 10 % of the steps (DINO's
    # freeze_last_layer; the demo sets it from max_steps). Sinkhorn-Knopp centring (DINOv2's default) spreads the
    # teacher's mass over the prototypes across the batch; DINO's EMA centre used ~25 of them (README).
    centering="sinkhorn",
    head_num_prototypes=128,
    head_hidden_dim=256,
    head_bottleneck_dim=64,
    teacher_momentum=0.996,
    use_cpu=True,
)
DATA_SIZES = {"train": 4000, "validation": 200, "test": 300}
TEMPLATES = ("a {}", "a picture of a {}")  # in the captions' own words
PALETTE = np.array(
    [[40, 40, 40], [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180]], dtype=np.uint8
)


def train(output_dir: str, data_dir: str, max_steps: int, distill_weight: float, seed: int, **overrides):
    """Train the demo model on `data_dir/train`; returns the trainer (model exported to `output_dir`)."""
    args = SilcTrainingArguments(
        output_dir=output_dir,
        max_steps=max_steps,
        distill_weight=distill_weight,
        seed=seed,
        **{**DEMO_TRAINING, "head_freeze_prototypes_steps": max_steps // 10, **overrides},
    )
    model_args = SilcModelArguments(train_tokenizer=True, tokenizer_vocab_size=1024)
    data_args = SilcDataArguments(
        train_data=os.path.join(data_dir, "train"),
        eval_data=os.path.join(data_dir, "validation"),  # eval_loss and the zero-shot evaluators during training
        zero_shot_class_names=list(CLASSES),
        zero_shot_templates=list(TEMPLATES),
        mask_ignore_index=0,  # background: not one of the classes
        mask_offset=1,
    )
    return run_training(model_args, data_args, args, inline_config=DEMO_MODEL)


def run_evaluation(model, processor, data_dir: str) -> dict:
    """Zero-shot classification, retrieval, segmentation (foreground pixels) and a 10-shot probe on the test split."""
    from .data import load_image_text_dataset

    test = load_image_text_dataset(os.path.join(data_dir, "test"))
    train = load_image_text_dataset(os.path.join(data_dir, "train"))
    return evaluate(
        model,
        processor,
        test,
        tasks=("classification", "retrieval", "segmentation", "linear_probe"),
        class_names=list(CLASSES),
        dataset_name="captioned-scenes",
        split="test",
        templates=TEMPLATES,
        ignore_index=0,
        mask_offset=1,
        probe_dataset=train,
    )


def example_scene():
    """The scene bundled as `examples/red_car_and_flower.png` (a large red car and a small white flower), drawn
    again here so that the check does not depend on the repository's files."""
    return next(itertools.islice(generate("train", 59, seed=1), 58, None))


def quick_start_check(model_dir: str) -> list[dict]:
    """The README's quick start on the trained model: the stock zero-shot pipeline on the example scene."""
    classifier = pipeline("zero-shot-image-classification", model=model_dir)
    return classifier(example_scene().image, candidate_labels=list(CLASSES), hypothesis_template="a {}")


def segmentation_gallery(model, processor, data_dir: str, path: str, count: int = 6) -> None:
    """Test images next to their ground-truth masks and zero-shot segmentations (predictions shown on the objects'
    pixels, which are the scored ones), with a legend naming each colour."""
    from .data import load_image_text_dataset

    test = load_image_text_dataset(os.path.join(data_dir, "test"))
    rows = []
    for row in range(count):
        example = test[row]
        image = example["image"].convert("RGB")
        result = zero_shot_segmentation(model, processor, image, list(CLASSES), templates=TEMPLATES)
        truth = np.asarray(example["mask"])
        rows.append((image, truth, np.where(truth > 0, result.labels.numpy() + 1, 0)))
    plot_segmentation_gallery(rows, list(CLASSES), PALETTE, path)


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
    args = parser.parse_args(argv)
    set_cpu_threads()
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
        provenance=f"Trained from scratch by `python -m silc_hf.demo` ({args.max_steps} steps, seed {args.seed}) on the "
        "package's generated captioned scenes.",
    )
    results["quick_start"] = quick_start_check(model_dir)
    results["seconds"] = round(time.time() - start, 1)
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as file:
        json.dump(results, file, indent=2)
    for entry in results["results"]:
        print(f"  {entry['task']}: " + ", ".join(f"{k}={v:.3f}" for k, v in entry["metrics"].items()))
    print("  teacher at the end: " + ", ".join(f"{k}={v:.3f}" for k, v in results["final_diagnostics"].items()))
    ranking = ", ".join(f"{r['label']} {r['score']:.2f}" for r in results["quick_start"])
    print(f"  README quick start (examples/red_car_and_flower.png): {ranking}")
    print(
        f"Done in {results['seconds']:.0f} s: {args.output_dir}/metrics.json, training_curve.png, segmentation.png, model/"
    )
    return results


if __name__ == "__main__":
    main()
