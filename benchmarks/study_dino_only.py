"""DINO-only sanity check: the self-distillation alone (`contrastive_weight 0`, the demo's recipe otherwise) on the
embedded scenes, against the same network at random initialisation.

    python benchmarks/study_dino_only.py [--output_dir outputs/dino-only] [--max_steps 600] [--seed 0]
    python benchmarks/study_dino_only.py --set hue=0.1 saturation=0.2 grayscale_prob=0.2   # DINO's colour ops
    python benchmarks/study_dino_only.py --reference_towers outputs/study/clip-seed0 outputs/study/silc-seed0

Prints (and writes as JSON) the teacher diagnostics at the end of training, 100-shot linear probes of the main
thing's class and of the scene's dominant stuff (grass, water, sky, ...) on the pooled image features for the
trained and the untrained network, and what
the teacher's argmax prototype over the test images says about them: the number of prototypes used and their
normalised mutual information with the main thing's class and with the dominant stuff, each next to its chance
level (the same clusters shuffled); and how linearly the features give the mean colour of the main thing and of the
stuff (ridge R^2), the shortcut that a view-invariance objective can settle on. `--reference_towers` adds the same
class probe of other exported towers (e.g. the study's image-text runs): what the captions teach at the same budget.
"""

import json
import math
import os
import random
from collections import Counter

import numpy as np
import torch
from transformers import AutoProcessor

from silc_hf import SilcModel
from silc_hf.data import load_image_text_dataset
from silc_hf.data.scenes import LABELS, THINGS, export
from silc_hf.demo.recipe import DATA_SIZES, train
from silc_hf.tools.cli import ArgumentParser, parse_overrides, run_script, write_results
from silc_hf.tools.plotting import DIAGNOSTICS
from silc_hf.zero_shot.evaluation import evaluate_linear_probe, image_embeddings


def normalised_mutual_information(a: list, b: list) -> float:
    """NMI with the geometric-mean normalisation: 0 for independent labellings, 1 for identical partitions."""
    n, count_a, count_b, joint = len(a), Counter(a), Counter(b), Counter(zip(a, b))
    mutual = sum(c / n * math.log(c * n / (count_a[x] * count_b[y])) for (x, y), c in joint.items())
    entropy = lambda counts: -sum(c / n * math.log(c / n) for c in counts.values())  # noqa: E731
    return mutual / max(math.sqrt(entropy(count_a) * entropy(count_b)), 1e-12)


def chance_nmi(a: list, b: list, draws: int = 50) -> float:
    """Mean NMI of `a` shuffled against `b`: what ~100 clusters over 300 images score by chance (far from 0)."""
    rng = random.Random(0)
    return sum(normalised_mutual_information(rng.sample(a, len(a)), b) for _ in range(draws)) / draws


def mean_colours(split) -> dict[str, torch.Tensor]:
    """Each image's mean RGB over its main thing's pixels and over its stuff pixels, `(N, 3)` each."""
    objects, backgrounds = [], []
    for image, mask, label in zip(split["image"], split["mask"], split["label"]):
        pixels, labels = np.asarray(image.convert("RGB"), dtype=np.float64), np.asarray(mask)
        objects.append(pixels[labels == label + 1].mean(0))  # mask value of thing k is k + 1
        backgrounds.append(pixels[labels > len(THINGS)].mean(0))
    return {"object": torch.tensor(np.stack(objects)), "background": torch.tensor(np.stack(backgrounds))}


