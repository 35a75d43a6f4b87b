"""Fine-tune a SILC image tower for image classification with the stock `Trainer` (full fine-tuning, or a linear
probe on the frozen tower), on any `datasets` dataset with (image, label) columns.

    python training/finetune_classification.py --config training/configs/finetune_scenes.json
    python training/finetune_classification.py --config training/configs/finetune_scenes.json --linear_probe true \\
        --learning_rate 1e-2 --output_dir outputs/probe-scenes

Arguments: `silc_hf.training.ClassificationFinetuneArguments` and every `TrainingArguments` field; `--config` reads
a JSON or YAML file of the same names, and command-line arguments override it. Before training it prints the
zero-shot top-1 of the same SILC model on the evaluation split (class names as prompts), the baseline the fine-tuning
should beat; the evaluation logs `eval_accuracy` through `compute_metrics`. The result is a
`SilcForImageClassification` folder that the `image-classification` pipeline reads (labels from `id2label`).
"""

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoProcessor, Trainer, TrainingArguments, set_seed

from silc_hf import SilcForImageClassification, SilcModel
from silc_hf.data import load_image_text_dataset, to_rgb
from silc_hf.tools.cli import ArgumentParser, run_script
from silc_hf.training import ClassificationFinetuneArguments
from silc_hf.zero_shot import evaluate_zero_shot_classification
from silc_hf.zero_shot.evaluation import class_names_of


def accuracy(prediction) -> dict:
    return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


def parse_args(argv: list[str] | None = None) -> tuple[ClassificationFinetuneArguments, TrainingArguments]:
    parser = ArgumentParser((ClassificationFinetuneArguments, TrainingArguments), description=__doc__.splitlines()[0])
    return parser.parse(argv)


def main(argv: list[str] | None = None) -> dict:
    args, training_args = parse_args(argv)
    training_args.remove_unused_columns = False  # the transform reads the image column
    train = load_image_text_dataset(args.train_data)
    evaluation = load_image_text_dataset(args.eval_data) if args.eval_data else None
    names = args.class_names or class_names_of(train, args.label_column)
    if not names:
        raise ValueError(
            f"The label column {args.label_column!r} has no class names; pass --class_names name0 name1 ..."
        )
    results = {}
    if evaluation is not None:  # the baseline: the image-text model itself, zero-shot over the class names
        silc, processor = SilcModel.from_pretrained(args.model).eval(), AutoProcessor.from_pretrained(args.model)
        zero_shot = evaluate_zero_shot_classification(
            silc,
            processor,
            evaluation,
            names,
            templates=args.zero_shot_templates,
            image_column=args.image_column,
            label_column=args.label_column,
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
