"""Every knob of the training scripts, in one file: the model to train (`SilcModelArguments`), its data
(`SilcDataArguments`), the multi-crop views (`MultiCropArguments`), SILC's training (`SilcTrainingArguments`), and the
two downstream fine-tunings (`OpenVocabSegArguments`, `ClassificationFinetuneArguments`).

Values are checked when the object is built (`__post_init__`, whatever built it: a script, a `--config` file or
Python); the one check that needs the model, the local crop size against the patch size, is
`SilcTrainingArguments.check_model`. Defaults and their sources: `docs/method.md`.
"""

from dataclasses import dataclass, field, fields

from transformers import TrainingArguments

from ..modeling_silc_open_vocab_seg import TRAINABLE_BACKBONE
from .losses import CENTERINGS, PATCH_HEADS, PATCH_LOSS_TOKENS, TEACHER_TOWERS
from .losses import check_choice as _choice

MOMENTUM_SCHEDULES = ("constant", "cosine")
GLOBAL_VIEW_AUGMENTATIONS = ("dino", "flip")


@dataclass
class SilcModelArguments:
    """Which model to train and with which tokenizer."""

    model_config: str | None = field(
        default=None,
        metadata={"help": "a SilcConfig JSON file or 'silc-b16'; in a --config file also the SilcConfig dict itself"},
    )
    init_from: str | None = field(
        default=None, metadata={"help": "start from an HF CLIP, SigLIP or SILC folder / Hub id"}
    )
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer folder or Hub id (when not init_from)"})
    train_tokenizer: bool = field(default=False, metadata={"help": "train a BPE tokenizer on the training captions"})
    tokenizer_vocab_size: int = field(default=8192, metadata={"help": "vocabulary size of a trained tokenizer"})
    tokenizer_training_captions: int = field(default=200_000, metadata={"help": "captions read to train the tokenizer"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "'sdpa', 'eager' or 'flash_attention_2'"})


@dataclass
class SilcDataArguments:
    """Where the image-caption pairs come from, what counts as a bad sample, and the zero-shot evaluation data."""

    train_data: str | None = field(
        default=None,
        metadata={
            "help": "imagefolder directory, webdataset shards ('shards/{00000..00099}.tar' or a glob), a Hub dataset, "
            "or synthetic:SPLIT:N (the package's generated scenes)"
        },
    )
    eval_data: str | None = field(default=None, metadata={"help": "same forms as train_data"})
    image_column: str | None = field(
        default=None,
        metadata={"help": "train_data's image column (default: the first of image, jpg, jpeg, png, webp it has)"},
    )
    text_column: str | None = field(
        default=None,
        metadata={"help": "train_data's caption column (default: the first of text, caption, txt, json it has)"},
    )
    eval_image_column: str | None = field(default=None, metadata={"help": "eval_data's image column (same default)"})
    eval_text_column: str | None = field(default=None, metadata={"help": "eval_data's caption column (same default)"})
    streaming: bool = field(default=False, metadata={"help": "stream the data (requires max_steps)"})
    strict: bool = field(default=False, metadata={"help": "raise on the first bad sample instead of skipping it"})
    max_caption_chars: int = field(default=1000, metadata={"help": "longer captions are bad samples"})
    min_image_size: int | None = field(
        default=None, metadata={"help": "images with a smaller side are bad (default: local crop size)"}
    )
    max_image_pixels: int = field(default=89_478_485, metadata={"help": "larger images are bad (decompression bombs)"})
    zero_shot_class_names: list[str] | None = field(
        default=None,
        metadata={
            "help": "class names for the zero-shot evaluators on eval_data (default: the label column's ClassLabel "
            "names; without names only retrieval runs)"
        },
    )
    zero_shot_segmentation_class_names: list[str] | None = field(
        default=None,
        metadata={
            "help": "class names of the masks' values for the segmentation evaluator, when they name more than the "
            "labels (e.g. stuff besides things; default: zero_shot_class_names)"
        },
    )
    zero_shot_templates: list[str] | None = field(
        default=None,
        metadata={"help": "prompt templates with '{}' for the class name (default: 'a photo of a {}.', ...)"},
    )
    label_column: str = field(default="label", metadata={"help": "eval_data column with class indices"})
    mask_column: str = field(default="mask", metadata={"help": "eval_data column with segmentation masks"})
    mask_ignore_index: int | None = field(default=None, metadata={"help": "mask value not scored (e.g. 0: background)"})
    mask_offset: int = field(default=0, metadata={"help": "mask value v is class v - mask_offset"})


