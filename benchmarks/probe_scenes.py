"""Can the scenes' classes be learned at CPU scale at all? Before any recipe is tuned on them: the demo's image tower
with a linear head, trained *supervised* on the main thing's class for the demo's budget (600 steps of 64, AdamW,
cosine), and its test top-1; beside it, a colour-only classifier (logistic regression on the main thing's mean colour)
that must stay near chance, since the things' colours are drawn independently of their class.

    python benchmarks/probe_scenes.py [--train 20000] [--test 1000] [--steps 600] [--seed 0] [--results probe.json]

A weaker signal (captions, self-distillation) cannot be expected to learn what this supervised probe does not.
"""

import time

import numpy as np
import torch
import torch.nn.functional as F

from silc_hf import SilcVisionConfig, SilcVisionModel
from silc_hf.data.scenes import LABELS, THINGS, generate
from silc_hf.demo.recipe import DATA_SIZES, DEMO_MODEL
from silc_hf.tools.cli import ArgumentParser, run_script, write_results
from silc_hf.zero_shot.metrics import linear_probe_accuracy


def arrays(split: str, count: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images `(N, 3, S, S)` in [-1, 1], main-thing labels `(N,)`, and the main thing's mean colour `(N, 3)`."""
    images, labels, colours = [], [], []
    for scene in generate(split, count, image_size=image_size):
        pixels = np.asarray(scene.image, dtype=np.float32) / 255
        images.append(pixels.transpose(2, 0, 1) * 2 - 1)
        labels.append(scene.label)
        colours.append(pixels[scene.mask == LABELS.index(THINGS[scene.label]) + 1].mean(axis=0))
    return torch.tensor(np.stack(images)), torch.tensor(labels), torch.tensor(np.stack(colours))


def train_probe(train_x, train_y, test_x, test_y, steps: int, batch_size: int, learning_rate: float, seed: int):
    """The demo's image tower + a linear head on its pooled output, cross-entropy, random flips; the test
    predictions and the training curve."""
    torch.manual_seed(seed)
    tower = SilcVisionModel(SilcVisionConfig(**DEMO_MODEL["vision_config"]))
    head = torch.nn.Linear(tower.config.hidden_size, len(THINGS))
    parameters = [*tower.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.05)
    warmup = min(50, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(step, steps) / steps)),
    )
    generator = torch.Generator().manual_seed(seed)
    curve = []
    for step in range(steps):
        index = torch.randint(0, len(train_x), (batch_size,), generator=generator)
        images = train_x[index]
        flip = torch.rand(batch_size, generator=generator) < 0.5
        images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        loss = F.cross_entropy(head(tower(pixel_values=images).pooler_output), train_y[index])
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % 100 == 0 or step + 1 == steps:
            curve.append({"step": step + 1, "loss": loss.item()})
    tower.eval()
    with torch.no_grad():
        logits = torch.cat([head(tower(pixel_values=chunk).pooler_output) for chunk in test_x.split(256)])
    return logits.argmax(1), curve


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=DATA_SIZES["train"], help="training scenes")
    parser.add_argument("--test", type=int, default=DATA_SIZES["test"], help="test scenes")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", help="write the results as JSON")
    args = parser.parse(argv)
    start = time.time()
    train_x, train_y, train_colour = arrays("train", args.train, args.image_size)
    test_x, test_y, test_colour = arrays("test", args.test, args.image_size)
    majority = torch.bincount(test_y, minlength=len(THINGS)).max().item() / len(test_y)
    colour = linear_probe_accuracy(train_colour, train_y, test_colour, test_y, normalize="standardize")
    predictions, curve = train_probe(
        train_x, train_y, test_x, test_y, args.steps, args.batch_size, args.learning_rate, args.seed
    )
    correct = (predictions == test_y).float()
    top1 = correct.mean().item()
    per_class = {name: correct[test_y == k].mean().item() for k, name in enumerate(THINGS) if (test_y == k).any()}
    results = {
        "things": len(THINGS),
        "train_scenes": args.train,
        "test_scenes": args.test,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "supervised_top1": top1,
        "supervised_top1_per_class": per_class,
        "colour_only_top1": colour,
        "majority_class": majority,
        "chance": 1 / len(THINGS),
        "curve": curve,
        "seconds": round(time.time() - start, 1),
    }
    print(f"{len(THINGS)} thing classes, {args.train} training scenes, {args.steps} steps of {args.batch_size}:")
    print(f"  supervised probe, the demo's image tower: test top-1 {100 * top1:.1f} %")
    print("  per class: " + ", ".join(f"{name} {100 * value:.0f}" for name, value in per_class.items()))
    print(f"  colour-only probe (main thing's mean colour): {100 * colour:.1f} %")
    print(f"  chance {100 / len(THINGS):.1f} %, majority class {100 * majority:.1f} %; {results['seconds']:.0f} s")
    write_results(args.results, results)
    return results


if __name__ == "__main__":
    run_script(main)
