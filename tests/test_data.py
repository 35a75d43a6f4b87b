"""Data loading and the bad-sample policy: every bad kind is skipped and counted, or raises in strict mode."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from silc_hf.data import BadSampleError, load_image_text_dataset, to_rgb
from silc_hf.data.loading import expand_braces
from silc_hf.tools.benchmark import photo_like_jpeg
from silc_hf.training.arguments import MultiCropArguments
from silc_hf.training.augmentation import MultiCropTransform
from silc_hf.training.data import MultiCropDataset, SamplePreparer, StreamingMultiCropDataset

from conftest import shape_image, write_caption_folder


def _preparer(**kwargs) -> SamplePreparer:
    transform = MultiCropTransform(MultiCropArguments(num_local_crops=2, local_crop_size=16), global_crop_size=32)
    return SamplePreparer(transform, min_image_size=16, **kwargs)


def _png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


GOOD = _png(shape_image("red", "circle", 0))


def truncated_jpeg() -> bytes:
    """A JPEG whose header is intact but whose scan data stops two thirds of the way."""
    data = _png(shape_image("red", "square", 1, size=96), "JPEG")
    return data[: len(data) * 2 // 3]


def bomb_png() -> bytes:
    """A 9500 x 9500 one-bit PNG: 90 Mpixel (above Pillow's 89.5 Mpixel limit) in a few kB."""
    return _png(Image.new("1", (9500, 9500)))


BAD_SAMPLES = {
    "undecodable bytes": ({"bytes": b"\x89PNG not really an image" * 10, "path": None}, "a cat", "undecodable image"),
    "truncated file": ({"bytes": truncated_jpeg(), "path": None}, "a cat", "truncated or corrupt"),
    "zero-size file": ({"bytes": b"", "path": None}, "a cat", "zero-size image file"),
    "tiny image": ({"bytes": _png(Image.new("RGB", (8, 8))), "path": None}, "a cat", "smaller than min_image_size=16"),
    "missing caption": ({"bytes": GOOD, "path": None}, None, "missing caption"),
    "empty caption": ({"bytes": GOOD, "path": None}, "   ", "empty caption"),
    "non-string caption": ({"bytes": GOOD, "path": None}, 42, "caption is a int, not a string"),
    "overlong caption": ({"bytes": GOOD, "path": None}, "word " * 400, "caption has 1999 characters"),
    "missing image": (None, "a cat", "missing image"),
}


@pytest.mark.parametrize("kind", list(BAD_SAMPLES))
def test_each_bad_sample_kind_is_rejected_with_its_reason(kind):
    image, caption, reason = BAD_SAMPLES[kind]
    with pytest.raises(BadSampleError, match=reason):
        _preparer()({"image": image, "text": caption}, np.random.default_rng(0))


def test_decompression_bombs_are_rejected_before_decoding():
    with pytest.raises(BadSampleError, match=r"decompression bomb \(Image size \(90250000 pixels\) exceeds limit"):
        _preparer()({"image": {"bytes": bomb_png(), "path": None}, "text": "a cat"}, np.random.default_rng(0))
    with pytest.raises(BadSampleError, match=r"decompression bomb: 48x48 pixels \(> max_image_pixels=1000\)"):
        _preparer(max_image_pixels=1000)(
            {"image": {"bytes": GOOD, "path": None}, "text": "a cat"}, np.random.default_rng(0)
        )


def test_other_image_modes_become_correct_rgb():
    gray16 = Image.fromarray(np.full((20, 20), 32896, dtype=np.uint16))  # mode I;16, mid grey
    assert gray16.mode == "I;16"
    assert to_rgb(gray16).getpixel((0, 0)) == (128, 128, 128)  # scaled, not clipped to white
    transparent = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    half = Image.new("RGBA", (20, 20), (255, 0, 0, 128))
    assert to_rgb(transparent).getpixel((0, 0)) == (255, 255, 255)  # composited over white
    assert to_rgb(half).getpixel((0, 0)) == (255, 127, 127)
    palette = Image.new("RGB", (20, 20), (0, 0, 255)).convert("P")
    assert to_rgb(palette).getpixel((0, 0)) == (0, 0, 255)
    assert to_rgb(Image.new("L", (20, 20), 77)).getpixel((0, 0)) == (77, 77, 77)
    cmyk = Image.open(io.BytesIO(_png(Image.new("CMYK", (20, 20), (0, 255, 255, 0)), "JPEG")))
    assert cmyk.mode == "CMYK"
    red = to_rgb(cmyk).getpixel((0, 0))
    assert red[0] > 200 and red[1] < 40 and red[2] < 40
    with pytest.raises(BadSampleError, match="mode F"):
        to_rgb(Image.new("F", (4, 4)))


def _mixed_folder(root):
    """8 good images, every bad kind that an imagefolder can hold, and convertible modes."""
    rows = write_caption_folder(root, n=8)
    bad = {
        "undecodable.png": b"not an image at all" * 5,
        "truncated.jpg": truncated_jpeg(),
        "empty.png": b"",
        "tiny.png": _png(Image.new("RGB", (8, 8))),
        "bomb.png": bomb_png(),
        "no_caption.png": GOOD,
        "empty_caption.png": GOOD,
        "long_caption.png": GOOD,
    }
    captions = {"no_caption.png": None, "empty_caption.png": "", "long_caption.png": "x" * 5000}
    convertible = {
        "gray.png": Image.new("L", (40, 40), 90),
        "palette.png": shape_image("green", "circle", 3).convert("P"),
        "alpha.png": shape_image("red", "square", 4).convert("RGBA"),
        "gray16.png": Image.fromarray(np.full((40, 40), 30000, dtype=np.uint16)),
        "cmyk.jpg": shape_image("blue", "circle", 5).convert("CMYK"),
    }
    for name, data in bad.items():
        (root / name).write_bytes(data)
        rows.append({"file_name": name, "text": captions.get(name, "a bad one")})
    for name, image in convertible.items():
        image.save(root / name)
        rows.append({"file_name": name, "text": f"a {name.split('.')[0]} image"})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return len(rows), len(bad)


def test_dataset_skips_and_counts_bad_samples_and_strict_mode_names_them(tmp_path, caplog):
    total, bad = _mixed_folder(tmp_path)
    raw = load_image_text_dataset(str(tmp_path))
    dataset = MultiCropDataset(raw, _preparer(), seed=0)
    samples = [dataset[i] for i in range(len(dataset))]
    assert len(samples) == total
    assert all(s["global_views"].shape == (2, 3, 32, 32) for s in samples)
    # every bad sample was replaced by a good one, warned about and counted exactly once
    assert sum(s["skipped_samples"] for s in samples) == bad
    warnings = [r.getMessage() for r in caplog.records if "Skipping bad sample" in r.getMessage()]
    assert len(warnings) == bad
    warned = sorted(message.split()[3].rsplit("/", 1)[-1].rstrip(":") for message in warnings)
    assert warned == sorted(
        name
        for name in (
            "undecodable.png",
            "truncated.jpg",
            "empty.png",
            "tiny.png",
            "bomb.png",
            "no_caption.png",
            "empty_caption.png",
            "long_caption.png",
        )
    )

    strict = MultiCropDataset(raw, _preparer(), seed=0, strict=True)
    with pytest.raises(
        BadSampleError,
        match=r"Bad sample \S+/(undecodable|truncated|empty|tiny|bomb|\w+_caption)\.\w+: .*\(strict mode",
    ):
        [strict[i] for i in range(len(strict))]


def _write_shards(folder, n_shards=2, per_shard=5, caption=lambda key, i: f"a red circle {i}"):
    folder.mkdir()
    for shard in range(n_shards):
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as tar:
            for i in range(per_shard):
                key = f"{shard:05d}_{i:03d}"
                for suffix, data in (
                    ("jpg", _png(shape_image("red", "circle", i), "JPEG")),
                    ("txt", caption(key, i).encode()),
                ):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("streaming", [False, True])
def test_webdataset_shards_load_by_pattern(tmp_path, streaming):
    _write_shards(tmp_path / "shards")
    raw = load_image_text_dataset(str(tmp_path / "shards/{00000..00001}.tar"), streaming=streaming)
    preparer = _preparer(image_column="jpg", text_column="txt")
    dataset = (StreamingMultiCropDataset if streaming else MultiCropDataset)(raw, preparer, seed=0)
    samples = list(dataset) if streaming else [dataset[i] for i in range(len(dataset))]
    assert len(samples) == 10
    assert sorted(s["caption"] for s in samples)[:2] == ["a red circle 0", "a red circle 0"]


def test_streaming_splits_by_rank(tmp_path):
    _write_shards(tmp_path / "shards", n_shards=4, per_shard=2)
    raw = load_image_text_dataset(str(tmp_path / "shards"), streaming=True)
    preparer = _preparer(image_column="jpg", text_column="txt")
    per_rank = [
        [s["caption"] for s in StreamingMultiCropDataset(raw, preparer, rank=r, world_size=2)] for r in range(2)
    ]
    assert len(per_rank[0]) == len(per_rank[1]) == 4  # 4 shards of 2: two shards per rank
    assert sorted(per_rank[0] + per_rank[1]) == sorted(f"a red circle {i}" for i in range(2) for _ in range(4))
    keys = [[s for s in StreamingMultiCropDataset(raw, preparer, rank=r, world_size=2)] for r in range(2)]
    assert not torch.equal(keys[0][0]["global_views"], keys[1][0]["global_views"])


def test_two_ranks_of_two_workers_see_every_streamed_sample_exactly_once(tmp_path):
    # 8 shards: 2 ranks x 2 workers x 2 shards each (datasets gives each worker whole shards)
    _write_shards(tmp_path / "shards", n_shards=8, per_shard=3, caption=lambda key, i: key)
    raw = load_image_text_dataset(str(tmp_path / "shards"), streaming=True)
    preparer, seen = _preparer(image_column="jpg", text_column="txt"), []
    for rank in range(2):
        dataset = StreamingMultiCropDataset(raw, preparer, rank=rank, world_size=2)
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
        seen += [sample["caption"] for sample in loader]  # the caption is the sample's __key__
    everything = [f"{shard:05d}_{i:03d}" for shard in range(8) for i in range(3)]
    assert sorted(seen) == everything  # each key once: none repeated across ranks or workers, none missing


def test_brace_expansion_keeps_zero_padding():
    assert expand_braces("s/{00008..00011}.tar") == ["s/00008.tar", "s/00009.tar", "s/00010.tar", "s/00011.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def test_collator_batches_views_and_pads_text(tmp_path):
    from silc_hf import SilcImageProcessor, SilcProcessor
    from silc_hf.training.data import SilcMultiCropCollator

    from conftest import clip_tokenizer

    write_caption_folder(tmp_path, n=4)
    dataset = MultiCropDataset(load_image_text_dataset(str(tmp_path)), _preparer(), seed=0)
    processor = SilcProcessor(SilcImageProcessor(), clip_tokenizer())
    batch = SilcMultiCropCollator(processor, max_length=16)([dataset[i] for i in range(3)])
    assert batch["global_views"].shape == (3, 2, 3, 32, 32) and batch["local_views"].shape == (3, 2, 3, 16, 16)
    assert batch["global_augment"]["jitter_order"].shape == (3, 2, 4)
    assert batch["input_ids"].shape[0] == 3 and torch.equal(batch["skipped_samples"], torch.zeros(3, dtype=torch.long))


def test_reduced_jpeg_decoding_gives_the_full_resolution_crops_within_35_db():
    """The data worker decodes a JPEG at 1/2, 1/4 or 1/8 scale when every crop box stays at least as large as its
    view; the views match those cut from the full-resolution decode of the same boxes (PSNR >= 35 dB)."""
    transform = MultiCropTransform(MultiCropArguments(num_local_crops=8, local_crop_size=96), global_crop_size=224)
    preparer = SamplePreparer(transform)
    data = photo_like_jpeg(2048, 1536)
    reduced_somewhere = False
    for seed in range(4):
        fast = preparer({"image": {"bytes": data, "path": None}, "text": "a photo"}, np.random.default_rng(seed))
        full_image = preparer.image({"image": {"bytes": data, "path": None}})
        plan = transform.plan(*full_image.size, np.random.default_rng(seed))
        reduced_somewhere |= transform.reduction(plan) >= 2
        reference = transform.cut(full_image, plan)
        for key in ("global_views", "local_views"):
            error = (fast[key].double() - reference[key].double()).pow(2).mean()
            assert 10 * torch.log10(255**2 / error) >= 35, (seed, key)
            assert torch.equal(
                fast[key.replace("views", "augment")]["flip"], reference[key.replace("views", "augment")]["flip"]
            )
    assert reduced_somewhere
    opened = preparer.open({"image": {"bytes": data, "path": None}})
    assert SamplePreparer.decode(opened, reduction=5.0).size == (512, 384)  # 1/4: the largest power of 2 <= 5


def test_a_missing_local_path_fails_at_once_without_asking_the_hub(tmp_path, monkeypatch):
    from silc_hf.data import load_image_text_dataset

    with pytest.raises(FileNotFoundError, match=r"does not exist; pass an imagefolder directory"):
        load_image_text_dataset(str(tmp_path / "missing"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    with pytest.raises(FileNotFoundError, match=r"'outputs/demo' does not exist"):
        load_image_text_dataset("outputs/demo")  # a typo under an existing folder, not a Hub id


def test_a_name_neither_here_nor_on_the_hub_fails_at_once_with_what_to_do(tmp_path, monkeypatch):
    """A Hub-like id that is not a local folder: the Hub is asked once (here a local server standing in for it);
    "not found" and "unreachable" each give a clear error at once instead of `datasets`' ~30 s of retries."""
    import http.server
    import threading

    import huggingface_hub

    from silc_hf.data import load_image_text_dataset

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # what the Hub answers for a missing repository
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        with pytest.raises(FileNotFoundError, match=r"'outputs/demo' is neither a local path nor a dataset on the Hub"):
            load_image_text_dataset("outputs/demo")  # no outputs/ here: could have been a Hub id
    finally:
        server.shutdown()
        server.server_close()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")  # closed now
    unreachable = r"'outputs/demo' is not a local path, and the Hub cannot be reached.*HF_HUB_OFFLINE=1"
    with pytest.raises(ConnectionError, match=unreachable):
        load_image_text_dataset("outputs/demo")


def test_scripts_cap_torch_threads_at_a_containers_cpu_quota_unless_omp_num_threads_is_set(tmp_path, monkeypatch):
    import torch

    from silc_hf.tools.cli import cpu_quota, set_cpu_threads

    v2, v1, none = tmp_path / "v2", tmp_path / "v1", tmp_path / "none"
    (v2).mkdir()
    (v2 / "cpu.max").write_text("50000 100000\n")  # docker --cpus 0.5
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("250000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (none).mkdir()
    (none / "cpu.max").write_text("max 100000\n")
    assert (cpu_quota(str(v2)), cpu_quota(str(v1)), cpu_quota(str(none)), cpu_quota(str(tmp_path))) == (
        0.5,
        2.5,
        None,
        None,
    )
    threads = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(2)
        assert set_cpu_threads(str(v2)) == 1  # half a CPU: one thread
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        torch.set_num_threads(2)
        assert set_cpu_threads(str(v2)) == 2  # the user's choice stands
    finally:
        torch.set_num_threads(threads)


def test_scripts_print_user_errors_without_a_traceback(capsys, monkeypatch):
    from silc_hf.tools.cli import run_script

    def main():
        raise ValueError("--train_data is required (on the command line or in --config).")

    monkeypatch.delenv("SILC_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run_script(main)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: --train_data is required")
    monkeypatch.setenv("SILC_DEBUG", "1")
    with pytest.raises(ValueError, match="--train_data is required"):
        run_script(main)


def test_an_imagefolder_with_metadata_reads_as_datasets_imagefolder_reads_it(tmp_path):
    """The fast path for `metadata.jsonl` folders gives `datasets`' imagefolder's columns, features and values (an
    extra `<name>_file_name` image column and a nested file included)."""
    import datasets

    rows = write_caption_folder(tmp_path, n=6)
    (tmp_path / "masks").mkdir()
    for i, row in enumerate(rows):
        Image.fromarray(np.full((8, 8), i, dtype=np.uint8)).save(tmp_path / "masks" / f"{i}.png")
        row.update(mask_file_name=f"masks/{i}.png", label=i % 3)
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ours = load_image_text_dataset(str(tmp_path))
    reference = datasets.load_dataset("imagefolder", data_dir=str(tmp_path), split="train")
    assert ours.features == reference.features
    for mine, theirs in zip(ours, reference, strict=True):
        assert mine.keys() == theirs.keys()
        assert np.array_equal(np.asarray(mine["image"]), np.asarray(theirs["image"]))
        assert np.array_equal(np.asarray(mine["mask"]), np.asarray(theirs["mask"]))
        assert (mine["text"], mine["label"]) == (theirs["text"], theirs["label"])
    streamed = next(iter(load_image_text_dataset(str(tmp_path), streaming=True)))
    assert streamed["text"] == rows[0]["text"]


def test_an_imagefolder_metadata_row_without_file_name_is_named(tmp_path):
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"text": "a red circle"}))
    with pytest.raises(ValueError, match=r"metadata.jsonl must hold one JSON object with a 'file_name'"):
        load_image_text_dataset(str(tmp_path))


def test_an_imagefolder_metadata_field_of_later_rows_is_kept_and_a_missing_image_file_named(tmp_path):
    rows = write_caption_folder(tmp_path, n=3)
    rows[2]["source"] = "web"  # only the last row has it: a column all the same, None where absent
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert load_image_text_dataset(str(tmp_path))["source"] == [None, None, "web"]
    rows[0]["mask_file_name"] = rows[0]["file_name"]  # the first row has a mask, the others not
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ValueError, match=r"metadata.jsonl, line 2: no \['mask_file_name'\] \(other lines have it\)"):
        load_image_text_dataset(str(tmp_path))
