"""Evaluate a SILC (or converted CLIP / SigLIP) folder and write the results JSON the model card reads.

    python training/evaluate_silc.py --model outputs/tiny --data synthetic:test:500 \\
        --tasks classification retrieval segmentation linear_probe --probe_data synthetic:train:2000 \\
        --ignore_index 0 --mask_offset 1 --results outputs/tiny/results.json

Any `datasets` dataset works (`--data` takes what `--train_data` takes); name its columns with
`--image_column`, `--text_column`, `--label_column`, `--mask_column`. Class names come from a `ClassLabel`
label column or `--class_names a,b,c`; prompts from `--templates` (a prompt-ensemble, `{}` = the class).

The published benchmarks, each in its original layout under a data root, under a published protocol:

    python training/evaluate_silc.py --model path/to/silc --benchmark voc20 --data_root data --protocol tcl
    python training/evaluate_silc.py --model path/to/silc --benchmark all --data_root data --protocol tcl \
        --results results.json --markdown results.md --model_card path/to/silc

Benchmarks, protocols, layouts and licences: `docs/evaluation.md`.
"""

import json
import os

import torch
from transformers import AutoModel, AutoProcessor

import silc_hf  # noqa: F401  (registers "silc" with the Auto classes)
from silc_hf.configuration_silc import DEFAULT_PROMPT_TEMPLATES
from silc_hf.data import load_image_text_dataset
from silc_hf.data.loading import IMAGE_COLUMNS, TEXT_COLUMNS
from silc_hf.tools.cli import ArgumentParser, run_script, write_results
from silc_hf.tools.model_card import write_model_card
from silc_hf.zero_shot.benchmarks import BENCHMARKS, evaluate_benchmark, results_table
from silc_hf.zero_shot.evaluation import TASKS, evaluate
from silc_hf.zero_shot.protocols import PROTOCOLS


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a SILC folder (or Hub id)")
    parser.add_argument("--data", help="evaluation data (imagefolder, shards, Hub id, synthetic:SPLIT:N)")
    parser.add_argument(
        "--benchmark",
        nargs="+",
        choices=[*BENCHMARKS, "all", "segmentation"],
        help="published benchmark presets instead of --data ('segmentation': the eight segmentation ones, 'all': "
        "those and ImageNet, COCO, Flickr30k)",
    )
    parser.add_argument(
        "--data_root", help="--benchmark: the folder holding each dataset's download (VOCdevkit/VOC2012, ...)"
    )
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="default", help="--benchmark segmentation")
    parser.add_argument("--max_images", type=int, help="--benchmark: the first N images of each (a quick look)")
    parser.add_argument("--markdown", help="--benchmark: also write a Markdown table here")
    parser.add_argument("--model_card", help="--benchmark: write a model card (README.md) with these results here")
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
    if args.benchmark:
        return run_benchmarks(model, processor, args)
    if not args.data:
        parser.error("pass --data (any dataset) or --benchmark with --data_root (the published benchmarks)")
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


def run_benchmarks(model, processor, args) -> dict:
    """The `--benchmark` presets, one after the other: a results JSON, a Markdown table, a model card."""
    if not args.data_root:
        raise ValueError("--benchmark needs --data_root, the folder holding the datasets (docs/evaluation.md).")
    names = []
    for name in args.benchmark:
        if name in ("all", "segmentation"):
            names += [b for b, preset in BENCHMARKS.items() if name == "all" or preset.task == "segmentation"]
        else:
            names.append(name)
    entries = []
    for name in dict.fromkeys(names):
        root = os.path.join(args.data_root, BENCHMARKS[name].directory)
        with torch.no_grad():
            entry = evaluate_benchmark(
                model, processor, name, root, args.protocol, args.dense_method, args.max_images, args.batch_size
            )
        print(entry["dataset"], entry["protocol"], json.dumps(entry["metrics"]), flush=True)
        entries.append(entry)
    results = {"model": args.model, "results": entries}
    table = results_table(entries)
    print(table)
    write_results(args.results, results)
    if args.markdown:
        with open(args.markdown, "w") as file:
            file.write(table)
    if args.model_card:
        os.makedirs(args.model_card, exist_ok=True)
        write_model_card(args.model_card, model.config, results=results)
    return results


if __name__ == "__main__":
    run_script(main)
