"""The run builder: what a SILC training run needs from its arguments — the model and processor (from a config, or
initialised from an HF CLIP / SigLIP / SILC checkpoint), the multi-crop datasets, the `SilcTrainer` — and the run
itself with its report. Shared by `training/train_silc.py` and `python -m silc_hf.demo`.
"""

import os

from transformers import AutoConfig, AutoProcessor, AutoTokenizer, set_seed
from transformers.utils import logging

from ..configuration_silc import DEFAULT_PROMPT_TEMPLATES, SilcConfig
from ..convert import from_hf_clip, from_hf_siglip, silc_processor_from
from ..data import load_image_text_dataset
from ..data.loading import caption_text, find_image_text_columns
from ..image_processing_silc import SilcImageProcessor
from ..modeling_silc import SilcModel
from ..processing_silc import SilcProcessor
from ..tools.model_card import write_model_card
from ..tools.plotting import plot_training
from ..zero_shot.evaluation import ZeroShotEvaluator, results_entry
from ..zero_shot.metrics import (
    CLASSIFICATION_TASK,
    IMAGE_TO_TEXT_R1,
    RETRIEVAL_TASK,
    SEGMENTATION_MIOU,
    SEGMENTATION_TASK,
    TEXT_TO_IMAGE_R1,
    ZERO_SHOT_TOP1,
)
from .arguments import SilcDataArguments, SilcModelArguments, SilcTrainingArguments
from .augmentation import MultiCropTransform
from .checkpoints import resolve_resume_checkpoint
from .data import MultiCropDataset, SamplePreparer, SilcMultiCropCollator, StreamingMultiCropDataset
from .tokenization import train_clip_tokenizer
from .trainer import SilcTrainer

logger = logging.get_logger(__name__)


def column_names(dataset) -> list[str]:
    """A dataset's columns; a streaming one whose features are not declared is asked for its first example."""
    if dataset.column_names is not None:
        return dataset.column_names
    return list(next(iter(dataset)).keys())


def read_captions(dataset, column: str, limit: int) -> list[str]:
    """Up to `limit` non-empty string captions, in dataset order (to train a tokenizer on)."""
    captions = []
    rows = dataset.select_columns([column]) if hasattr(dataset, "select_columns") else dataset
    for example in rows:
        caption = caption_text(example.get(column))
        if isinstance(caption, str) and caption.strip():
            captions.append(caption)
        if len(captions) >= limit:
            break
    return captions


def load_initial_model(path: str):
    """A SilcModel and SilcProcessor from an HF CLIP, SigLIP or SILC folder / Hub id."""
    model_type = AutoConfig.from_pretrained(path).model_type
    if model_type == "clip":
        return from_hf_clip(path), silc_processor_from(path)
    if model_type == "siglip":
        model = from_hf_siglip(path)
        return model, silc_processor_from(path, fixed_text_length=model.config.text_config.max_position_embeddings)
    if model_type == "silc":
        return SilcModel.from_pretrained(path), AutoProcessor.from_pretrained(path)
    raise ValueError(f"--init_from {path} is a {model_type!r} model; use an HF CLIP, SigLIP or SILC checkpoint.")


