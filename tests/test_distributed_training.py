"""Two CPU ranks through torchrun: DDP and FSDP2 runs of the train script end in the same weights.

FSDP shards the teacher like the student, so the EMA runs shard by shard; the distillation loss reads the
teacher every step, so equal losses and weights across the two runs show that the sharded EMA is right.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import write_caption_folder

ROOT = Path(__file__).resolve().parents[1]
FSDP = [
    "--fsdp",
    "full_shard auto_wrap",
    "--fsdp_config",
    json.dumps({"transformer_layer_cls_to_wrap": ["SilcEncoderLayer"], "version": 2}),
]


def _torchrun(data, output_dir, *extra):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "training/train_silc.py"),
        "--config",
        str(ROOT / "training/configs/tiny.json"),
        "--train_data",
        str(data),
        "--output_dir",
        str(output_dir),
        "--use_cpu",
        "true",
        "--max_steps",
        "4",
        "--per_device_train_batch_size",
        "8",
        "--logging_steps",
        "1",
        "--save_steps",
        "100",
        *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    state = json.loads((Path(output_dir) / "trainer_state.json").read_text())
    return [entry for entry in state["log_history"] if "loss" in entry], load_file(
        str(Path(output_dir) / "model.safetensors")
    )


PATCH = ["--patch_distill_weight", "1.0", "--patch_head", "separate"]


@pytest.mark.parametrize("options", [[], PATCH], ids=["silc", "masked-patch"])
def test_ddp_and_fsdp_train_identically(tmp_path, options):
    write_caption_folder(tmp_path / "data", n=32, seed=3)
    ddp_logs, ddp_weights = _torchrun(tmp_path / "data", tmp_path / "ddp", *options)
    fsdp_logs, fsdp_weights = _torchrun(tmp_path / "data", tmp_path / "fsdp", *FSDP, *options)
    assert len(ddp_logs) == len(fsdp_logs) == 4
    keys = ("loss", "contrastive_loss", "distillation_loss") + (("patch_distillation_loss",) if options else ())
    for ddp, fsdp in zip(ddp_logs, fsdp_logs):
        for key in keys:
            assert fsdp[key] == pytest.approx(ddp[key], rel=1e-4), key
    assert ddp_weights.keys() == fsdp_weights.keys()
    for key in ddp_weights:
        assert (ddp_weights[key] - fsdp_weights[key]).abs().max().item() <= 1e-5, key


def test_ddp_on_rank_split_streaming_data_equals_one_process_on_the_global_batch(tmp_path):
    """One webdataset shard streamed to 2 ranks is split example by example (rank r reads r, r+2, ...), so
    2 ranks x 8 see the same 16 examples per step as one process x 16; crops are seeded by the example key,
    and the distributed loss equals the global-batch loss: the runs must agree. The masked patch loss is on, with its
    masks drawn per example and its centre all-reduced, so it must agree too."""
    from silc_hf.data.scenes import export

    export(str(tmp_path / "wds"), {"train": 64}, seed=0, image_size=32, fmt="webdataset", shard_size=1000)
    data = ["--streaming", "true", "--image_column", "png", "--text_column", "txt", "--eval_data", ""]
    data += ["--patch_distill_weight", "1.0", "--mask_probability", "0.75"]
    ddp_logs, ddp_weights = _torchrun(tmp_path / "wds" / "train", tmp_path / "ddp", *data)
    single = subprocess.run(
        [
            sys.executable,
            str(ROOT / "training/train_silc.py"),
            "--config",
            str(ROOT / "training/configs/tiny.json"),
            "--train_data",
            str(tmp_path / "wds" / "train"),
            "--output_dir",
            str(tmp_path / "single"),
            "--use_cpu",
            "true",
            "--max_steps",
            "4",
            "--per_device_train_batch_size",
            "16",
            "--logging_steps",
            "1",
            "--save_steps",
            "100",
            *data,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-4000:]
    single_logs = [
        e for e in json.loads((tmp_path / "single" / "trainer_state.json").read_text())["log_history"] if "loss" in e
    ]
    single_weights = load_file(str(tmp_path / "single" / "model.safetensors"))
    for ddp, one in zip(ddp_logs, single_logs, strict=True):
        for key in ("loss", "contrastive_loss", "distillation_loss", "patch_distillation_loss"):
            assert ddp[key] == pytest.approx(one[key], rel=1e-4), key
    for key in single_weights:
        assert (ddp_weights[key] - single_weights[key]).abs().max().item() <= 1e-4, key
