"""Image-text datasets by name: an `imagefolder` directory (with `metadata.jsonl`), a folder of webdataset `.tar`
shards or of `.parquet` files, a shard pattern, a Hub dataset id, or `synthetic:SPLIT:N` (the package's generated
scenes, `silc_hf.data.scenes`); and RGB conversion of any Pillow image. Used by training and evaluation alike."""

import glob
import json
import os
import re

import numpy as np
from PIL import Image


class BadSampleError(ValueError):
    """A sample that cannot be trained on; the message names the sample and the reason."""


# Column names tried in order when none is given: the usual `datasets` names, then webdataset's file extensions as
# img2dataset and open_clip write them (open_clip reads images from "jpg;png;jpeg;webp" and captions from "txt").
IMAGE_COLUMNS = ("image", "jpg", "jpeg", "png", "webp")
TEXT_COLUMNS = ("text", "caption", "txt", "json")  # "json": img2dataset's metadata, whose "caption" field is read


def find_image_text_columns(
    columns,
    image_column: str | None = None,
    text_column: str | None = None,
    flags: str = "--image_column / --text_column",
) -> tuple[str, str]:
    """The (image, caption) column names of a dataset with `columns`: the given ones, else the first present of
    `IMAGE_COLUMNS` and `TEXT_COLUMNS`. Raises one line listing the columns and `flags` to pass when there is none."""
    columns = list(columns or [])

    def find(given: str | None, candidates: tuple[str, ...]) -> str | None:
        if given:
            return given if given in columns else None
        return next((name for name in candidates if name in columns), None)

    image, text = find(image_column, IMAGE_COLUMNS), find(text_column, TEXT_COLUMNS)
    if image is None or text is None:
        lacking = " and no ".join(kind for kind, name in (("image", image), ("caption", text)) if name is None)
        asked = ", ".join(f"{name!r}" for name in (image_column, text_column) if name)
        looked_for = f"asked for {asked}" if asked else f"tried {list(IMAGE_COLUMNS)} and {list(TEXT_COLUMNS)}"
        raise ValueError(f"No {lacking} column in the dataset's columns {columns} ({looked_for}); pass {flags}.")
    return image, text


