"""Checkpoints that survive preemption and load as models.

Every `checkpoint-N` folder written by `SilcTrainer` is a `SilcModel` folder (config, `model.safetensors` with
the student's weights, processor, model code), so `AutoModel.from_pretrained`, the pipelines and
`evaluate_silc.py` read it mid-run; what resuming needs beyond the student (the distillation head, the EMA
teacher, the center) sits beside it in `distillation_state.safetensors`, with the Trainer's optimizer,
scheduler, RNG and `trainer_state.json`.

The Trainer writes `trainer_state.json` last, so a folder without it was cut short by a kill. Rerunning a
command finds the newest *complete* checkpoint: trainer state readable, every weights file readable.
"""

import json
import os
import re
import shutil

from safetensors.torch import load_file
from transformers.utils import logging

logger = logging.get_logger(__name__)

DISTILLATION_STATE_NAME = "distillation_state.safetensors"
STUDENT_WEIGHTS_NAME = "model.safetensors"
STUDENT_INDEX_NAME = "model.safetensors.index.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def student_weight_files(folder: str) -> list[str]:
    """The safetensors files holding a model folder's weights (one file, or the shards of an index)."""
    index = os.path.join(folder, STUDENT_INDEX_NAME)
    if os.path.isfile(index):
        with open(index) as file:
            shards = sorted(set(json.load(file)["weight_map"].values()))
        return [os.path.join(folder, shard) for shard in shards]
    return [os.path.join(folder, STUDENT_WEIGHTS_NAME)]


def load_student_state(folder: str) -> dict:
    state = {}
    for path in student_weight_files(folder):
        state.update(load_file(path))
    return state


def incomplete_reason(folder: str) -> str | None:
    """Why `folder` cannot be resumed from, or None if it can."""
    try:
        with open(os.path.join(folder, "trainer_state.json")) as file:
            json.load(file)
    except (OSError, ValueError) as error:
        return f"no readable trainer_state.json ({error.__class__.__name__}: the save was cut short)"
    weights = student_weight_files(folder)
    distillation = os.path.join(folder, DISTILLATION_STATE_NAME)
    if os.path.isfile(distillation):
        weights.append(distillation)
    for path in weights:
        try:
            load_file(path)
        except Exception as error:  # safetensors raises its own error types for truncated or garbled files
            return f"unreadable weights {os.path.basename(path)} ({error})"
    return None


def checkpoint_folders(output_dir: str) -> list[str]:
    """`checkpoint-N` folders of `output_dir`, newest (largest N) first."""
    if not os.path.isdir(output_dir):
        return []
    steps = [(int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CHECKPOINT.match(name))]
    return [os.path.join(output_dir, name) for _, name in sorted(steps, reverse=True)]


def latest_complete_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint in `output_dir` that can be resumed from; skipped folders are logged by name."""
    for folder in checkpoint_folders(output_dir):
        reason = incomplete_reason(folder)
        if reason is None:
            return folder
        logger.warning(f"Skipping {folder}: {reason}.")
    return None


def resolve_resume_checkpoint(resume_from_checkpoint: str | None, output_dir: str, overwrite: bool) -> str | None:
    """What a training run starts from: an explicit folder; "latest" or nothing -> the newest complete
    checkpoint in `output_dir` (none: step 0); `overwrite` -> step 0, deleting `output_dir`'s checkpoints."""
    if overwrite:
        if resume_from_checkpoint:
            raise ValueError(
                f"--overwrite_output_dir starts from step 0 but --resume_from_checkpoint={resume_from_checkpoint!r} "
                "asks to resume; drop one of them."
            )
        for folder in checkpoint_folders(output_dir):
            logger.warning(f"--overwrite_output_dir: deleting {folder}.")
            shutil.rmtree(folder)
        return None
    if resume_from_checkpoint and resume_from_checkpoint != "latest":
        if not os.path.isdir(resume_from_checkpoint):
            raise ValueError(
                f"--resume_from_checkpoint={resume_from_checkpoint!r} is not a folder; give a checkpoint-N folder, "
                "or 'latest' for the newest complete checkpoint in --output_dir."
            )
        return resume_from_checkpoint
    found = latest_complete_checkpoint(output_dir)
    if found:
        logger.warning(
            f"Resuming from {found}, the newest complete checkpoint in {output_dir} "
            "(--overwrite_output_dir starts from step 0 instead)."
        )
    elif resume_from_checkpoint == "latest":
        logger.warning(
            f"--resume_from_checkpoint latest: no complete checkpoint in {output_dir}; starting from step 0."
        )
    return found
