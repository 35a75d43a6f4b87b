"""Fine-tune an open-vocabulary segmenter (SILC towers + CAT-Seg-style cost aggregation) with the `Trainer`, on any
`datasets` dataset with an image column and a mask column of integer class ids, some classes hidden from training.

    python training/train_open_vocab_seg.py --config training/configs/open_vocab_seg_scenes.json
    python training/train_open_vocab_seg.py --model outputs/demo/model --train_data outputs/demo/data/train \\
        --eval_data outputs/demo/data/test --class_names background tree house car flower fish \\
        --unseen_classes flower fish --output_dir outputs/open-vocab-seg --max_steps 300 --use_cpu true

Arguments: `OpenVocabSegArguments` below and every `TrainingArguments` field; `--config` reads a JSON or YAML file
of the same names, and command-line arguments override it. Class `i` of `--class_names` has mask value
`i + mask_offset`; other mask values are ignored. Training sees the classes not in `--unseen_classes` (pixels of
unseen classes carry no loss); evaluation uses every class and reports `eval_mIoU`, `eval_mIoU_seen`,
`eval_mIoU_unseen` and each class's IoU. Before training it evaluates the SILC model zero-shot (training-free, its
dense features against the same class names) on the same split: the baseline the segmenter should beat.
Writes the segmenter and its processor to `output_dir` (loads with `AutoModel` and the
`zero-shot-image-segmentation` pipeline), `open_vocab_seg_results.json` and `training_curve.png`.
"""

import argparse
import json
import os
from dataclasses import dataclass, field

from transformers import AutoProcessor, HfArgumentParser, TrainingArguments, set_seed

from silc_hf import SilcForOpenVocabularySegmentation
from silc_hf.cli import apply_config_defaults, read_config_file, run_script
from silc_hf.data import load_image_text_dataset
from silc_hf.evaluation import evaluate_segmentation
from silc_hf.plotting import plot_training
from silc_hf.segmentation_training import (
    SegmentationMetrics,
    SilcSegmentationCollator,
    SilcSegmentationTrainer,
    summarize_iou,
)

DECODER_FIELDS = ("prompt_templates", "decoder_hidden_size", "guidance_size", "num_aggregation_layers", "upsampling_sizes")


@dataclass
class OpenVocabSegArguments:
    model: str | None = field(
        default=None, metadata={"help": "a SILC folder or Hub id (also a converted CLIP / SigLIP) whose towers build the cost volume"}
    )
    train_data: str | None = field(default=None, metadata={"help": "imagefolder directory, webdataset shards or Hub dataset with masks"})
    eval_data: str | None = field(default=None, metadata={"help": "evaluation split (same layout)"})
    class_names: list[str] | None = field(default=None, metadata={"help": "class names in mask-id order"})
    mask_offset: int = field(default=0, metadata={"help": "mask value of the first class (1 for ADE20K's scene_parse_150)"})
    mask_ids: list[int] | None = field(
        default=None, metadata={"help": "mask value of each class, for ids with gaps (COCO-Stuff); overrides --mask_offset"}
    )
    unseen_classes: list[str] = field(default_factory=list, metadata={"help": "classes hidden from training, evaluated apart"})
    image_column: str = "image"
    mask_column: str = "mask"
    trainable_backbone: str = field(
        default="attention", metadata={"help": "tower weights that train: none, attention (query/value projections, as CAT-Seg) or all"}
    )
    backbone_learning_rate_scale: float = field(
        default=1.0, metadata={"help": "learning rate of the tower weights that train, relative to --learning_rate (CAT-Seg: 0.01)"}
    )
    min_scale: float = field(default=0.5, metadata={"help": "smallest side of a training crop, as a fraction of the image side"})
    prompt_templates: list[str] | None = field(
        default=None, metadata={"help": "prompts per class (default: the SILC model's zero-shot templates)"}
    )
    decoder_hidden_size: int | None = field(default=None, metadata={"help": "cost embedding channels (default 128)"})
    guidance_size: int | None = field(default=None, metadata={"help": "image/text guidance channels (default 128)"})
    num_aggregation_layers: int | None = field(default=None, metadata={"help": "spatial+class aggregation pairs (default 2)"})
    upsampling_sizes: list[int] | None = field(default=None, metadata={"help": "channels per x2 upsampling step (default 64 32)"})


