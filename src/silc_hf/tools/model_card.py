"""Hub model cards for SILC folders: YAML front matter (with a `model-index` built only from the evaluation
results given) and a Markdown body with the architecture, usage, evaluation and provenance.

    python -m silc_hf.tools.model_card path/to/silc-folder [--results metrics.json] [--base-model ORG/NAME]

A results JSON (what `training/evaluate_silc.py` writes) looks like:

    {"results": [{"task": "zero-shot-image-classification", "dataset": "imagenet-1k", "dataset_name": "ImageNet-1k",
                  "split": "validation", "metrics": {"top1_accuracy": 0.712, "top5_accuracy": 0.918}}]}

Numbers appear in the card only if they are in that file; without one, every result reads "not evaluated".
"""

import json
import os

from huggingface_hub import EvalResult, ModelCardData

from ..configuration_silc import SilcConfig
from ..zero_shot.metrics import (
    CLASSIFICATION_TASK,
    LINEAR_PROBE_TASK,
    RETRIEVAL_TASK,
    SEGMENTATION_PROBE_TASK,
    SEGMENTATION_TASK,
)
from .cli import ArgumentParser, run_script

CITATION = """@inproceedings{naeem2024silc,
  title     = {SILC: Improving Vision Language Pretraining with Self-Distillation},
  author    = {Naeem, Muhammad Ferjad and Xian, Yongqin and Zhai, Xiaohua and Hoyer, Lukas and Van Gool, Luc and Tombari, Federico},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2024}
}"""  # noqa: E501

TASK_NAMES = {
    CLASSIFICATION_TASK: "Zero-shot image classification",
    RETRIEVAL_TASK: "Image-text retrieval",
    SEGMENTATION_TASK: "Zero-shot semantic segmentation",
    LINEAR_PROBE_TASK: "Few-shot linear probe",
    SEGMENTATION_PROBE_TASK: "Linear-probe segmentation (frozen patch features)",
}


def load_results(results) -> list[dict]:
    """Results from a path, a dict with a "results" list, or a list; each needs task, dataset and metrics."""
    if results is None:
        return []
    if isinstance(results, (str, os.PathLike)):
        with open(results) as file:
            results = json.load(file)
    entries = results["results"] if isinstance(results, dict) else results
    for entry in entries:
        missing = {"task", "dataset", "metrics"} - set(entry)
        if missing:
            raise ValueError(f"A results entry lacks {sorted(missing)}: {entry}")
    return entries


def _architecture(config: SilcConfig) -> str:
    v, t = config.vision_config, config.text_config
    rows = [
        (
            "image tower",
            f"ViT, width {v.hidden_size}, depth {v.num_hidden_layers}, {v.num_attention_heads} heads, "
            f"MLP {v.intermediate_size}",
        ),
        ("input", f"{v.image_size}x{v.image_size} px, {v.patch_size}x{v.patch_size} patches ({v.num_patches} tokens)"),
        (
            "image pooling",
            {"cls": "class token", "map": "attention pooling (MAP)", "mean": "mean of patch tokens"}[v.pooling_type],
        ),
        (
            "text tower",
            f"transformer, width {t.hidden_size}, depth {t.num_hidden_layers}, {t.num_attention_heads} heads, "
            f"{t.vocab_size} tokens",
        ),
        (
            "text input",
            f"{t.max_position_embeddings} tokens"
            + (", padded to that length" if t.fixed_length_padding else "")
            + f", pooled at the {t.pooling_type} token",
        ),
        ("embedding", f"{config.projection_dim}-d"),
        (
            "image-text loss",
            {"softmax": "softmax (CLIP-style, SILC-C)", "sigmoid": "sigmoid (SigLIP-style, SILC-S)"}[config.loss_type],
        ),
    ]
    return "\n".join(["| | |", "|---|---|"] + [f"| {name} | {value} |" for name, value in rows])


def _evaluation(results: list[dict]) -> str:
    if not results:
        return (
            "Not evaluated: no evaluation results were given to this card. Numbers will appear here only once measured."
        )
    lines = ["| task | dataset | split | metric | value |", "|---|---|---|---|---|"]
    for entry in results:
        for metric, value in entry["metrics"].items():
            lines.append(
                f"| {TASK_NAMES.get(entry['task'], entry['task'])} | {entry.get('dataset_name', entry['dataset'])} "
                f"| {entry.get('split', '')} | {metric} | {value} |"
            )
    return "\n".join(lines)


