"""Diagnosis: what the local-to-global term does to the image tower, on the study's trained models. Two instruments on
the test scenes, for every backbone and seed of `study_silc_vs_clip.py`, with SILC − CLIP-only paired per seed:

- **Patch similarity structure.** The last-layer patch tokens (final-normed, the dataset's mean token removed, unit
  length) of patches that one label covers to ≥ 75 %: the mean cosine between two patches of the same thing in one
  image (*within*), between a thing's patches and the rest of its image (*rest*), and their difference
  (*separation*: how well the tokens outline the thing); then the things' mean tokens across images: same class
  minus different class (*class consistency*: whether the tokens say which thing, which a text name can read).
- **Local crops.** Crops drawn as the trainer draws local views (area 5–40 %), kept where one thing covers ≥ 50 %
  of the crop: zero-shot top-1 of the crop over the thing names against that thing, and how often the crop's
  prediction agrees with the whole image's (what the local-to-global term asks of the student).

    python benchmarks/study_silc_vs_clip.py --output_dir outputs/study --seeds 0 1 2      # the models
    python benchmarks/diagnose_dense_features.py --study_dir outputs/study --seeds 0 1 2

Prints Markdown tables; writes every number as JSON (`--results`).
"""

import os
import statistics

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset

from silc_hf import SilcModel, SilcProcessor
from silc_hf.data import load_image_text_dataset
from silc_hf.data.scenes import THINGS
from silc_hf.demo.recipe import TEMPLATES
from silc_hf.tools.benchmark import paired_interval
from silc_hf.tools.cli import ArgumentParser, run_script, write_results
from silc_hf.training.augmentation import random_resized_crop_box
from silc_hf.zero_shot.evaluation import image_embeddings, patch_tokens
from silc_hf.zero_shot.prompts import encode_class_names

PATCH_PURITY = 0.75  # a patch counts as one label's when that label covers this share of its pixels
CROP_PURITY = 0.5  # a local crop "holds one thing" when that thing covers this share of its pixels
LOCAL_SCALE = (0.05, 0.4)  # the trainer's local crops (SilcTrainingArguments.local_crop_scale)
CROP_RATIO = (3 / 4, 4 / 3)
COLUMNS = ("within", "rest", "separation", "class consistency", "crop top-1", "crop-image agreement")