@dataclass
class MultiCropArguments:
    """Every number of the multi-crop augmentation (defaults: DINO's recipe and SILC's crop scales)."""

    global_crop_scale: list[float] = field(
        default_factory=lambda: [0.4, 1.0], metadata={"help": "area fraction range of global crops"}
    )
    num_local_crops: int = field(default=8, metadata={"help": "local crops per image (0 disables distillation views)"})
    local_crop_size: int = field(default=96, metadata={"help": "side of local crops; a multiple of the patch size"})
    local_crop_scale: list[float] = field(
        default_factory=lambda: [0.05, 0.4], metadata={"help": "area fraction range of local crops"}
    )
    crop_ratio: list[float] = field(
        default_factory=lambda: [3 / 4, 4 / 3], metadata={"help": "aspect-ratio range of crops"}
    )
    flip_prob: float = field(default=0.5, metadata={"help": "probability of a horizontal flip, per view"})
    color_jitter_prob: float = field(default=0.8, metadata={"help": "probability of colour jitter, per view (DINO)"})
    brightness: float = field(default=0.4, metadata={"help": "colour jitter: brightness factor in [1-b, 1+b]"})
    contrast: float = field(default=0.4, metadata={"help": "colour jitter: contrast factor in [1-c, 1+c]"})
    saturation: float = field(default=0.2, metadata={"help": "colour jitter: saturation factor in [1-s, 1+s]"})
    hue: float = field(default=0.1, metadata={"help": "colour jitter: hue shift in [-h, h] turns"})
    grayscale_prob: float = field(default=0.2, metadata={"help": "probability of grayscale, per view (DINO)"})
    blur_probs: list[float] = field(
        default_factory=lambda: [1.0, 0.1, 0.5], metadata={"help": "global-1, global-2, local"}
    )
    blur_sigma: list[float] = field(
        default_factory=lambda: [0.1, 2.0], metadata={"help": "Gaussian blur sigma range (pixels)"}
    )
    blur_kernel_size: int = field(default=9, metadata={"help": "odd Gaussian kernel size (DINOv2: 9)"})
    solarize_probs: list[float] = field(
        default_factory=lambda: [0.0, 0.2, 0.0], metadata={"help": "global-1, global-2, local"}
    )
    solarize_threshold: float = field(default=0.5, metadata={"help": "solarize pixels at or above this value"})
    global_view_augmentation: str = field(
        default="dino",
        metadata={
            "help": "'dino': the global views (which also feed the image-text loss) get DINO's colour jitter, "
            "grayscale, blur and solarize; 'flip': only flips (as CLIP), the local views keep DINO's photometric set"
        },
    )

    mask_probability: float = field(
        default=0.5,
        metadata={
            "help": "masked patch distillation: share of the global views that are masked (iBOT / DINOv2: 0.5); at 0.5 "
            "exactly one of each image's two global views"
        },
    )
    mask_ratio: list[float] = field(
        default_factory=lambda: [0.1, 0.5],
        metadata={"help": "masked patch distillation: range of the share of a masked view's patches (DINOv2)"},
    )
    mask_block_wise: bool = field(
        default=True,
        metadata={"help": "masked patch distillation: mask rectangles of patches (BEiT / iBOT) rather than patches"},
    )

    def __post_init__(self):
        if not 0 <= self.mask_probability <= 1:
            raise ValueError(f"mask_probability={self.mask_probability} must be in [0, 1] (iBOT / DINOv2: 0.5).")
        if len(self.mask_ratio) != 2 or not 0 <= self.mask_ratio[0] <= self.mask_ratio[1] <= 1:
            raise ValueError(f"mask_ratio={self.mask_ratio} must be [low, high] with 0 <= low <= high <= 1.")
        for name in ("global_crop_scale", "local_crop_scale", "crop_ratio", "blur_sigma"):
            values = getattr(self, name)
            if len(values) != 2 or not 0 < values[0] <= values[1]:
                raise ValueError(f"{name}={values} must be [low, high] with 0 < low <= high.")
        for name in ("blur_probs", "solarize_probs"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name}={getattr(self, name)} needs 3 probabilities: global-1, global-2, local.")
        if self.blur_kernel_size % 2 == 0:
            raise ValueError(f"blur_kernel_size={self.blur_kernel_size} must be odd, e.g. {self.blur_kernel_size + 1}.")
        _choice("global_view_augmentation", self.global_view_augmentation, GLOBAL_VIEW_AUGMENTATIONS)
        if self.num_local_crops < 0:
            raise ValueError(f"num_local_crops={self.num_local_crops} must be >= 0.")

    @classmethod
    def of(cls, args: "MultiCropArguments") -> "MultiCropArguments":
        """Just the crop numbers of `args` (e.g. of a `SilcTrainingArguments`): what a data worker needs to hold."""
        return cls(**{item.name: getattr(args, item.name) for item in fields(cls)})

    def check_patch_size(self, patch_size: int) -> None:
        """Raise `ValueError` when the local crops do not tile into the model's patches."""
        if self.local_crop_size % patch_size:
            lower = max(patch_size, self.local_crop_size // patch_size * patch_size)
            raise ValueError(
                f"local_crop_size={self.local_crop_size} is not a multiple of patch_size={patch_size}; "
                f"use {lower} or {lower + patch_size}."
            )


@dataclass
class SilcTrainingArguments(MultiCropArguments, TrainingArguments):
    """`TrainingArguments` plus SILC's knobs: the multi-crop views (`MultiCropArguments`), the distillation loss and
    its schedules, the EMA teacher and the DINO head (defaults and sources: `docs/method.md`)."""

    distill_weight: float = field(default=1.0, metadata={"help": "lambda: weight of the distillation loss"})
    contrastive_weight: float = field(
        default=1.0,
        metadata={"help": "weight of the image-text loss; 0 trains the self-distillation alone (a sanity check)"},
    )
    distill_start_step: int = field(
        default=0, metadata={"help": "optimizer step at which distillation starts (teacher copied from the student)"}
    )
    distill_start_ratio: float | None = field(
        default=None,
        metadata={
            "help": "distillation starts at this fraction of max_steps instead (SigLIP 2: 0.8, the last 20 %%); "
            "overrides distill_start_step"
        },
    )
    patch_distill_weight: float = field(
        default=0.0,
        metadata={
            "help": "weight of iBOT's masked patch distillation (0: off; SigLIP 2 / TIPS add it); the masks: "
            "mask_probability, mask_ratio, mask_block_wise"
        },
    )
    patch_loss_tokens: str = field(
        default="masked",
        metadata={"help": "patch loss on the 'masked' patches (iBOT) or on 'all' patches of a masked view (TIPSv2)"},
    )
    patch_head: str = field(
        default="shared", metadata={"help": "'shared': the DINO head scores the patches too (DINOv2); 'separate'"}
    )
    teacher_tower: str = field(
        default="ema",
        metadata={
            "help": "'ema': the teacher is an EMA copy of tower and head (DINO, SILC); 'student': only the head is "
            "averaged and the teacher reads the student's tower without gradient (TIPSv2)"
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "the train script resumes from the newest complete checkpoint in output_dir; this starts from "
            "step 0 instead and deletes output_dir's checkpoints"
        },
    )
    teacher_momentum: float = field(default=0.999, metadata={"help": "EMA momentum of the teacher (fixed in SILC)"})
    teacher_momentum_schedule: str = field(
        default="constant", metadata={"help": "'constant' or 'cosine' (to teacher_momentum_end)"}
    )
    teacher_momentum_end: float = field(default=1.0, metadata={"help": "final momentum of the cosine schedule"})
    student_temperature: float = field(default=0.1, metadata={"help": "softmax temperature of the student (DINO)"})
    teacher_temperature: float = field(
        default=0.04, metadata={"help": "DINO's default; 'anything above 0.07 is unstable' (DINO main_dino.py)"}
    )
    teacher_temperature_warmup_start: float = field(
        default=0.04, metadata={"help": "teacher temperature at the start of its warm-up (equal to the end: none)"}
    )
    teacher_temperature_warmup_ratio: float = field(
        default=0.1,
        metadata={"help": "fraction of the distillation steps over which the teacher temperature warms up"},
    )
    koleo_weight: float = field(
        default=0.0, metadata={"help": "weight of DINOv2's KoLeo spreading term on the global views' pooled features"}
    )
    center_momentum: float = field(default=0.9, metadata={"help": "EMA momentum of DINO's center"})
    centering: str = field(
        default="ema", metadata={"help": "'ema' (DINO center) or 'sinkhorn' (DINOv2 Sinkhorn-Knopp)"}
    )
    head_num_prototypes: int = field(default=65536, metadata={"help": "K: prototypes of the DINO head"})
    head_hidden_dim: int = field(default=2048, metadata={"help": "hidden width of the DINO head's MLP"})
    head_bottleneck_dim: int = field(
        default=256, metadata={"help": "bottleneck width (L2-normalised) of the DINO head"}
    )
    head_num_layers: int = field(default=3, metadata={"help": "layers of the DINO head's MLP"})
    head_learning_rate: float | None = field(
        default=None, metadata={"help": "learning rate of the distillation head (default: learning_rate)"}
    )
    head_freeze_prototypes_steps: int = field(
        default=1250,
        metadata={
            "help": "distillation steps during which the head's prototypes do not move (DINO's freeze_last_layer)"
        },
    )
    max_logit_scale: float = field(
        default=100.0, metadata={"help": "softmax models: clamp exp(logit_scale) after each step"}
    )
    max_consecutive_nonfinite_steps: int = field(
        default=20,
        metadata={
            "help": "optimizer steps in a row with a non-finite loss or gradient (each skipped: nothing moves) after "
            "which the run stops, naming the checkpoint to resume from; 20 is past fp16's grad scaler backing off "
            "from 2^16 to 1"
        },
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "must stay False: the batch is built by the collator"}
    )

    def __post_init__(self):
        if self.ddp_find_unused_parameters is None:
            # Only a head that does not take part yet (late or no distillation) or an idle text tower leaves
            # parameters unused.
            self.ddp_find_unused_parameters = (
                self.distill_start_step > 0
                or bool(self.distill_start_ratio)
                or self.distill_weight == 0
                or self.contrastive_weight == 0
            )
        TrainingArguments.__post_init__(self)
        MultiCropArguments.__post_init__(self)
        _choice("teacher_momentum_schedule", self.teacher_momentum_schedule, MOMENTUM_SCHEDULES)
        _choice("centering", self.centering, CENTERINGS)
        if not 0 <= self.teacher_momentum <= 1:
            raise ValueError(f"teacher_momentum={self.teacher_momentum} must be in [0, 1] (SILC: 0.999).")
        if self.distill_weight < 0:
            raise ValueError(f"distill_weight={self.distill_weight} must be >= 0 (0 trains CLIP/SigLIP only).")
        if self.contrastive_weight < 0:
            raise ValueError(f"contrastive_weight={self.contrastive_weight} must be >= 0 (0 trains distillation only).")
        late = self.distill_start_step > 0 or bool(self.distill_start_ratio)
        if self.contrastive_weight == 0 and (self.distill_weight == 0 and self.patch_distill_weight == 0 or late):
            raise ValueError(
                f"contrastive_weight=0 with distill_weight={self.distill_weight}, patch_distill_weight="
                f"{self.patch_distill_weight}, distill_start_step={self.distill_start_step} and distill_start_ratio="
                f"{self.distill_start_ratio} leaves steps with nothing to train; distill from step 0 with a weight > 0."
            )
        _choice("patch_loss_tokens", self.patch_loss_tokens, PATCH_LOSS_TOKENS)
        _choice("patch_head", self.patch_head, PATCH_HEADS)
        _choice("teacher_tower", self.teacher_tower, TEACHER_TOWERS)
        if self.distill_start_ratio is not None and not 0 <= self.distill_start_ratio < 1:
            raise ValueError(f"distill_start_ratio={self.distill_start_ratio} must be in [0, 1) (SigLIP 2: 0.8).")
        if self.patch_distill_weight < 0:
            raise ValueError(f"patch_distill_weight={self.patch_distill_weight} must be >= 0 (0 switches it off).")
        if self.patch_distill_weight > 0 and self.mask_probability == 0:
            raise ValueError(
                f"patch_distill_weight={self.patch_distill_weight} with mask_probability=0 masks no view; set "
                "mask_probability (iBOT / DINOv2: 0.5) or patch_distill_weight=0."
            )
        if self.remove_unused_columns:
            raise ValueError("remove_unused_columns=True would drop the multi-crop views; SILC needs False.")
        if self.max_consecutive_nonfinite_steps < 1:
            raise ValueError(
                f"max_consecutive_nonfinite_steps={self.max_consecutive_nonfinite_steps} must be >= 1 (1 stops at the "
                "first non-finite step, as DINO does)."
            )

    def check_model(self, config) -> None:
        """The checks that need the model (`SilcConfig`): the local crops tile into its patches."""
        self.check_patch_size(config.vision_config.patch_size)


