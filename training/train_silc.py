"""Pretrain or fine-tune a SILC model with `SilcTrainer`.

    accelerate launch training/train_silc.py --config training/configs/tiny.json      # CPU, generated data
    accelerate launch --multi_gpu --num_processes 8 training/train_silc.py --config training/configs/silc_b16.json \\
        --train_data "shards/{00000..01023}.tar" --image_column jpg --text_column txt --streaming
    python training/train_silc.py --init_from path/to/clip-or-siglip-or-silc --distill_start_step 0 ...

Arguments: `silc_hf.training.arguments` (`SilcModelArguments`, `SilcDataArguments`, `SilcTrainingArguments`, which
include every `TrainingArguments` field and the multi-crop numbers). `--config` reads a JSON or YAML file of the
same names (`model_config` may be a `SilcConfig` dict there); command-line arguments override the file.
"""

import torch

from silc_hf.tools.cli import ArgumentParser, run_script
from silc_hf.training import SilcDataArguments, SilcModelArguments, SilcTrainer, SilcTrainingArguments, run_training


def parse_args(argv: list[str] | None = None) -> tuple[SilcModelArguments, SilcDataArguments, SilcTrainingArguments]:
    parser = ArgumentParser(
        (SilcModelArguments, SilcDataArguments, SilcTrainingArguments), description=__doc__.splitlines()[0]
    )
    return parser.parse(argv)


def main(argv: list[str] | None = None) -> SilcTrainer:
    try:
        return run_training(*parse_args(argv))
    finally:
        # Under torchrun, leaving the process group to interpreter teardown can abort a rank (gloo threads).
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run_script(main)
