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
import json

import torch
import yaml
from transformers import HfArgumentParser

from silc_hf.data import SilcDataArguments
from silc_hf.factory import SilcModelArguments, run_training
from silc_hf.trainer import SilcTrainer, SilcTrainingArguments


def parse_args(argv: list[str] | None = None):
    """Parse (SilcModelArguments, SilcDataArguments, SilcTrainingArguments, inline model config dict or None)."""
    parser = HfArgumentParser((SilcModelArguments, SilcDataArguments, SilcTrainingArguments))
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, rest = pre.parse_known_args(argv)
    inline_model_config = None
    if known.config:
        with open(known.config) as file:
            values = yaml.safe_load(file) if known.config.endswith((".yaml", ".yml")) else json.load(file)
        if isinstance(values.get("model_config"), dict):
            inline_model_config = values.pop("model_config")
        valid = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ValueError(f"{known.config} has unknown keys {unknown}; see `python training/train_silc.py --help`.")
        parser.set_defaults(**values)
    return (*parser.parse_args_into_dataclasses(rest), inline_model_config)


def main(argv: list[str] | None = None) -> SilcTrainer:
    try:
        return run_training(*parse_args(argv))
    finally:
        # Under torchrun, leaving the process group to interpreter teardown can abort a rank (gloo threads).
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