@dataclass
class OpenVocabSegArguments:
    """What `training/train_open_vocab_seg.py` trains: the towers, the data and the class split, the decoder."""

    model: str | None = field(
        default=None,
        metadata={
            "help": "a SILC folder or Hub id (also a converted CLIP / SigLIP) whose towers build the cost volume"
        },
    )
    train_data: str | None = field(
        default=None, metadata={"help": "imagefolder directory, webdataset shards or Hub dataset with masks"}
    )
    eval_data: str | None = field(default=None, metadata={"help": "evaluation split (same layout)"})
    class_names: list[str] | None = field(default=None, metadata={"help": "class names in mask-id order"})
    mask_offset: int = field(
        default=0, metadata={"help": "mask value of the first class (1 for ADE20K's scene_parse_150)"}
    )
    mask_ids: list[int] | None = field(
        default=None,
        metadata={"help": "mask value of each class, for ids with gaps (COCO-Stuff); overrides --mask_offset"},
    )
    unseen_classes: list[str] = field(
        default_factory=list, metadata={"help": "classes hidden from training, evaluated apart"}
    )
    image_column: str = "image"
    mask_column: str = "mask"
    trainable_backbone: str = field(
        default="attention",
        metadata={"help": "tower weights that train: none, attention (query/value projections, as CAT-Seg) or all"},
    )
    backbone_learning_rate_scale: float = field(
        default=1.0,
        metadata={"help": "learning rate of the tower weights that train, relative to --learning_rate (CAT-Seg: 0.01)"},
    )
    min_scale: float = field(
        default=0.5, metadata={"help": "smallest side of a training crop, as a fraction of the image side"}
    )
    prompt_templates: list[str] | None = field(
        default=None, metadata={"help": "prompts per class (default: the SILC model's zero-shot templates)"}
    )
    decoder_hidden_size: int | None = field(default=None, metadata={"help": "cost embedding channels (default 128)"})
    guidance_size: int | None = field(default=None, metadata={"help": "image/text guidance channels (default 128)"})
    num_aggregation_layers: int | None = field(
        default=None, metadata={"help": "spatial+class aggregation pairs (default 2)"}
    )
    upsampling_sizes: list[int] | None = field(
        default=None, metadata={"help": "channels per x2 upsampling step (default 64 32)"}
    )

    def __post_init__(self):
        for name in ("model", "train_data", "class_names"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required (on the command line or in --config).")
        if self.mask_ids is not None and len(self.mask_ids) != len(self.class_names):
            raise ValueError(
                f"--mask_ids has {len(self.mask_ids)} values for {len(self.class_names)} --class_names; "
                "give one per class."
            )
        unknown = sorted(set(self.unseen_classes) - set(self.class_names))
        if unknown:
            raise ValueError(f"--unseen_classes {unknown} are not in --class_names {self.class_names}.")
        _choice("trainable_backbone", self.trainable_backbone, TRAINABLE_BACKBONE)

    def class_mask_ids(self) -> dict[str, int]:
        """Each class name's mask value."""
        ids = self.mask_ids or [index + self.mask_offset for index in range(len(self.class_names))]
        return dict(zip(self.class_names, ids))


@dataclass
class ClassificationFinetuneArguments:
    """What `training/finetune_classification.py` fine-tunes: a SILC image tower and an (image, label) dataset."""

    model: str | None = field(
        default=None, metadata={"help": "a SILC folder (or Hub id) whose image tower is fine-tuned"}
    )
    train_data: str | None = field(
        default=None, metadata={"help": "imagefolder directory, webdataset shards or Hub dataset with labels"}
    )
    eval_data: str | None = field(default=None, metadata={"help": "evaluation split (same layout)"})
    class_names: list[str] | None = field(
        default=None, metadata={"help": "names of the label ids, in order (default: the label column's ClassLabel)"}
    )
    image_column: str = "image"
    label_column: str = "label"
    linear_probe: bool = field(default=False, metadata={"help": "freeze the tower: train the linear classifier only"})
    zero_shot_templates: list[str] = field(
        default_factory=lambda: ["a {}", "a picture of a {}"], metadata={"help": "prompts of the zero-shot baseline"}
    )

    def __post_init__(self):
        for name in ("model", "train_data"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required (on the command line or in --config).")


__all__ = [
    "ClassificationFinetuneArguments",
    "MultiCropArguments",
    "OpenVocabSegArguments",
    "SilcDataArguments",
    "SilcModelArguments",
    "SilcTrainingArguments",
]
