"""The demo's model and recipe: what `python -m silc_hf.demo` trains, and what the studies in `benchmarks/` compare
against (every study run is this recipe with one thing changed). Why each choice: `docs/demo.md`."""

import os

import numpy as np

from ..data import load_image_text_dataset
from ..data.scenes import CLASSES
from ..training.arguments import SilcDataArguments, SilcModelArguments, SilcTrainingArguments
from ..training.run import run_training
from ..zero_shot.evaluation import evaluate

# The small model and recipe of the demo (and of benchmarks/study_silc_vs_clip.py).
DEMO_MODEL = {
    "loss_type": "softmax",
    "vision_config": {
        "hidden_size": 96,
        "intermediate_size": 384,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "image_size": 64,
        "patch_size": 8,
        "pooling_type": "map",
    },
    "text_config": {
        "hidden_size": 96,
        "intermediate_size": 384,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 32,
        "projection_dim": 96,
        "pooling_type": "eos",
        "causal_attention": True,
        "use_padding_mask": True,
        "fixed_length_padding": False,
    },
}
DEMO_TRAINING = dict(
    per_device_train_batch_size=64,
    learning_rate=1e-3,
    weight_decay=0.05,
    warmup_steps=50,
    lr_scheduler_type="cosine",
    logging_steps=20,
    eval_strategy="steps",  # eval_loss + zero-shot top-1, R@1, segmentation mIoU on the validation split
    eval_steps=100,
    per_device_eval_batch_size=64,
    save_strategy="no",
    report_to="none",
    dataloader_num_workers=0,
    dataloader_pin_memory=False,
    # Views: colour tells the scenes' classes apart and the captions name it, so DINO's colour-changing ops are off;
    # the global views, which also feed the image-text loss, are only flipped (as CLIP's); the local views keep
    # brightness/contrast jitter and blur.
    global_view_augmentation="flip",
    hue=0.0,
    saturation=0.0,
    grayscale_prob=0.0,
    solarize_probs=[0.0, 0.0, 0.0],
    num_local_crops=4,
    local_crop_size=32,
    # Head: 128 prototypes for 64 images a batch, trainable after the first 10 % of the steps (DINO's
    # freeze_last_layer; `train` sets it from max_steps); Sinkhorn-Knopp centring (DINOv2's default) spreads the
    # teacher's mass over the prototypes across the batch.
    centering="sinkhorn",
    head_num_prototypes=128,
    head_hidden_dim=256,
    head_bottleneck_dim=64,
    teacher_momentum=0.996,
    use_cpu=True,
)
DATA_SIZES = {"train": 4000, "validation": 200, "test": 300}
TEMPLATES = ("a {}", "a picture of a {}")  # in the captions' own words
PALETTE = np.array(
    [[40, 40, 40], [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180]], dtype=np.uint8
)


def train(output_dir: str, data_dir: str, max_steps: int, distill_weight: float, seed: int, **overrides):
    """Train the demo model on `data_dir/train`; returns the trainer (model exported to `output_dir`)."""
    args = SilcTrainingArguments(
        output_dir=output_dir,
        max_steps=max_steps,
        distill_weight=distill_weight,
        seed=seed,
        **{**DEMO_TRAINING, "head_freeze_prototypes_steps": max_steps // 10, **overrides},
    )
    data_args = SilcDataArguments(
        train_data=os.path.join(data_dir, "train"),
        eval_data=os.path.join(data_dir, "validation"),  # eval_loss and the zero-shot evaluators during training
        zero_shot_class_names=list(CLASSES),
        zero_shot_templates=list(TEMPLATES),
        mask_ignore_index=0,  # background: not one of the classes
        mask_offset=1,
    )
    model_args = SilcModelArguments(model_config=DEMO_MODEL, train_tokenizer=True, tokenizer_vocab_size=1024)
    return run_training(model_args, data_args, args)


def run_evaluation(model, processor, data_dir: str) -> dict:
    """Zero-shot classification, retrieval, segmentation (foreground pixels) and a 10-shot probe on the test split."""
    test = load_image_text_dataset(os.path.join(data_dir, "test"))
    train = load_image_text_dataset(os.path.join(data_dir, "train"))
    return evaluate(
        model,
        processor,
        test,
        tasks=("classification", "retrieval", "segmentation", "linear_probe"),
        class_names=list(CLASSES),
        dataset_name="captioned-scenes",
        split="test",
        templates=TEMPLATES,
        ignore_index=0,
        mask_offset=1,
        probe_dataset=train,
    )