def colour_decodability(model, processor, train_split, test, colours: dict) -> dict:
    """R^2 of a ridge regression from the (standardised) probe features to the mean colours (`colours["train"]`
    of `train_split`, `colours["test"]` of `test`, from `mean_colours`), scored on the test split: how much of what
    the features hold is colour, the view-invariant shortcut that does not give the class."""
    x, x_test = (image_embeddings(model, processor, split).double() for split in (train_split, test))
    mean, std = x.mean(0), x.std(0) + 1e-8
    x, x_test = (x - mean) / std, (x_test - mean) / std
    scores = {}
    for name, y in colours["train"].items():
        y_test = colours["test"][name]
        weights = torch.linalg.solve(x.T @ x + torch.eye(x.shape[1], dtype=x.dtype), x.T @ (y - y.mean(0)))
        error = x_test @ weights + y.mean(0) - y_test
        scores[f"{name}_colour_R2"] = float(1 - error.pow(2).sum() / (y_test - y_test.mean(0)).pow(2).sum())
    return scores


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="outputs/dino-only")
    parser.add_argument("--max_steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="FIELD=VALUE",
        help="SilcTrainingArguments overrides of the demo's recipe",
    )
    parser.add_argument(
        "--reference_towers",
        nargs="+",
        default=[],
        metavar="DIR",
        help="exported models whose class probe is reported beside (e.g. a study's CLIP-only and SILC runs)",
    )
    parser.add_argument("--results", help="also write the results here (default: OUTPUT_DIR/dino_only.json)")
    args = parser.parse(argv)
    overrides = parse_overrides(args.set)
    for folder in args.reference_towers:  # checked before the training, not after it
        if not os.path.exists(os.path.join(folder, "config.json")):
            raise ValueError(f"--reference_towers {folder!r} has no config.json; pass an exported run folder.")
    data_dir = os.path.join(args.output_dir, "data")
    if not os.path.exists(os.path.join(data_dir, "test", "metadata.jsonl")):
        export(data_dir, DATA_SIZES, seed=0, image_size=64)

    def with_background(split):  # the stuff covering most of the scene, as a second probe target
        stuff_values = np.arange(len(THINGS) + 1, len(LABELS) + 1)
        counts = [np.bincount(np.asarray(m).ravel(), minlength=len(LABELS) + 1)[stuff_values] for m in split["mask"]]
        return split.add_column("background", [int(np.argmax(c)) for c in counts])

    train_split = with_background(load_image_text_dataset(os.path.join(data_dir, "train")))
    test = with_background(load_image_text_dataset(os.path.join(data_dir, "test")))

    def probe(model, processor, target: str = "label") -> float:
        accuracy = evaluate_linear_probe(model, processor, train_split, test, shots=100, label_column=target)
        return accuracy["100_shot_accuracy"]

    # the untrained network: one step at a vanishing learning rate builds the identical model and tokenizer
    untrained = train(
        os.path.join(args.output_dir, "random-init"),
        data_dir,
        1,
        1.0,
        args.seed,
        contrastive_weight=0.0,
        learning_rate=1e-12,
        eval_strategy="no",
    )
    trainer = train(
        os.path.join(args.output_dir, "model"),
        data_dir,
        args.max_steps,
        1.0,
        args.seed,
        contrastive_weight=0.0,
        **overrides,
    )
    wrapper, processor = trainer.pretraining_model, trainer.processing_class
    trained, initial = wrapper.student.eval(), untrained.pretraining_model.student.eval()
    pixels = processor.image_processor(images=[image.convert("RGB") for image in test["image"]], return_tensors="pt")
    with torch.no_grad():
        clusters = wrapper.teacher(pixels["pixel_values"].float()).argmax(dim=-1).tolist()
    backgrounds = list(test["background"])
    colour_train = train_split.select(range(1000))  # the ridge regressions' training images
    colours = {"train": mean_colours(colour_train), "test": mean_colours(test)}
    last_log = [entry for entry in trainer.state.log_history if "distillation_loss" in entry][-1]
    results = {
        "steps": args.max_steps,
        "seed": args.seed,
        "overrides": overrides,
        "final_diagnostics": {name: last_log[name] for name in DIAGNOSTICS if name in last_log},
        "prototypes_used_by_teacher_on_test": len(set(clusters)),
        "probe_100_shot_trained": probe(trained, processor),
        "probe_100_shot_random_init": probe(initial, processor),
        "probe_100_shot_reference_towers": {
            folder: probe(SilcModel.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder))
            for folder in args.reference_towers
        },
        "background_probe_100_shot_trained": probe(trained, processor, "background"),
        "background_probe_100_shot_random_init": probe(initial, processor, "background"),
        "colour_R2_trained": colour_decodability(trained, processor, colour_train, test, colours),
        "colour_R2_random_init": colour_decodability(initial, processor, colour_train, test, colours),
        "teacher_nmi_with_class": normalised_mutual_information(clusters, list(test["label"])),
        "teacher_nmi_with_class_by_chance": chance_nmi(clusters, list(test["label"])),
        "teacher_nmi_with_background": normalised_mutual_information(clusters, backgrounds),
        "teacher_nmi_with_background_by_chance": chance_nmi(clusters, backgrounds),
    }
    write_results(args.results or os.path.join(args.output_dir, "dino_only.json"), results)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    run_script(main)