def _usage(repo: str, loss_type: str) -> str:
    scores = "sigmoid per label" if loss_type == "sigmoid" else "softmax over the labels"
    return f"""```python
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor, pipeline

model = AutoModel.from_pretrained("{repo}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{repo}", trust_remote_code=True)
image = Image.open("photo.jpg")
inputs = processor(images=image, text=["a photo of a cat", "a photo of a dog"], return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs)
print(outputs.logits_per_image)          # {scores} for zero-shot scores
dense = model.get_dense_image_features(inputs["pixel_values"], method="value")  # (1, grid, grid, dim)
```

Zero-shot classification (with `pip install silc-hf`, `import silc_hf` replaces `trust_remote_code=True`, and
`pipeline_class=silc_hf.SilcZeroShotImageClassificationPipeline` scores labels the way the model was trained):

```python
classifier = pipeline("zero-shot-image-classification", model="{repo}", trust_remote_code=True)
classifier(image, candidate_labels=["cat", "dog", "car"])
```

Zero-shot segmentation (needs `pip install silc-hf`):

```python
import silc_hf  # registers the "zero-shot-image-segmentation" pipeline
segmenter = pipeline("zero-shot-image-segmentation", model="{repo}")
segmenter(image, candidate_labels=["cat", "grass", "sky"])   # per-label masks and scores
```"""


def render_model_card(
    config: SilcConfig,
    model_name: str,
    repo_id: str | None = None,
    results=None,
    provenance: str = "",
    base_model: str | None = None,
    datasets: list[str] | None = None,
    license: str = "apache-2.0",
) -> str:
    """The card's text: YAML front matter (model-index only from `results`) + Markdown."""
    entries = load_results(results)
    eval_results = [
        EvalResult(
            task_type=entry["task"],
            task_name=TASK_NAMES.get(entry["task"]),
            dataset_type=entry["dataset"],
            dataset_name=entry.get("dataset_name", entry["dataset"]),
            dataset_split=entry.get("split"),
            metric_type=metric,
            metric_name=metric.replace("_", " "),
            metric_value=value,
        )
        for entry in entries
        for metric, value in entry["metrics"].items()
    ]
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="zero-shot-image-classification",
        license=license,
        tags=["silc", "vision", "image-text", "zero-shot-image-classification", "zero-shot-image-segmentation"],
        datasets=datasets,
        base_model=base_model,
        model_name=model_name,
        eval_results=eval_results or None,
    )
    repo = repo_id or model_name
    return f"""---
{card_data.to_yaml()}
---

# {model_name}

A [SILC](https://arxiv.org/abs/2310.13355) image-text model for Hugging Face `transformers` (via
silc-hf): a two-tower model trained with an image-text contrastive loss plus
local-to-global self-distillation from an EMA teacher, whose dense features suit zero-shot segmentation
as well as classification and retrieval.

## Model

{_architecture(config)}

## Usage

{_usage(repo, config.loss_type)}

## Evaluation

{_evaluation(entries)}

## Provenance

{provenance or "Trained or converted with silc-hf."}

## Citation

```bibtex
{CITATION}
```
"""


def write_model_card(output_dir: str, config: SilcConfig, model_name: str | None = None, **kwargs) -> str:
    """Write `README.md` (the Hub model card) into `output_dir`; returns its path."""
    model_name = model_name or os.path.basename(os.path.normpath(output_dir))
    path = os.path.join(output_dir, "README.md")
    with open(path, "w") as file:
        file.write(render_model_card(config, model_name, **kwargs))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m silc_hf.tools.model_card", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("folder", help="a SILC folder (its config.json is read; README.md is written there)")
    parser.add_argument("--results", help="evaluation results JSON")
    parser.add_argument("--name", help="model name (default: the folder name)")
    parser.add_argument("--repo-id", help="Hub id used in the usage snippets (default: the name)")
    parser.add_argument("--base-model", help="the model this one was converted or fine-tuned from")
    parser.add_argument("--dataset", action="append", help="training dataset id (repeatable)")
    parser.add_argument("--provenance", default="", help="how the weights were obtained")
    parser.add_argument("--license", default="apache-2.0")
    args = parser.parse(argv)
    config = SilcConfig.from_pretrained(args.folder)
    path = write_model_card(
        args.folder,
        config,
        args.name,
        repo_id=args.repo_id,
        results=args.results,
        provenance=args.provenance,
        base_model=args.base_model,
        datasets=args.dataset,
        license=args.license,
    )
    print(f"Wrote {path}")


if __name__ == "__main__":
    run_script(main)