def patch_labels(masks: torch.Tensor, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The majority mask value of every patch `(N, h, w)` and whether it covers `PATCH_PURITY` of the patch."""
    n, height, width = masks.shape
    blocks = masks.reshape(n, height // patch, patch, width // patch, patch).permute(0, 1, 3, 2, 4).flatten(3)
    labels = blocks.mode(dim=-1).values
    purity = (blocks == labels.unsqueeze(-1)).float().mean(dim=-1)
    return labels, purity >= PATCH_PURITY


def similarity_structure(tokens: torch.Tensor, labels: torch.Tensor, pure: torch.Tensor) -> dict:
    """Within / rest / separation averaged over things (thing = mask value 1..len(THINGS)), per class and overall,
    and the class consistency of the things' mean tokens across images."""
    tokens = tokens.flatten(2).transpose(1, 2)  # (N, P, D)
    tokens = F.normalize(tokens - tokens.mean(dim=(0, 1)), dim=-1)
    labels, pure = labels.flatten(1), pure.flatten(1)
    per_class = {name: {"within": [], "rest": []} for name in THINGS}
    prototypes, prototype_class = [], []
    for image_tokens, image_labels, image_pure in zip(tokens, labels, pure):
        kept_tokens, kept_labels = image_tokens[image_pure], image_labels[image_pure]
        cosine = kept_tokens @ kept_tokens.t()
        for value in kept_labels.unique().tolist():
            inside = kept_labels == value
            if not 1 <= value <= len(THINGS) or inside.sum() < 2 or inside.all():
                continue
            block = cosine[inside][:, inside]
            count = int(inside.sum())
            within = (block.sum() - block.diagonal().sum()) / (count * (count - 1))
            per_class[THINGS[value - 1]]["within"].append(within.item())
            per_class[THINGS[value - 1]]["rest"].append(cosine[inside][:, ~inside].mean().item())
            prototypes.append(F.normalize(kept_tokens[inside].mean(dim=0), dim=0))
            prototype_class.append(value)
    prototypes, prototype_class = torch.stack(prototypes), torch.tensor(prototype_class)
    cosine = prototypes @ prototypes.t()
    same = prototype_class[:, None] == prototype_class[None, :]
    off_diagonal = ~torch.eye(len(prototypes), dtype=torch.bool)
    consistency = {}
    for index, name in enumerate(THINGS, start=1):
        rows = (prototype_class == index)[:, None]
        if rows.sum() >= 2:
            same_class, other_class = cosine[rows & same & off_diagonal].mean(), cosine[rows & ~same].mean()
            consistency[name] = (same_class - other_class).item()
    classes = {
        name: {
            "within": statistics.fmean(values["within"]),
            "rest": statistics.fmean(values["rest"]),
            "separation": statistics.fmean(values["within"]) - statistics.fmean(values["rest"]),
            "class consistency": consistency.get(name),
        }
        for name, values in per_class.items()
        if values["within"]
    }
    overall = {
        column: statistics.fmean(c[column] for c in classes.values() if c[column] is not None)
        for column in ("within", "rest", "separation", "class consistency")
    }
    return {**overall, "per_class": classes}


def local_crops(model, processor, test, masks: torch.Tensor, crops_per_image: int, seed: int) -> dict:
    """Zero-shot top-1 of local crops that hold one thing, and their agreement with the whole image's prediction."""
    rng = np.random.default_rng(seed)
    images, targets, sources = [], [], []
    for row, image in enumerate(test["image"]):
        mask = masks[row].numpy()
        for _ in range(crops_per_image):
            left, top, right, bottom = random_resized_crop_box(rng, image.width, image.height, LOCAL_SCALE, CROP_RATIO)
            values, counts = np.unique(mask[top:bottom, left:right], return_counts=True)
            value, share = values[counts.argmax()], counts.max() / counts.sum()
            if 1 <= value <= len(THINGS) and share >= CROP_PURITY:
                images.append(image.convert("RGB").crop((left, top, right, bottom)))
                targets.append(int(value) - 1)
                sources.append(row)
    classes = encode_class_names(model, processor.tokenizer, list(THINGS), TEMPLATES).cpu()
    crops = Dataset.from_dict({"image": images})
    crop_predictions = (image_embeddings(model, processor, crops) @ classes.t()).argmax(1)
    image_predictions = (image_embeddings(model, processor, test) @ classes.t()).argmax(1)
    targets, sources = torch.tensor(targets), torch.tensor(sources)
    return {
        "crops": len(images),
        "crop top-1": (crop_predictions == targets).float().mean().item(),
        "crop-image agreement": (crop_predictions == image_predictions[sources]).float().mean().item(),
    }


@torch.no_grad()
def diagnose(folder: str, test, masks: torch.Tensor, crops_per_image: int, seed: int) -> dict:
    model, processor = SilcModel.from_pretrained(folder).eval(), SilcProcessor.from_pretrained(folder)
    labels, pure = patch_labels(masks, model.config.vision_config.patch_size)
    structure = similarity_structure(patch_tokens(model, processor, test), labels, pure)
    return {**structure, **local_crops(model, processor, test, masks, crops_per_image, seed)}


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study_dir", default="outputs/study", help="output of study_silc_vs_clip.py (models, data)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backbones", nargs="+", default=["clip", "silc"], help="the first is the baseline")
    parser.add_argument("--scenes", type=int, default=500, help="test scenes to measure on")
    parser.add_argument("--crops_per_image", type=int, default=4)
    parser.add_argument("--results", default="benchmarks/results/diagnose_dense_features.json")
    args = parser.parse(argv)
    test = load_image_text_dataset(os.path.join(args.study_dir, "data", "test")).select(range(args.scenes))
    masks = torch.stack([torch.from_numpy(np.asarray(m).astype(np.int64)) for m in test["mask"]])
    runs = {
        (backbone, seed): diagnose(
            os.path.join(args.study_dir, f"{backbone}-seed{seed}"), test, masks, args.crops_per_image, seed
        )
        for backbone in args.backbones
        for seed in args.seeds
    }
    lines = ["| backbone | seed | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for (backbone, seed), run in runs.items():
        lines.append(f"| {backbone} | {seed} | " + " | ".join(f"{run[c]:.3f}" for c in COLUMNS) + " |")
    baseline, paired = args.backbones[0], {}
    for backbone in args.backbones[1:]:
        if len(args.seeds) >= 2:
            paired[backbone] = {
                column: paired_interval(
                    [runs[backbone, s][column] for s in args.seeds], [runs[baseline, s][column] for s in args.seeds]
                )
                for column in COLUMNS
            }
            cells = [f"{p['mean']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}]" for p in paired[backbone].values()]
            lines.append(f"| {backbone} − {baseline} | all | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    results = {"runs": [{"backbone": b, "seed": s, **r} for (b, s), r in runs.items()], "paired": paired}
    write_results(args.results, results)
    return results


if __name__ == "__main__":
    run_script(main)
