"""Can the scenes' classes be learned at CPU scale at all? Before any recipe is tuned on them: the demo's image tower
with a linear head, trained *supervised* on the main thing's class for the demo's budget (600 steps of 64, AdamW,
cosine), and its test top-1; beside it, a colour-only classifier (logistic regression on the main thing's mean colour)
that must stay near chance, since the things' colours are drawn independently of their class.

    python benchmarks/probe_scenes.py [--train 20000] [--test 1000] [--steps 600] [--seed 0] [--results probe.json]

A weaker signal (captions, self-distillation) cannot be expected to learn what this supervised probe does not.
`--objective contrastive` measures the captions' signal alone, in the same bare loop: the demo's image and text
towers (a tokenizer trained on the captions) with the image-text loss, no augmentation but flips, no distillation,
zero-shot top-1 ("a {}") every 100 steps, with the instrument that tells a collapsed start from a slow one (the mean
cosine between the batch's image embeddings and between its text embeddings: near 1 means the tower has collapsed to
one embedding); `--captions main` replaces every caption by the main thing's name.

    python benchmarks/probe_scenes.py --objective contrastive [--captions scenes|main] [--steps 2000]

What else can change in that loop, one thing at a time: `--learning_rate`, `--batch_size`, `--logit_scale_init`, the
towers (`--model '{"text_config": {"pooling_type": "mean", "causal_attention": false}}'`) and how often the captions
name what (`--caption_words OTHER_THING_WORD_PROB=0.25 GROUND_WORD_PROB=0.3`; the images stay the same).
"""

import copy
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from silc_hf import SilcConfig, SilcModel, SilcVisionConfig, SilcVisionModel
from silc_hf.data import scenes
from silc_hf.data.scenes import LABELS, THINGS, generate
from silc_hf.demo.recipe import DATA_SIZES, DEMO_MODEL
from silc_hf.modeling_silc import contrastive_loss, image_text_logits
from silc_hf.tools.cli import ArgumentParser, run_script, write_results
from silc_hf.training.tokenization import train_clip_tokenizer
from silc_hf.zero_shot.metrics import linear_probe_accuracy

CAPTION_WORD_PROBS = (
    "COLOR_WORD_PROB",
    "SIZE_WORD_PROB",
    "POSITION_WORD_PROB",
    "OTHER_THING_WORD_PROB",
    "GROUND_WORD_PROB",
    "TOP_WORD_PROB",
)


def arrays(split: str, count: int, image_size: int):
    """Images `(N, 3, S, S)` in [-1, 1], main-thing labels `(N,)`, the main thing's mean colour `(N, 3)`, and the
    captions."""
    images, labels, colours, captions = [], [], [], []
    for scene in generate(split, count, image_size=image_size):
        pixels = np.asarray(scene.image, dtype=np.float32) / 255
        images.append(pixels.transpose(2, 0, 1) * 2 - 1)
        labels.append(scene.label)
        colours.append(pixels[scene.mask == LABELS.index(THINGS[scene.label]) + 1].mean(axis=0))
        captions.append(scene.caption)
    return torch.tensor(np.stack(images)), torch.tensor(labels), torch.tensor(np.stack(colours)), captions


def cosine_schedule(optimizer, steps: int):
    warmup = min(50, steps // 10)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(step, steps) / steps)),
    )


