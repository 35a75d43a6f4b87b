"""Fine-tune a SILC image tower for image classification with the stock `Trainer` (full fine-tuning, or a linear
probe on the frozen tower), on any `datasets` dataset with (image, label) columns.

    python training/finetune_classification.py --config training/configs/finetune_scenes.json
    python training/finetune_classification.py --config training/configs/finetune_scenes.json --linear_probe true \\
        --learning_rate 1e-2 --output_dir outputs/probe-scenes

Arguments: `FinetuneArguments` below and every `TrainingArguments` field; `--config` reads a JSON or YAML file
of the same names, and command-line arguments override it. Before training it prints the zero-shot top-1 of the
same SILC model on the evaluation split (class names as prompts), the baseline the fine-tuning should beat; the
evaluation logs `eval_accuracy` through `compute_metrics`. The result is a `SilcForImageClassification` folder
that the `image-classification` pipeline reads (labels from `id2label`).
"""

import argparse
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoProcessor, HfArgumentParser, Trainer, TrainingArguments, set_seed

from silc_hf import SilcForImageClassification, SilcModel
from silc_hf.cli import apply_config_defaults, read_config_file, run_script
from silc_hf.data import load_image_text_dataset, to_rgb
from silc_hf.evaluation import evaluate_zero_shot_classification


@dataclass
class FinetuneArguments:
    model: str | None = field(default=None, metadata={"help": "a SILC folder (or Hub id) whose image tower is fine-tuned"})
    train_data: str | None = field(
        default=None, metadata={"help": "imagefolder directory, webdataset shards or Hub dataset with labels"}
    )
    eval_data: str | None = field(default=None, metadata={"help": "evaluation split (same layout)"})
    class_names: list[str] | None = field(
        default=None, metadata={"help": "names of the label ids, in order (default: the label column's ClassLabel)"}
    )
    image_column: str = "image"
    label_column: str = "label"
    linear_probe: bool = field(default=False, metadata={"help": "freeze the tower: train the linear classifier only"})
    zero_shot_templates: list[str] = field(
        default_factory=lambda: ["a {}", "a picture of a {}"], metadata={"help": "prompts of the zero-shot baseline"}
    )


def parse_args(argv: list[str] | None = None) -> tuple[FinetuneArguments, TrainingArguments]:
    parser = HfArgumentParser((FinetuneArguments, TrainingArguments))
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, rest = pre.parse_known_args(argv)
    if known.config:
        apply_config_defaults(parser, known.config, read_config_file(known.config), "training/finetune_classification.py")
    args, training_args = parser.parse_args_into_dataclasses(rest)
    for name in ("model", "train_data"):
        if not getattr(args, name):
            raise ValueError(f"--{name} is required (on the command line or in --config).")
    return args, training_args


def class_names_of(dataset, args: FinetuneArguments) -> list[str]:
    if args.class_names:
        return list(args.class_names)
    feature = dataset.features.get(args.label_column)
    if getattr(feature, "names", None):
        return list(feature.names)
    raise ValueError(f"The label column {args.label_column!r} has no class names; pass --class_names name0 name1 ...")


def accuracy(prediction) -> dict:
    return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


def main(argv: list[str] | None = None) -> dict:
    args, training_args = parse_args(argv)
    train = load_image_text_dataset(args.train_data)
    evaluation = load_image_text_dataset(args.eval_data) if args.eval_data else None
    names = class_names_of(train, args)
    results = {}
    if evaluation is not None:  # the baseline: the image-text model itself, zero-shot over the class names
        silc, processor = SilcModel.from_pretrained(args.model).eval(), AutoProcessor.from_pretrained(args.model)
        zero_shot = evaluate_zero_shot_classification(
            silc, processor, evaluation, names, templates=args.zero_shot_templates,
            image_column=args.image_column, label_column=args.label_column,
        )
        results["zero_shot_top1"] = zero_shot["top1_accuracy"]
        print(f"zero-shot top-1 of {args.model} on {args.eval_data}: {results['zero_shot_top1']:.4f}", flush=True)
        del silc

    set_seed(training_args.seed)  # the classifier's initialisation (the Trainer seeds only after the model exists)
    model = SilcForImageClassification.from_pretrained(
        args.model, id2label=dict(enumerate(names)), label2id={name: i for i, name in enumerate(names)}
    )
    if args.linear_probe:
        model.vision_model.requires_grad_(False)
    image_processor = AutoImageProcessor.from_pretrained(args.model)

    def transform(batch):
        pixels = image_processor([to_rgb(image) for image in batch[args.image_column]], return_tensors="pt")
        return {"pixel_values": pixels["pixel_values"], "labels": torch.as_tensor(batch[args.label_column])}

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train.with_transform(transform),
        eval_dataset=evaluation.with_transform(transform) if evaluation is not None else None,
        compute_metrics=accuracy,
        processing_class=image_processor,
    )
    trainer.train()
    trainer.save_model()
    if evaluation is not None:
        metrics = trainer.evaluate()
        results["accuracy"] = metrics["eval_accuracy"]
        trainer.save_metrics("eval", metrics)
        mode = "linear probe" if args.linear_probe else "fine-tuned"
        print(f"{mode} accuracy: {results['accuracy']:.4f} (zero-shot {results['zero_shot_top1']:.4f})", flush=True)
    return results


if __name__ == "__main__":
    run_script(main)
