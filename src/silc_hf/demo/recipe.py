"""The demo's model and recipe: what `python -m silc_hf.demo` trains, and what the studies in `benchmarks/` compare
against (every study run is this recipe with one thing changed). Why each choice: `docs/demo.md`."""

import os

from ..data import load_image_text_dataset
from ..data.scenes import LABELS, THINGS
from ..training.arguments import SilcDataArguments, SilcModelArguments, SilcTrainingArguments
from ..training.run import run_training
from ..zero_shot.evaluation import evaluate

# The small model and recipe of the demo (and of benchmarks/study_silc_vs_clip.py).
DEMO_MODEL = {
    "loss_type": "softmax",
    # exp(3.4) = 30: CLIP starts at 1/0.07 = 14.3 and learns it up to 100 over ~100k steps, which 600 steps cannot;
    # measured effect so far mixed (docs/demo.md)
    "logit_scale_init_value": 3.4,
    "vision_config": {
        "hidden_size": 96,
        "intermediate_size": 384,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "image_size": 64,
        "patch_size": 8,
        "pooling_type": "cls",
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
    # 3e-4 rather than 1e-3: better in each of three one-seed comparisons (docs/scenes.md)
    learning_rate=3e-4,
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
DATA_SIZES = {"train": 20000, "validation": 500, "test": 1000}
TEMPLATES = ("a {}", "a picture of a {}")  # in the captions' own words


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
        zero_shot_class_names=list(THINGS),  # classification: the main thing
        zero_shot_segmentation_class_names=list(LABELS),  # segmentation: every thing and stuff
        zero_shot_templates=list(TEMPLATES),
        mask_offset=1,
    )
    model_args = SilcModelArguments(model_config=DEMO_MODEL, train_tokenizer=True, tokenizer_vocab_size=1024)
    return run_training(model_args, data_args, args)


def run_evaluation(model, processor, data_dir: str) -> dict:
    """Zero-shot classification (over the things), retrieval, segmentation (every thing and stuff, every pixel) and a
    10-shot probe on the test split."""
    test = load_image_text_dataset(os.path.join(data_dir, "test"))
    train = load_image_text_dataset(os.path.join(data_dir, "train"))
    return evaluate(
        model,
        processor,
        test,
        tasks=("classification", "retrieval", "segmentation", "linear_probe"),
        class_names=list(THINGS),
        segmentation_class_names=list(LABELS),
        dataset_name="captioned-scenes",
        split="test",
        templates=TEMPLATES,
        mask_offset=1,
        probe_dataset=train,
    )