def caption_text(value):
    """A caption column's value as a string: str as is, bytes decoded as UTF-8, a metadata dict (webdataset `json`,
    as img2dataset writes it) by its "caption" (else "text") field; anything else is returned unchanged."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return value.get("caption", value.get("text"))
    return value


def expand_braces(pattern: str) -> list[str]:
    """'shards/{00000..00002}.tar' -> ['shards/00000.tar', 'shards/00001.tar', 'shards/00002.tar'] (zeros kept)."""
    match = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not match:
        return [pattern]
    first, last = match.groups()
    width = len(first)
    return [
        name
        for number in range(int(first), int(last) + 1)
        for name in expand_braces(pattern[: match.start()] + str(number).zfill(width) + pattern[match.end() :])
    ]


def load_image_text_dataset(data: str, split: str = "train", streaming: bool = False):
    """Load a directory (`imagefolder`, a folder of `.tar` shards or of `.parquet` files), shard patterns
    (webdataset, local or any fsspec URL: `https://host/{00000..00099}.tar`, `s3://bucket/shards/{0000..0999}.tar`,
    `hf://datasets/owner/name/train/{0000..0009}.tar`), a Hub id, or `synthetic[:SPLIT[:N]]`: N generated captioned
    scenes (`silc_hf.data.scenes`, default train:2000)."""
    import datasets

    if data == "synthetic" or data.startswith("synthetic:"):
        from .scenes import as_dataset

        parts = data.split(":")
        split_name = parts[1] if len(parts) > 1 else "train"
        count = int(parts[2]) if len(parts) > 2 else 2000
        dataset = as_dataset(split_name, count)
        return dataset.to_iterable_dataset() if streaming else dataset
    if os.path.isdir(data):
        shards = sorted(glob.glob(os.path.join(data, "*.tar")))
        if shards:
            return datasets.load_dataset("webdataset", data_files={split: shards}, split=split, streaming=streaming)
        parquet = sorted(glob.glob(os.path.join(data, "*.parquet")))
        if parquet:  # a Hub dataset's parquet files, downloaded (or `Dataset.to_parquet`)
            return datasets.load_dataset("parquet", data_files={split: parquet}, split=split, streaming=streaming)
        if os.path.exists(os.path.join(data, "metadata.jsonl")):
            dataset = read_imagefolder_metadata(data)
            return dataset.to_iterable_dataset() if streaming else dataset
        return datasets.load_dataset("imagefolder", data_dir=data, split=split, streaming=streaming)
    if "://" in data and (".tar" in data or "{" in data):  # remote shards: https://, s3://, gs://, hf://
        shards = expand_braces(data)  # nothing to check before the first request (credentials: the environment)
        return datasets.load_dataset("webdataset", data_files={split: shards}, split=split, streaming=streaming)
    if data.endswith(".tar") or "{" in data or "*" in data:
        shards = sorted(f for pattern in expand_braces(data) for f in (glob.glob(pattern) or [pattern]))
        missing = [f for f in shards if not os.path.exists(f)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} webdataset shards do not exist, e.g. {missing[:3]}")
        return datasets.load_dataset("webdataset", data_files={split: shards}, split=split, streaming=streaming)
    if looks_like_a_local_path(data):
        raise FileNotFoundError(
            f"{data!r} does not exist; pass an imagefolder directory (with metadata.jsonl), a folder of .tar shards or "
            ".parquet files, a shard pattern, a Hub dataset id, or synthetic:SPLIT:N."
        )
    check_hub_dataset(data)
    return datasets.load_dataset(data, split=split, streaming=streaming)


def read_imagefolder_metadata(directory: str):
    """An imagefolder described by its top-level `metadata.jsonl`, read as `datasets`' `imagefolder` reads it (one
    row per line; `file_name` becomes the `image` column and every other `<name>_file_name` the `<name>` column, both
    decoded lazily as images; the other fields as they are), without `datasets`' discovery of the data files, which
    stats every file of the folder once per pattern it tries (34 s for the demo's 40 000 files, 0.5 s this way)."""
    import datasets

    path = os.path.join(directory, "metadata.jsonl")
    with open(path) as file:
        rows = [json.loads(line) for line in file if line.strip()]
    if not rows or any("file_name" not in row for row in rows):
        raise ValueError(f"{path} must hold one JSON object with a 'file_name' per image (imagefolder's layout).")
    keys = list(dict.fromkeys(key for row in rows for key in row))  # every row's fields, first seen first
    image_keys = [key for key in keys if key == "file_name" or key.endswith("_file_name")]
    for number, row in enumerate(rows, start=1):
        if lacking := [key for key in image_keys if key not in row]:
            raise ValueError(f"{path}, line {number}: no {lacking} (other lines have it); give every image its files.")
    names = {key: "image" if key == "file_name" else key.removesuffix("_file_name") for key in image_keys}
    columns = {names[key]: [os.path.join(directory, row[key]) for row in rows] for key in image_keys}
    columns.update({key: [row.get(key) for row in rows] for key in keys if key not in names})
    dataset = datasets.Dataset.from_dict(columns)
    for name in names.values():
        dataset = dataset.cast_column(name, datasets.Image())
    return dataset


def check_hub_dataset(data: str) -> None:
    """Ask the Hub once, with a short timeout, whether dataset `data` exists, so that a local typo or an offline
    machine fails at once with what to do (`datasets` itself retries for ~30 s before it gives up). Skipped in
    offline mode (`HF_HUB_OFFLINE=1`: `datasets` then reads its cache)."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE:
        return
    try:
        HfApi().dataset_info(data, timeout=10)
    except RepositoryNotFoundError:
        raise FileNotFoundError(
            f"{data!r} is neither a local path nor a dataset on the Hub (a private one needs `hf auth login`); pass an "
            "imagefolder directory, a folder of .tar shards or .parquet files, a shard pattern, or synthetic:SPLIT:N."
        ) from None
    except HfHubHTTPError:
        return  # it exists but answers otherwise (gated, rate limit): `datasets` reports it in its own words
    except Exception as error:  # no network, DNS, proxy, timeout: anything that kept the question from the Hub
        raise ConnectionError(
            f"{data!r} is not a local path, and the Hub cannot be reached to look for a dataset of that name "
            f"({type(error).__name__}: {error}). If it is a local folder, check the path; if it is a Hub dataset "
            "already in the cache, set HF_HUB_OFFLINE=1."
        ) from None


def looks_like_a_local_path(data: str) -> bool:
    """A missing path rather than a Hub id: absolute, explicitly relative, home-relative, or under a folder that
    exists here (`outputs/demo/dat` is a typo, not a Hub repository; asking the Hub would retry for ~30 s)."""
    if "://" in data:
        return False
    if data.startswith(("/", "./", "../", "~")) or data.count("/") > 1:
        return True
    first = data.split("/")[0]
    return "/" in data and os.path.isdir(first)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without garbage: 16-bit values are scaled (not clipped),
    transparency is composited over white, palettes are expanded."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        pixels = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(pixels / 257.0, 0, 255).round().astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        raise BadSampleError("floating-point image (mode F) has no defined value range")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