def flipped(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def mean_cosine(embeddings: torch.Tensor) -> float:
    """Mean cosine similarity between the batch's distinct rows: 1.0 when a tower has collapsed to one embedding
    (every logit equal, loss ln(batch), no gradient to align anything)."""
    unit = F.normalize(embeddings.float(), dim=-1)
    similarity = unit @ unit.T
    return similarity[~torch.eye(len(unit), dtype=torch.bool)].mean().item()


def train_contrastive(
    train_x,
    captions,
    test_x,
    test_y,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    logit_scale=None,
    model_overrides: dict | None = None,
):
    """The demo's two towers on (image, caption) pairs with the image-text loss (gradient norm clipped at 1, as the
    Trainer does); the test predictions ("a {}" over the things) and the curve of loss and test top-1."""
    tokenizer = train_clip_tokenizer(captions[:5000], 1024, DEMO_MODEL["text_config"]["max_position_embeddings"])
    config = copy.deepcopy(DEMO_MODEL)
    config["text_config"].update(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
    )
    if logit_scale is not None:
        config["logit_scale_init_value"] = logit_scale
    for key, value in (model_overrides or {}).items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    torch.manual_seed(seed)
    model = SilcModel(SilcConfig(**config))
    text = tokenizer(captions, padding="max_length", truncation=True, return_tensors="pt")
    prompts = tokenizer([f"a {name}" for name in THINGS], padding=True, return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.05)
    schedule = cosine_schedule(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)

    def predict() -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            images = torch.cat([model.get_image_features(pixel_values=x).pooler_output for x in test_x.split(250)])
            names = model.get_text_features(**prompts).pooler_output
            predictions = (F.normalize(images, dim=-1) @ F.normalize(names, dim=-1).T).argmax(1)
        model.train()
        return predictions

    curve = []
    for step in range(steps):
        index = torch.randint(0, len(train_x), (batch_size,), generator=generator)
        images = model.get_image_features(pixel_values=flipped(train_x[index], generator)).pooler_output
        texts = model.get_text_features(
            input_ids=text["input_ids"][index], attention_mask=text["attention_mask"][index]
        ).pooler_output
        logits = image_text_logits(
            F.normalize(images, dim=-1), F.normalize(texts, dim=-1), model.logit_scale, model.logit_bias
        )
        loss = contrastive_loss(logits, model.config.loss_type)
        loss.backward()
        spread = {"image_cosine": mean_cosine(images.detach()), "text_cosine": mean_cosine(texts.detach())}
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % 100 == 0 or step + 1 == steps:
            top1 = (predict() == test_y).float().mean().item()
            curve.append({"step": step + 1, "loss": loss.item(), "test_top1": top1, **spread})
            print(
                f"  step {step + 1}: loss {loss.item():.3f}, zero-shot test top-1 {100 * top1:.1f} %, mean cosine "
                f"between the batch's images {spread['image_cosine']:.3f}, texts {spread['text_cosine']:.3f}",
                flush=True,
            )
    return predict(), curve


def train_probe(train_x, train_y, test_x, test_y, steps: int, batch_size: int, learning_rate: float, seed: int):
    """The demo's image tower + a linear head on its pooled output, cross-entropy, random flips; the test
    predictions and the training curve."""
    torch.manual_seed(seed)
    tower = SilcVisionModel(SilcVisionConfig(**DEMO_MODEL["vision_config"]))
    head = torch.nn.Linear(tower.config.hidden_size, len(THINGS))
    parameters = [*tower.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.05)
    schedule = cosine_schedule(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    curve = []
    for step in range(steps):
        index = torch.randint(0, len(train_x), (batch_size,), generator=generator)
        images = flipped(train_x[index], generator)
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
    parser.add_argument("--objective", choices=["supervised", "contrastive"], default="supervised")
    parser.add_argument(
        "--captions",
        choices=["scenes", "main"],
        default="scenes",
        help="contrastive: the scenes' captions, or only the main thing's name",
    )
    parser.add_argument(
        "--logit_scale_init", type=float, help="contrastive: initial log logit scale (default: the demo model's)"
    )
    parser.add_argument(
        "--model",
        type=json.loads,
        default={},
        help='contrastive: changes to the demo model\'s config, as JSON (e.g. \'{"text_config": {"pooling_type": '
        '"mean"}}\')',
    )
    parser.add_argument(
        "--caption_words",
        nargs="*",
        default=[],
        metavar="NAME=P",
        help="contrastive: other probabilities for the captions' words, e.g. OTHER_THING_WORD_PROB=0.25 "
        f"(names: {', '.join(CAPTION_WORD_PROBS)}; the images do not change)",
    )
    parser.add_argument("--results", help="write the results as JSON")
    args = parser.parse(argv)
    caption_words = dict(item.partition("=")[::2] for item in args.caption_words)
    for name, value in caption_words.items():
        if name not in CAPTION_WORD_PROBS or not value.replace(".", "", 1).isdigit():
            parser.error(f"--caption_words {name}={value}: write NAME=P, NAME one of {', '.join(CAPTION_WORD_PROBS)}")
        setattr(scenes, name, float(value))  # read when each caption is drawn, after its scene's image
    start = time.time()
    train_x, train_y, train_colour, captions = arrays("train", args.train, args.image_size)
    test_x, test_y, test_colour, _ = arrays("test", args.test, args.image_size)
    majority = torch.bincount(test_y, minlength=len(THINGS)).max().item() / len(test_y)
    colour = linear_probe_accuracy(train_colour, train_y, test_colour, test_y, normalize="standardize")
    budget = (args.steps, args.batch_size, args.learning_rate, args.seed)
    if args.objective == "supervised":
        predictions, curve = train_probe(train_x, train_y, test_x, test_y, *budget)
    else:
        if args.captions == "main":
            captions = [f"a {THINGS[label]}" for label in train_y.tolist()]
        predictions, curve = train_contrastive(
            train_x, captions, test_x, test_y, *budget, args.logit_scale_init, args.model
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
        "learning_rate": args.learning_rate,
        "objective": args.objective,
        "captions": args.captions if args.objective == "contrastive" else None,
        "logit_scale_init": args.logit_scale_init,
        "model_overrides": args.model,
        "caption_words": caption_words,
        "top1": top1,
        "top1_per_class": per_class,
        "colour_only_top1": colour,
        "majority_class": majority,
        "chance": 1 / len(THINGS),
        "curve": curve,
        "seconds": round(time.time() - start, 1),
    }
    print(f"{len(THINGS)} thing classes, {args.train} training scenes, {args.steps} steps of {args.batch_size}:")
    what = "supervised probe" if args.objective == "supervised" else f"contrastive, {args.captions} captions"
    print(f"  {what}, the demo's towers: test top-1 {100 * top1:.1f} %")
    print("  per class: " + ", ".join(f"{name} {100 * value:.0f}" for name, value in per_class.items()))
    print(f"  colour-only probe (main thing's mean colour): {100 * colour:.1f} %")
    print(f"  chance {100 / len(THINGS):.1f} %, majority class {100 * majority:.1f} %; {results['seconds']:.0f} s")
    write_results(args.results, results)
    return results


if __name__ == "__main__":
    run_script(main)
