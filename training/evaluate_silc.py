"""Evaluate a SILC (or converted CLIP / SigLIP) folder and write the results JSON the model card reads.

    python training/evaluate_silc.py --model outputs/tiny --data synthetic:test:500 \\
        --tasks classification retrieval segmentation linear_probe --probe_data synthetic:train:2000 \\
        --ignore_index 0 --mask_offset 1 --results outputs/tiny/results.json

Any `datasets` dataset works (`--data` takes what `--train_data` takes); name its columns with
`--image_column`, `--text_column`, `--label_column`, `--mask_column`. Class names come from a `ClassLabel`
label column or `--class_names a,b,c`; prompts from `--templates` (a prompt-ensemble, `{}` = the class).
"""

import json

import torch
from transformers import AutoModel, AutoProcessor

import silc_hf  # noqa: F401  (registers "silc" with the Auto classes)
from silc_hf.configuration_silc import DEFAULT_PROMPT_TEMPLATES
from silc_hf.data import load_image_text_dataset
from silc_hf.data.loading import IMAGE_COLUMNS, TEXT_COLUMNS
from silc_hf.tools.cli import ArgumentParser, run_script, write_results
from silc_hf.zero_shot.evaluation import TASKS, evaluate


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a SILC folder (or Hub id)")
    parser.add_argument(
        "--data", required=True, help="evaluation data (imagefolder, shards, Hub id, synthetic:SPLIT:N)"
    )
    parser.add_argument("--split", default="test", help="split name recorded in the results")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=["classification", "retrieval"])
    parser.add_argument("--class_names", help="comma-separated class names, in label order")
    parser.add_argument(
        "--segmentation_class_names",
        help="comma-separated class names of the mask values (after --mask_offset), when they name more than the "
        "labels (default: --class_names)",
    )
    parser.add_argument(
        "--templates",
        nargs="+",
        help="prompt templates with {} (default: the model's config.zero_shot_templates, recorded by the run that "
        "trained it, else 'a photo of a {}.', ...)",
    )
    parser.add_argument("--image_column", help="default: the first of image, jpg, jpeg, png, webp the data has")
    parser.add_argument("--text_column", help="default: the first of text, caption, txt, json the data has")
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--mask_column", default="mask")
    parser.add_argument("--ignore_index", type=int, help="mask value to ignore (e.g. 0 for background, 255 for void)")
    parser.add_argument("--mask_offset", type=int, default=0, help="mask value v is class v - mask_offset")
    parser.add_argument("--dense_method", choices=["value", "plain"], default="value")
    parser.add_argument("--probe_data", help="training images for the linear probe")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--results", help="write the results JSON here")
    args = parser.parse(argv)

    model = AutoModel.from_pretrained(args.model).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    dataset = load_image_text_dataset(args.data)
    probe = load_image_text_dataset(args.probe_data) if args.probe_data else None
    columns = dataset.column_names
    image_column = args.image_column or next((c for c in IMAGE_COLUMNS if c in columns), "image")
    text_column = args.text_column or next((c for c in TEXT_COLUMNS if c in columns), "text")
    with torch.no_grad():
        results = evaluate(
            model,
            processor,
            dataset,
            args.tasks,
            args.class_names.split(",") if args.class_names else None,
            dataset_name=args.data,
            split=args.split,
            image_column=image_column,
            text_column=text_column,
            label_column=args.label_column,
            mask_column=args.mask_column,
            templates=tuple(args.templates or model.config.zero_shot_templates or DEFAULT_PROMPT_TEMPLATES),
            method=args.dense_method,
            ignore_index=args.ignore_index,
            mask_offset=args.mask_offset,
            probe_dataset=probe,
            shots=args.shots,
            batch_size=args.batch_size,
            segmentation_class_names=args.segmentation_class_names.split(",")
            if args.segmentation_class_names
            else None,
        )
    results["model"] = args.model
    for entry in results["results"]:
        print(entry["task"], json.dumps(entry["metrics"]))
    write_results(args.results, results)
    return results


if __name__ == "__main__":
    run_script(main)