def build_model_and_processor(model_args: SilcModelArguments, captions_source, text_column: str):
    """A new `SilcModel` (config from `model_args.model_config`: a dict, a JSON file or "silc-b16") with its processor
    and tokenizer, or the model and processor of `model_args.init_from`."""
    if model_args.init_from:
        model, processor = load_initial_model(model_args.init_from)
    else:
        if isinstance(model_args.model_config, dict):  # inlined in a --config file
            config = SilcConfig(**model_args.model_config)
        elif model_args.model_config in (None, "silc-b16"):
            config = SilcConfig.silc_b16()
        else:
            config = SilcConfig.from_json_file(model_args.model_config)
        text = config.text_config
        if model_args.tokenizer:
            tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer)
        elif model_args.train_tokenizer:
            captions = read_captions(captions_source, text_column, model_args.tokenizer_training_captions)
            tokenizer = train_clip_tokenizer(captions, model_args.tokenizer_vocab_size, text.max_position_embeddings)
            size, asked = len(tokenizer), model_args.tokenizer_vocab_size
            if size < asked:  # the captions ran out of pairs to merge: fine, but say why it is not what was asked
                logger.info(
                    f"Trained a {size}-token BPE tokenizer on {len(captions)} captions (tokenizer_vocab_size={asked}: "
                    "the captions have no more pairs to merge); the text tower's vocabulary is set to it."
                )
            else:
                logger.info(f"Trained a {size}-token BPE tokenizer on {len(captions)} captions.")
        else:
            raise ValueError("Pass --tokenizer PATH, --train_tokenizer, or --init_from a model with its tokenizer.")
        # All the tokenizer's special ids, so that the Trainer finds nothing to realign (and warn about).
        text.vocab_size, text.pad_token_id, text.eos_token_id, text.bos_token_id = (
            len(tokenizer),
            tokenizer.pad_token_id,
            tokenizer.eos_token_id,
            tokenizer.bos_token_id,
        )
        config.validate_architecture()
        model = SilcModel(config)
        size = config.vision_config.image_size
        fixed_length = text.max_position_embeddings if text.fixed_length_padding else None
        processor = SilcProcessor(
            SilcImageProcessor(size={"height": size, "width": size}), tokenizer, fixed_text_length=fixed_length
        )
    model.set_attn_implementation(model_args.attn_implementation)
    return model, processor


def build_dataset(
    raw, columns: tuple[str, str], data_args: SilcDataArguments, args: SilcTrainingArguments, image_size, patch_size
):
    """`raw` as multi-crop samples; `columns`: its (image, caption) column names. With masked patch distillation
    the samples also carry their global views' patch masks."""
    preparer = SamplePreparer(
        MultiCropTransform(args, image_size, patch_size if args.patch_distill_weight > 0 else None),
        image_column=columns[0],
        text_column=columns[1],
        max_caption_chars=data_args.max_caption_chars,
        min_image_size=data_args.min_image_size or args.local_crop_size,
        max_image_pixels=data_args.max_image_pixels,
    )
    seed = args.data_seed if args.data_seed is not None else args.seed
    if data_args.streaming:
        return StreamingMultiCropDataset(
            raw, preparer, seed, data_args.strict, rank=args.process_index, world_size=args.world_size
        )
    return MultiCropDataset(raw, preparer, seed, data_args.strict)