def parse_args(argv: list[str] | None = None) -> tuple[OpenVocabSegArguments, TrainingArguments]:
    parser = HfArgumentParser((OpenVocabSegArguments, TrainingArguments))
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, rest = pre.parse_known_args(argv)
    if known.config:
        apply_config_defaults(parser, known.config, read_config_file(known.config), "training/train_open_vocab_seg.py")
    args, training_args = parser.parse_args_into_dataclasses(rest)
    for name in ("model", "train_data", "class_names"):
        if not getattr(args, name):
            raise ValueError(f"--{name} is required (on the command line or in --config).")
    if args.mask_ids is not None and len(args.mask_ids) != len(args.class_names):
        raise ValueError(f"--mask_ids has {len(args.mask_ids)} values for {len(args.class_names)} --class_names; give one per class.")
    unknown = sorted(set(args.unseen_classes) - set(args.class_names))
    if unknown:
        raise ValueError(f"--unseen_classes {unknown} are not in --class_names {args.class_names}.")
    training_args.remove_unused_columns = False  # the collator reads the image and mask columns
    return args, training_args


def main(argv: list[str] | None = None) -> dict:
    args, training_args = parse_args(argv)
    set_seed(training_args.seed)  # the decoder's initialisation (the Trainer seeds only after the model exists)
    decoder = {name: getattr(args, name) for name in DECODER_FIELDS if getattr(args, name) is not None}
    model = SilcForOpenVocabularySegmentation.from_silc_pretrained(args.model, args.trainable_backbone, **decoder)
    processor = AutoProcessor.from_pretrained(args.model)
    train = load_image_text_dataset(args.train_data)
    evaluation = load_image_text_dataset(args.eval_data) if args.eval_data else None
    names, unseen = list(args.class_names), list(args.unseen_classes)
    mask_ids = dict(zip(names, args.mask_ids or [i + args.mask_offset for i in range(len(names))]))
    seen = [name for name in names if name not in unseen]
    columns = dict(image_column=args.image_column, mask_column=args.mask_column)
    train_collator = SilcSegmentationCollator(
        processor, model.config, seen, [mask_ids[n] for n in seen],
        train=True, min_scale=args.min_scale, seed=training_args.seed, **columns,
    )
    eval_collator = SilcSegmentationCollator(processor, model.config, names, list(mask_ids.values()), **columns)
    results = {"model": args.model, "class_names": names, "unseen_classes": unseen}
    if evaluation is not None:  # the baseline: the same towers, training-free, on the same classes and pixels
        zero_shot = evaluate_segmentation(
            model.silc.eval(), processor, evaluation, names, templates=model.config.prompt_templates,
            mask_ids=list(mask_ids.values()), **columns,
        )
        results["zero_shot"] = summarize_iou(zero_shot, names, set(unseen))
        print("zero-shot " + " ".join(f"{k}={v:.4f}" for k, v in results["zero_shot"].items() if k.startswith("mIoU")))

    trainer = SilcSegmentationTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=train_collator,
        eval_data_collator=eval_collator,
        backbone_learning_rate_scale=args.backbone_learning_rate_scale,
        compute_metrics=SegmentationMetrics(names, unseen, model.config.ignore_index),
        preprocess_logits_for_metrics=SegmentationMetrics.predict,
        processing_class=processor,
    )
    trainer.train()
    trainer.save_model()
    if evaluation is not None:
        metrics = trainer.evaluate()
        trainer.save_metrics("eval", metrics)
        results["trained"] = {k[len("eval_") :]: v for k, v in metrics.items() if "IoU" in k or "accuracy" in k}
        print("trained   " + " ".join(f"{k}={v:.4f}" for k, v in results["trained"].items() if k.startswith("mIoU")))
    results["log_history"] = trainer.state.log_history
    with open(os.path.join(training_args.output_dir, "open_vocab_seg_results.json"), "w") as file:
        json.dump(results, file, indent=2)
    panels = (
        ({"loss": "training loss", "eval_loss": "evaluation loss (every class)"}, "cross-entropy", "losses", None),
        (
            {"eval_mIoU_seen": "mIoU seen", "eval_mIoU_unseen": "mIoU unseen", "eval_mIoU": "mIoU"},
            "mIoU", "evaluation during training", (0, 1),
        ),
    )
    try:
        plot_training(trainer.state.log_history, os.path.join(training_args.output_dir, "training_curve.png"), panels=panels)
    except ImportError as error:
        print(f"No training_curve.png: {error}")
    return results


if __name__ == "__main__":
    run_script(main)
