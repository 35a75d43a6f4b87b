"""A tour of conversion: convert a small randomly initialised HF CLIP into a SILC folder, then classify a bundled
image with the stock zero-shot pipeline, and check that CLIP and SILC agree.

    python examples/convert_and_classify.py [--output_dir outputs/example]

Nothing is downloaded: the tokenizer is trained on a few words in memory and the weights are random, so the
scores are meaningless; what the run shows is the conversion reproducing CLIP through the pipeline.
"""

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, pipeline

import silc_hf  # noqa: F401  (registers "silc" with the Auto classes)
from silc_hf.convert.__main__ import convert_hf
from silc_hf.tools.cli import ArgumentParser, run_script
from silc_hf.training.tokenization import train_clip_tokenizer

IMAGE = Path(__file__).parent / "red_circle_on_green.png"
LABELS = ["a red circle", "a blue square", "a green triangle", "a photo of a dog"]


def make_random_clip(folder: Path) -> None:
    """Save a seeded, randomly initialised ViT-Tiny-sized CLIP with its processor to `folder`."""
    tokenizer = train_clip_tokenizer(["this is a photo of " + label for label in LABELS] * 4, vocab_size=600)
    torch.manual_seed(0)
    tower = dict(hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=3)
    config = CLIPConfig(
        text_config=dict(
            tower, vocab_size=len(tokenizer), max_position_embeddings=32, eos_token_id=tokenizer.eos_token_id
        ),
        vision_config=dict(tower, image_size=64, patch_size=16),
        projection_dim=128,
    )
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="outputs/example", type=Path)
    args = parser.parse(argv)
    clip_folder, silc_folder = args.output_dir / "clip", args.output_dir / "silc"

    make_random_clip(clip_folder)
    convert_hf("hf-clip", str(clip_folder), str(silc_folder))

    results = {}
    for name, folder in (("CLIP", clip_folder), ("SILC", silc_folder)):
        classifier = pipeline("zero-shot-image-classification", model=str(folder))
        results[name] = classifier(str(IMAGE), candidate_labels=LABELS)
    print(f"\nZero-shot scores for {IMAGE.name} (random weights: the scores are arbitrary)")
    print(f"{'label':<22}{'CLIP':>10}{'SILC':>10}")
    silc_scores = {r["label"]: r["score"] for r in results["SILC"]}
    for r in results["CLIP"]:
        print(f"{r['label']:<22}{r['score']:>10.6f}{silc_scores[r['label']]:>10.6f}")
    gap = max(abs(r["score"] - silc_scores[r["label"]]) for r in results["CLIP"])
    same_order = [r["label"] for r in results["CLIP"]] == [r["label"] for r in results["SILC"]]
    print(f"max |CLIP - SILC| = {gap:.2e}; same ranking: {same_order}; SILC folder: {silc_folder}")
    if gap > 1e-5 or not same_order:
        raise SystemExit("The converted SILC model does not reproduce CLIP.")


if __name__ == "__main__":
    run_script(main)