def build_trainer(
    model_args: SilcModelArguments, data_args: SilcDataArguments, args: SilcTrainingArguments
) -> SilcTrainer:
    """Model, processor, datasets and collator for a run, wrapped in a `SilcTrainer` (not yet trained)."""
    if not data_args.train_data:
        raise ValueError("--train_data is required: an imagefolder directory, webdataset shards or a Hub dataset.")
    if data_args.streaming and args.max_steps <= 0:
        raise ValueError("--streaming datasets have no length; set --max_steps.")
    train_raw = load_image_text_dataset(data_args.train_data, streaming=data_args.streaming)
    train_columns = find_image_text_columns(column_names(train_raw), data_args.image_column, data_args.text_column)
    eval_raw = eval_columns = None
    if data_args.eval_data:  # its own columns: it may be in another layout than the training data
        eval_raw = load_image_text_dataset(data_args.eval_data, split="train", streaming=False)
        eval_columns = find_image_text_columns(
            eval_raw.column_names,
            data_args.eval_image_column,
            data_args.eval_text_column,
            flags="--eval_image_column / --eval_text_column",
        )
    # rerunning the same command after a preemption resumes from the newest complete checkpoint
    checkpoint = args.resume_from_checkpoint = resolve_resume_checkpoint(
        args.resume_from_checkpoint, args.output_dir, args.overwrite_output_dir
    )
    if checkpoint and os.path.isdir(checkpoint) and not model_args.init_from:
        model_args.tokenizer, model_args.train_tokenizer = checkpoint, False  # the tokenizer the run was trained with
    set_seed(args.seed)  # before any weight is initialised: every rank (and every rerun) builds the same model
    model, processor = build_model_and_processor(model_args, train_raw, train_columns[1])
    if data_args.zero_shot_templates:  # saved with the model: evaluate_silc.py uses them by default
        model.config.zero_shot_templates = list(data_args.zero_shot_templates)
    image_size, patch_size = model.config.vision_config.image_size, model.config.vision_config.patch_size
    train_dataset = build_dataset(train_raw, train_columns, data_args, args, image_size, patch_size)
    eval_dataset, evaluator = None, None
    if eval_raw is not None:
        eval_dataset = build_dataset(eval_raw, eval_columns, data_args, args, image_size, patch_size)
        evaluator = ZeroShotEvaluator(
            eval_raw,
            class_names=data_args.zero_shot_class_names,
            segmentation_class_names=data_args.zero_shot_segmentation_class_names,
            templates=data_args.zero_shot_templates or DEFAULT_PROMPT_TEMPLATES,
            image_column=eval_columns[0],
            text_column=eval_columns[1],
            label_column=data_args.label_column,
            mask_column=data_args.mask_column,
            ignore_index=data_args.mask_ignore_index,
            mask_offset=data_args.mask_offset,
        )
    trainer = SilcTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=SilcMultiCropCollator(processor, model.config.text_config.max_position_embeddings),
        processing_class=processor,
        zero_shot_evaluator=evaluator,
    )
    return trainer


def run_training(
    model_args: SilcModelArguments, data_args: SilcDataArguments, args: SilcTrainingArguments
) -> SilcTrainer:
    """Train, export the model with its processor to `args.output_dir`, and evaluate if there is eval data."""
    trainer = build_trainer(model_args, data_args, args)
    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model()
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    metrics = {}
    if trainer.eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    if args.should_save:
        write_run_report(trainer, data_args, metrics)
    return trainer


# eval metric -> (model-card task, metric name)
CARD_METRICS = {
    f"eval_{ZERO_SHOT_TOP1}": (CLASSIFICATION_TASK, "top1_accuracy"),
    f"eval_{IMAGE_TO_TEXT_R1}": (RETRIEVAL_TASK, IMAGE_TO_TEXT_R1),
    f"eval_{TEXT_TO_IMAGE_R1}": (RETRIEVAL_TASK, TEXT_TO_IMAGE_R1),
    f"eval_{SEGMENTATION_MIOU}": (SEGMENTATION_TASK, "mIoU"),
}


def write_run_report(trainer: SilcTrainer, data_args: SilcDataArguments, metrics: dict) -> None:
    """End of a run: a model card in `output_dir` (with the final zero-shot metrics when there was evaluation
    data) and `training_curve.png` (losses, teacher diagnostics, evaluations; needs matplotlib)."""
    by_task = {}
    for key, (task, name) in CARD_METRICS.items():
        if key in metrics:
            by_task.setdefault(task, {})[name] = metrics[key]
    dataset = data_args.eval_data or data_args.train_data
    results = [results_entry(task, dataset, numbers, split="eval") for task, numbers in by_task.items()]
    output_dir = trainer.args.output_dir
    write_model_card(
        output_dir,
        trainer.pretraining_model.student.config,
        results=results,
        provenance=f"Trained with `training/train_silc.py` ({trainer.state.global_step} steps) on "
        f"{data_args.train_data}.",
    )
    try:
        plot_training(trainer.state.log_history, os.path.join(output_dir, "training_curve.png"))
    except ImportError as error:
        logger.warning(f"No training_curve.png: {error}")
