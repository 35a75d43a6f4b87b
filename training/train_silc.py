"""Pretrain or fine-tune a SILC model with `SilcTrainer`.

    accelerate launch training/train_silc.py --config training/configs/tiny.json      # CPU, generated data
    accelerate launch --multi_gpu --num_processes 8 training/train_silc.py --config training/configs/silc_b16.json \\
        --train_data "shards/{00000..01023}.tar" --image_column jpg --text_column txt --streaming
    python training/train_silc.py --init_from path/to/clip-or-siglip-or-silc --distill_start_step 0 ...

Arguments: `silc_hf.factory.SilcModelArguments`, `silc_hf.data.SilcDataArguments` and
`silc_hf.SilcTrainingArguments` (which include every `TrainingArguments` field and the multi-crop numbers).
`--config` reads a JSON or YAML file of the same names (plus `model_config`: a `SilcConfig` dict, a path to
one, or "silc-b16"); command-line arguments override the file.
"""

import argparse
import dataclasses

import torch
from transformers import HfArgumentParser, TrainingArguments

from silc_hf.cli import apply_config_defaults, read_config_file, run_script
from silc_hf.data import SilcDataArguments
from silc_hf.factory import SilcModelArguments, run_training
from silc_hf.trainer import SilcTrainer, SilcTrainingArguments


def short_help() -> str:
    """`--help`: `--config` first, then every SILC argument by group with its default and help; the ~200
    inherited `TrainingArguments` fields only by name (`--help-all` lists them in full)."""
    inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
    lines = [
        "usage: train_silc.py [--config FILE.json|yaml] [--ARGUMENT VALUE ...]",
        "",
        __doc__.split("\n\n")[0],
        "",
        "  --config FILE          JSON or YAML file of the arguments below (plus model_config); the command line",
        "                         overrides it",
    ]
    groups = (
        ("model", SilcModelArguments, set()),
        ("data", SilcDataArguments, set()),
        ("SILC training (views, distillation, teacher, head)", SilcTrainingArguments, inherited),
    )
    for title, cls, skip in groups:
        lines += ["", f"{title}:"]
        for item in dataclasses.fields(cls):
            if item.name in skip or item.name.startswith("_"):
                continue
            default = item.default if item.default is not dataclasses.MISSING else None
            if item.default_factory is not dataclasses.MISSING:
                default = item.default_factory()
            lines.append(f"  --{item.name} (default {default!r}): {item.metadata.get('help', '')}")
    lines += ["", "and every transformers TrainingArguments field (--output_dir, --max_steps, --learning_rate, --bf16,",
              "--torch_compile, --resume_from_checkpoint, --report_to, ...): `--help-all` lists them."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None):
    """Parse (SilcModelArguments, SilcDataArguments, SilcTrainingArguments, inline model config dict or None)."""
    parser = HfArgumentParser((SilcModelArguments, SilcDataArguments, SilcTrainingArguments))
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("-h", "--help", action="store_true")
    pre.add_argument("--help-all", "--help_all", action="store_true")
    known, rest = pre.parse_known_args(argv)
    if known.help_all:
        parser.print_help()
        raise SystemExit(0)
    if known.help:
        print(short_help())
        raise SystemExit(0)
    inline_model_config = None
    if known.config:
        values = read_config_file(known.config)
        if isinstance(values.get("model_config"), dict):
            inline_model_config = values.pop("model_config")
        apply_config_defaults(parser, known.config, values, "training/train_silc.py")
    return (*parser.parse_args_into_dataclasses(rest), inline_model_config)


def main(argv: list[str] | None = None) -> SilcTrainer:
    try:
        return run_training(*parse_args(argv))
    finally:
        # Under torchrun, leaving the process group to interpreter teardown can abort a rank (gloo threads).
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run_script(main)
