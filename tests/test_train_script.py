"""training/train_silc.py end to end with training/configs/tiny.json on a generated dataset."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoProcessor, pipeline

from silc_hf.data import BadSampleError

from conftest import COLORS, SHAPES, load_script, shape_image, write_caption_folder

ROOT = Path(__file__).resolve().parents[1]


def _script():
    return load_script("training/train_silc.py")


def _run(data, output_dir, *extra):
    return _script().main(
        [
            "--config",
            str(ROOT / "training/configs/tiny.json"),
            "--train_data",
            str(data),
            "--output_dir",
            str(output_dir),
            "--use_cpu",
            "true",
            *extra,
        ]
    )


def test_tiny_config_trains_logs_both_parts_and_exports_a_loadable_model(tmp_path):
    write_caption_folder(tmp_path / "data", n=64, seed=1)
    trainer = _run(tmp_path / "data", tmp_path / "run", "--max_steps", "30", "--save_steps", "1000")
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 6 and all("contrastive_loss" in e and "distillation_loss" in e for e in logs)
    assert logs[-1]["loss"] < logs[0]["loss"]
    assert logs[-1]["contrastive_loss"] < logs[0]["contrastive_loss"]
    model = AutoModel.from_pretrained(tmp_path / "run")
    processor = AutoProcessor.from_pretrained(tmp_path / "run")
    assert model.config.text_config.vocab_size == len(processor.tokenizer)
    classifier = pipeline("zero-shot-image-classification", model=str(tmp_path / "run"))
    image = shape_image("red", "circle", 5)
    scores = classifier(image, candidate_labels=["a red circle", "a blue square"], hypothesis_template="{}")
    assert sum(r["score"] for r in scores) == pytest.approx(1.0)
    # the run reports itself: a model card with the final zero-shot metrics, and the training curves
    eval_metrics = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    card = (tmp_path / "run" / "README.md").read_text()
    assert "model-index" in card and f"value: {eval_metrics['eval_image_to_text_R@1']}" in card
    assert (tmp_path / "run" / "training_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_command_line_overrides_the_config_file_and_unknown_keys_are_refused(tmp_path):
    model_args, data_args, args = _script().parse_args(
        ["--config", str(ROOT / "training/configs/tiny.json"), "--max_steps", "7", "--output_dir", str(tmp_path)]
    )
    assert args.max_steps == 7 and args.num_local_crops == 4 and model_args.train_tokenizer
    assert model_args.model_config["vision_config"]["hidden_size"] == 64
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"max_step": 3}))
    with pytest.raises(ValueError, match=r"unknown keys \['max_step'\]"):
        _script().parse_args(["--config", str(bad)])


def _add_bad_samples(folder):
    """Append undecodable, empty, tiny and caption-less samples to an imagefolder."""
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    (folder / "broken.png").write_bytes(b"definitely not a png")
    (folder / "empty.png").write_bytes(b"")
    shape_image("red", "circle", 0, size=4).save(folder / "tiny.png")
    shape_image("blue", "square", 0).save(folder / "nocaption.png")
    rows += [
        {"file_name": "broken.png", "text": "a broken file"},
        {"file_name": "empty.png", "text": "an empty file"},
        {"file_name": "tiny.png", "text": "a tiny image"},
        {"file_name": "nocaption.png", "text": ""},
    ]
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))


def test_bad_samples_are_skipped_and_logged_and_strict_mode_names_them(tmp_path):
    write_caption_folder(tmp_path / "data", n=28, seed=2)
    _add_bad_samples(tmp_path / "data")
    trainer = _run(
        tmp_path / "data",
        tmp_path / "run",
        "--max_steps",
        "4",
        "--per_device_train_batch_size",
        "16",
        "--logging_steps",
        "1",
    )
    assert trainer.state.global_step == 4
    logs = [entry for entry in trainer.state.log_history if "skipped_samples" in entry]
    assert logs[-1]["skipped_samples"] >= 4  # 32 samples, 4 bad, 64 drawn over 4 steps: each bad one seen
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in logs if "loss" in e)
    with pytest.raises(BadSampleError, match=r"Bad sample .*(broken|empty|tiny|nocaption)\.png"):
        _run(
            tmp_path / "data",
            tmp_path / "strict",
            "--max_steps",
            "4",
            "--per_device_train_batch_size",
            "16",
            "--strict",
            "true",
        )


def test_yaml_config_is_read_like_json(tmp_path):
    import yaml

    config = json.loads((ROOT / "training/configs/tiny.json").read_text())
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**config, "max_steps": 9}))
    model_args, data_args, args = _script().parse_args(["--config", str(path), "--output_dir", str(tmp_path)])
    assert args.max_steps == 9 and data_args.train_data == "synthetic:train:2000"
    assert model_args.model_config == config["model_config"]


def test_silc_fine_tuning_starts_from_an_hf_clip_checkpoint(tmp_path, clip_folder):
    write_caption_folder(tmp_path / "data", n=16, seed=4)
    trainer = _run(
        tmp_path / "data",
        tmp_path / "ft",
        "--init_from",
        str(clip_folder),
        "--distill_start_step",
        "0",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "8",
        "--logging_steps",
        "1",
        "--local_crop_size",
        "16",
    )
    logs = [e for e in trainer.state.log_history if "distillation_loss" in e]
    assert len(logs) == 2
    model = AutoModel.from_pretrained(tmp_path / "ft")
    assert model.config.vision_config.pooling_type == "cls" and model.config.loss_type == "softmax"
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(clip_folder)
    assert model.config.text_config.vocab_size == clip.config.text_config.vocab_size
    assert not torch.equal(model.vision_model.projection.weight, clip.visual_projection.weight)  # it trained


def _newest_complete(folder: Path) -> int:
    steps = [int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(steps, default=0)


def test_a_killed_run_rerun_with_the_same_command_resumes_from_its_newest_complete_checkpoint(tmp_path):
    """SIGKILL mid-run, a newer checkpoint folder with truncated weights, the same command again: the rerun skips
    the broken folder (naming it), resumes from the complete one, and ends with the weights of an uninterrupted
    run. Every checkpoint is also a model folder (AutoModel, the pipeline and evaluate_silc.py read it)."""
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    write_caption_folder(tmp_path / "data", n=64, seed=1)

    def command(output_dir):
        return [
            sys.executable,
            str(ROOT / "training/train_silc.py"),
            "--config",
            str(ROOT / "training/configs/tiny.json"),
            "--train_data",
            str(tmp_path / "data"),
            "--eval_data",
            "",
            "--output_dir",
            str(output_dir),
            "--use_cpu",
            "true",
            "--max_steps",
            "40",
            "--save_steps",
            "2",
            "--save_total_limit",
            "3",
            "--per_device_train_batch_size",
            "8",
            "--disable_tqdm",
            "true",
        ]

    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command(tmp_path / "straight"), check=True, env=environment, capture_output=True)

    run = tmp_path / "run"
    process = subprocess.Popen(command(run), env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while _newest_complete(run) < 4 and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL  # killed, not finished
    step = _newest_complete(run)
    assert 4 <= step < 40 and not (run / "model.safetensors").exists()

    checkpoint = run / f"checkpoint-{step}"
    model = AutoModel.from_pretrained(checkpoint)  # a checkpoint is a model folder: student only
    assert not any(name.startswith(("teacher", "head")) for name in model.state_dict())
    torch.testing.assert_close(model.state_dict(), load_file(checkpoint / "model.safetensors"), rtol=0, atol=0)
    classifier = pipeline("zero-shot-image-classification", model=str(checkpoint))
    labels = ["a red circle", "a blue square"]
    assert len(classifier(shape_image("red", "circle", 5), candidate_labels=labels, hypothesis_template="{}")) == 2
    evaluate_silc = load_script("training/evaluate_silc.py")
    results = evaluate_silc.main(["--model", str(checkpoint), "--data", str(tmp_path / "data"), "--tasks", "retrieval"])
    assert 0 <= results["results"][0]["metrics"]["image_to_text_R@1"] <= 1

    broken = run / f"checkpoint-{step + 1}"  # newer than the complete one, weights cut short
    shutil.copytree(checkpoint, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])

    rerun = subprocess.run(command(run), env=environment, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"Skipping {broken}: unreadable weights model.safetensors" in rerun.stderr
    assert f"Resuming from {checkpoint}" in rerun.stderr  # not from step 0
    straight, resumed = load_file(tmp_path / "straight/model.safetensors"), load_file(run / "model.safetensors")
    torch.testing.assert_close(resumed, straight, rtol=0, atol=1e-6)


def test_help_is_short_leads_with_config_and_documents_every_silc_argument(capsys):
    import dataclasses

    from transformers import TrainingArguments

    from silc_hf.training.arguments import SilcDataArguments, SilcModelArguments, SilcTrainingArguments

    with pytest.raises(SystemExit):
        _script().parse_args(["--help"])
    text = capsys.readouterr().out
    assert text.index("--config") < text.index("--train_data") and len(text.splitlines()) < 120
    inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
    for cls in (SilcModelArguments, SilcDataArguments, SilcTrainingArguments):
        for item in dataclasses.fields(cls):
            if item.name not in inherited and not item.name.startswith("_"):
                line = next(line for line in text.splitlines() if line.startswith(f"  --{item.name} "))
                assert line.split("): ", 1)[1].strip(), f"--{item.name} has no help text"
    assert "synthetic:SPLIT:N" in text


def _write_img2dataset_shards(
    folder, shards: int = 2, per_shard: int = 8, caption_in_txt: bool = True, caption_of=None
) -> list[str]:
    """Shards as img2dataset writes them: `{key}.jpg`, `{key}.txt` and `{key}.json` in each tar (the caption also in
    the json's "caption"), and `{shard}.parquet` and `{shard}_stats.json` beside them. Returns the captions
    (`caption_of(key)`, default "a {colour} {shape}")."""
    import io
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    captions = []
    for shard in range(shards):
        rows = []
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as tar:
            for index in range(per_shard):
                key = f"{shard:05d}{index:04d}"
                color, shape = list(COLORS)[index % len(COLORS)], SHAPES[shard % len(SHAPES)]
                caption = caption_of(key) if caption_of else f"a {color} {shape}"
                captions.append(caption)
                jpeg = io.BytesIO()
                shape_image(color, shape, seed=shard * 100 + index).save(jpeg, format="JPEG")
                meta = {"url": f"https://example.com/{key}.jpg", "key": key, "status": "success", "caption": caption}
                members = {"jpg": jpeg.getvalue(), "json": json.dumps(meta).encode()}
                if caption_in_txt:
                    members["txt"] = caption.encode()
                for suffix, data in members.items():
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                rows.append(meta)
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{shard:05d}.parquet")
        (folder / f"{shard:05d}_stats.json").write_text(json.dumps({"count": per_shard, "successes": per_shard}))
    return captions


@pytest.mark.parametrize("caption_in_txt", [True, False], ids=["txt", "json-caption"])
def test_img2dataset_shards_train_without_column_flags_and_evaluate_on_an_imagefolder(tmp_path, caption_in_txt):
    captions = _write_img2dataset_shards(tmp_path / "shards", caption_in_txt=caption_in_txt)
    write_caption_folder(tmp_path / "eval", n=8, seed=3)  # another layout: image + text columns
    trainer = _run(
        tmp_path / "shards/{00000..00001}.tar",
        tmp_path / "run",
        *("--eval_data", str(tmp_path / "eval"), "--max_steps", "2", "--logging_steps", "1", "--save_steps", "1000"),
        *("--per_device_train_batch_size", "8"),
    )
    logs = [entry for entry in trainer.state.log_history if "contrastive_loss" in entry]
    assert len(logs) == 2 and logs[-1]["skipped_samples"] == 0  # every sample had its image and its caption
    vocabulary = AutoProcessor.from_pretrained(tmp_path / "run").tokenizer.get_vocab()  # trained on the captions
    assert all(f"{word}</w>" in vocabulary for caption in captions for word in caption.split())
    results = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert 0 <= results["eval_image_to_text_R@1"] <= 1  # the imagefolder's own columns were found


def test_data_without_an_image_caption_pair_fails_at_once_naming_its_columns_and_the_flags(tmp_path):
    write_caption_folder(tmp_path / "data", n=4)
    metadata = tmp_path / "data" / "metadata.jsonl"
    metadata.write_text(metadata.read_text().replace('"text"', '"description"'))
    with pytest.raises(ValueError, match=r"No caption column in the dataset's columns \['image', 'description'\]"):
        _run(tmp_path / "data", tmp_path / "run")
    with pytest.raises(ValueError, match=r"pass --eval_image_column / --eval_text_column"):
        _run(tmp_path / "data", tmp_path / "run", "--text_column", "description", "--eval_data", str(tmp_path / "data"))


@pytest.fixture
def http_server():
    """A loopback HTTP server over a folder, started and stopped by the test; yields (folder, base URL)."""
    import functools
    import http.server
    import tempfile
    import threading

    folder = Path(tempfile.mkdtemp())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # quiet
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    shutil.rmtree(folder, ignore_errors=True)


def test_shards_served_over_http_stream_and_train(tmp_path, http_server):
    folder, url = http_server
    captions = _write_img2dataset_shards(folder / "shards")
    trainer = _run(
        f"{url}/shards/{{00000..00001}}.tar",
        tmp_path / "run",
        *("--streaming", "true", "--max_steps", "3", "--logging_steps", "1", "--save_steps", "1000"),
        *("--per_device_train_batch_size", "4", "--eval_data", "", "--eval_strategy", "no"),
    )
    logs = [entry for entry in trainer.state.log_history if "contrastive_loss" in entry]
    assert len(logs) == 3 and logs[-1]["skipped_samples"] == 0
    vocabulary = AutoProcessor.from_pretrained(tmp_path / "run").tokenizer.get_vocab()  # trained on the served captions
    assert all(f"{word}</w>" in vocabulary for caption in captions for word in caption.split())


def test_a_resumed_streaming_run_trains_on_the_samples_of_a_straight_run_none_repeated_or_skipped(
    tmp_path, monkeypatch
):
    from silc_hf.training.trainer import SilcTrainer

    words = ["zero", "one", "two", "three", "four", "five", "six", "seven"]
    caption_of = lambda key: f"shard {words[int(key[4])]} {words[int(key[-1])]}"  # noqa: E731  (unique per key)
    _write_img2dataset_shards(tmp_path / "shards", caption_of=caption_of)
    trained = []  # the captions of every batch a step trains on, as token ids
    compute_loss = SilcTrainer.compute_loss

    def recording(self, model, inputs, *args, **kwargs):
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        trained.append([tuple(row[m.bool()].tolist()) for row, m in zip(ids, mask)])
        return compute_loss(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(SilcTrainer, "compute_loss", recording)
    flags = ("--streaming", "true", "--max_steps", "6", "--save_steps", "3", "--per_device_train_batch_size", "2")
    flags += ("--eval_data", "", "--eval_strategy", "no", "--dataloader_num_workers", "0")
    _run(tmp_path / "shards", tmp_path / "straight", *flags)
    straight, trained[:] = list(trained), []
    _run(tmp_path / "shards", tmp_path / "run", *flags)
    first = list(trained)
    shutil.rmtree(tmp_path / "run" / "checkpoint-6")  # preempted after step 3's checkpoint
    trained[:] = []
    _run(tmp_path / "shards", tmp_path / "run", *flags)  # the same command resumes from checkpoint-3
    resumed = first[:3] + trained
    assert len(straight) == len(resumed) == 6 and resumed == straight
    samples = [sample for batch in straight for sample in batch]
    assert len(set(samples)) == len(samples) == 12  # 12 of the 16 samples, each once


@pytest.mark.parametrize(
    "recipe, expected",
    [
        ("silc_b16", dict(distill_start_ratio=None, patch_distill_weight=0.0, teacher_tower="ema")),
        (
            "siglip2_b16",
            dict(distill_start_ratio=0.8, patch_distill_weight=0.25, mask_ratio=[0.5, 0.5], teacher_tower="ema"),
        ),
        ("tips_b16", dict(distill_start_ratio=None, patch_loss_tokens="all", teacher_tower="student")),
    ],
)
def test_the_recipes_parse_into_their_stated_options(recipe, expected, tmp_path):
    model_args, _, args = _script().parse_args(
        ["--config", str(ROOT / f"training/configs/{recipe}.json"), "--output_dir", str(tmp_path), "--bf16", "false"]
    )
    assert {key: getattr(args, key) for key in expected} == expected
    assert args.distill_weight == 1.0 and args.num_local_crops == 8
